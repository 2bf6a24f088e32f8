// Job specs in and out of the page: build the spec that the page submits and exports (one
// text for both), and read a spec (a file, or a job's stored spec) back into brushes and masks.

import {
  dataUriBytes, decodeBitmap, hasAlphaChannel, layerIsEmpty, layerMaskDataUri, maskFromPixels,
  pixelsOf,
} from "./images.js";
import { masksOfColors } from "./labelmap.js";
import { BRUSH_NUMBERS } from "./palette.js";

/** The contract's field order, so an exported spec reads like the examples. */
const KEY_ORDER = [
  "kind", "model", "width", "height", "seed", "steps", "guidance_scale", "background",
  "regions", "palette", "bootstrap_steps", "bootstrap_leak_sensitivity", "mask_mode", "method",
  "tile", "wrap", "output", "priority", "webhook", "metadata",
];

/** Fields the page edits; every other field of an imported spec is kept as it was. */
const EDITED = new Set([
  "model", "width", "height", "seed", "steps", "background", "regions", "palette", "output",
]);

const LOSSY = new Set(["webp", "jpeg"]);
const SIDE_MULTIPLE = 8;
const MIN_SIDE = 64;

/** What the user must change: a message naming the field. */
export class SpecProblem extends Error {}

function checkNumber(value, { min, max, integer }, what) {
  const ok = Number.isFinite(value) && value >= min && value <= max;
  if (!ok || (integer && !Number.isSafeInteger(value))) {
    const kind = integer ? "a whole number" : "a number";
    throw new SpecProblem(`${what} must be ${kind} from ${min} to ${max}`);
  }
  return value;
}

/** Why one side is not a canvas side the API takes, or null (the farm's pixel cap aside). */
export function sideProblem(value, what) {
  if (!Number.isSafeInteger(value) || value < MIN_SIDE || value % SIDE_MULTIPLE !== 0) {
    return `${what} must be a multiple of ${SIDE_MULTIPLE}, at least ${MIN_SIDE} (got ${value})`;
  }
  return null;
}

/**
 * The job spec of what the page shows, which brush each region came from, and the brushes
 * left out for having nothing painted. `settings` holds the form's values (model, seed, steps,
 * format, quality, bgPrompt, bgNegative); `kept` the fields carried over from an import.
 */
export function buildSpec({ settings, palette, editor, backgroundUri, kept }) {
  const seedRange = { min: 0, max: Number.MAX_SAFE_INTEGER, integer: true };
  const seed = checkNumber(settings.seed, seedRange, "seed");
  const steps = checkNumber(settings.steps, { min: 1, max: 150, integer: true }, "steps");
  const regions = [];
  const regionBrushes = []; // regions[i] came from brush regionBrushes[i] (1-based)
  const unpainted = [];
  palette.brushes.forEach((brush, i) => {
    const layer = editor.layer(brush.id);
    if (!layer || layerIsEmpty(layer)) {
      unpainted.push(i + 1); // an empty mask is a 422: such a brush is left out
      return;
    }
    const region = { prompt: brush.prompt, negative_prompt: brush.negative_prompt };
    region.mask = layerMaskDataUri(layer);
    for (const n of BRUSH_NUMBERS) {
      region[n.key] = checkNumber(brush[n.key], n, `brush ${i + 1}: ${n.label.toLowerCase()}`);
    }
    regions.push(region);
    regionBrushes.push(i + 1);
  });
  const background = { prompt: settings.bgPrompt || null, negative_prompt: settings.bgNegative };
  if (backgroundUri) background.image = backgroundUri;
  const output = { format: settings.format };
  if (LOSSY.has(settings.format)) {
    const qualityRange = { min: 1, max: 100, integer: true };
    output.quality = checkNumber(settings.quality, qualityRange, "output quality");
  }
  const fields = {
    kind: "regions",
    ...(settings.model ? { model: settings.model } : {}),
    width: editor.width,
    height: editor.height,
    seed,
    steps,
    background,
    regions,
    output,
    ...kept,
  };
  return { spec: ordered(fields), regionBrushes, unpainted };
}

function ordered(fields) {
  const keys = [
    ...KEY_ORDER.filter((k) => k in fields),
    ...Object.keys(fields).filter((k) => !KEY_ORDER.includes(k)),
  ];
  return Object.fromEntries(keys.map((k) => [k, fields[k]]));
}

/** The one text the page both submits and exports: pretty JSON with a final newline. */
export function specText(spec) {
  return `${JSON.stringify(spec, null, 2)}\n`;
}

/** A spec from JSON text; SpecProblem when it is not a JSON object. */
export function parseSpecText(text, where) {
  let spec;
  try {
    spec = JSON.parse(text);
  } catch (error) {
    throw new SpecProblem(`${where} is not valid JSON (${error.message})`);
  }
  if (spec === null || typeof spec !== "object" || Array.isArray(spec)) {
    throw new SpecProblem(`${where} is not a job spec: a job spec is a JSON object`);
  }
  return spec;
}

async function decodeRef(ref, what) {
  if (typeof ref !== "string") throw new SpecProblem(`${what} must be a data URI`);
  let decoded;
  try {
    decoded = dataUriBytes(ref, what);
  } catch (error) {
    throw new SpecProblem(error.message);
  }
  const bitmap = await decodeBitmap(decoded.bytes, decoded.mime, what).catch((error) => {
    throw new SpecProblem(error.message);
  });
  return { bitmap, bytes: decoded.bytes };
}

function checkSize(bitmap, width, height, what) {
  if (bitmap.width !== width || bitmap.height !== height) {
    throw new SpecProblem(
      `${what} is ${bitmap.width}x${bitmap.height} but the canvas is ${width}x${height}`,
    );
  }
}

function brushFields(entry, what) {
  const fields = {
    prompt: typeof entry.prompt === "string" ? entry.prompt : "",
    negative_prompt: typeof entry.negative_prompt === "string" ? entry.negative_prompt : "",
  };
  for (const n of BRUSH_NUMBERS) {
    fields[n.key] = entry[n.key] ?? n.value;
    checkNumber(fields[n.key], n, `${what}.${n.key}`);
  }
  return fields;
}

/**
 * Read a spec into what the page shows: the canvas, settings, background, one brush per
 * region (or palette color) with its 0/1 mask, and the fields the page keeps as they are.
 * Every image is decoded first, so a bad spec leaves the page unchanged (SpecProblem).
 */
export async function decodeSpec(spec) {
  const { width, height } = spec;
  for (const [value, name] of [[width, "width"], [height, "height"]]) {
    const problem = sideProblem(value, name);
    if (problem) throw new SpecProblem(`${problem}: the page needs the canvas size`);
  }
  let seedProblem = null;
  if (spec.seed != null && !(Number.isSafeInteger(spec.seed) && spec.seed >= 0)) {
    // JSON.parse already rounded it: the page cannot send this seed back unchanged.
    seedProblem = `seed ${spec.seed} is beyond what a web page holds exactly (0 to 2^53-1; ` +
      "`regionfarm submit` keeps any seed)";
  }
  const brushes = [];
  const regions = Array.isArray(spec.regions) ? spec.regions : [];
  for (const [i, region] of regions.entries()) {
    const what = `regions.${i}.mask`;
    const { bitmap, bytes } = await decodeRef(region?.mask, what);
    checkSize(bitmap, width, height, what);
    const mask = maskFromPixels(pixelsOf(bitmap), hasAlphaChannel(bytes));
    brushes.push({ fields: brushFields(region, `regions.${i}`), mask });
  }
  if (spec.palette) {
    const { bitmap } = await decodeRef(spec.palette.image, "palette.image");
    checkSize(bitmap, width, height, "palette.image");
    const colors = Object.keys(spec.palette.colors || {}).map((c) => c.toLowerCase());
    let masks;
    try {
      masks = masksOfColors(pixelsOf(bitmap), colors);
    } catch (error) {
      throw new SpecProblem(error.message);
    }
    for (const [color, entry] of Object.entries(spec.palette.colors)) {
      const fields = brushFields(entry, `palette.colors.${color}`);
      const key = color.toLowerCase();
      brushes.push({ fields: { ...fields, color: key }, mask: masks.get(key) });
    }
  }
  const background = spec.background || {};
  let backgroundImage = null;
  if (background.image) {
    const { bitmap } = await decodeRef(background.image, "background.image");
    backgroundImage = { bitmap, uri: background.image };
  }
  const kept = {};
  for (const [key, value] of Object.entries(spec)) {
    if (!EDITED.has(key) && !(key === "kind" && value === "regions")) kept[key] = value;
  }
  return {
    width,
    height,
    model: typeof spec.model === "string" ? spec.model : "",
    seed: seedProblem ? null : (spec.seed ?? null),
    seedProblem,
    steps: spec.steps ?? null,
    format: spec.output?.format ?? "png",
    quality: spec.output?.quality ?? null,
    bgPrompt: background.prompt ?? "",
    bgNegative: background.negative_prompt ?? "",
    backgroundImage,
    brushes,
    kept,
  };
}
