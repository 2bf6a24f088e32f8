// The semantic palette page: wires the form, the palette, the canvas and the queue together.

import { ApiError, getKey, listModels, setKey, submitJob } from "./api.js";
import { element } from "./dom.js";
import { Editor } from "./editor.js";
import { decodeBitmap, paintMask, pixelsOf, stretchedDataUri } from "./images.js";
import { colorMasks } from "./labelmap.js";
import { Palette } from "./palette.js";
import { Queue } from "./queue.js";
import {
  buildSpec, decodeSpec, parseSpecText, sideProblem, SpecProblem, specText,
} from "./spec.js";

const $ = (id) => document.getElementById(id);

/** What the page holds besides the form fields. */
const page = {
  background: null, // { bitmap, uri, stretched }: stretched ones follow the canvas size
  kept: {}, // fields of an imported spec that the page does not edit
  models: new Map(), // name -> the API's model entry
  regionBrushes: [], // of the last spec built: region index -> brush number
};

const editor = new Editor($("canvas"));
const palette = new Palette($("brushes"), {
  onChange: () => editor.setBrushes(palette.brushes),
  onSelect: (id) => {
    editor.active = id;
  },
  onClear: (id) => editor.clearLayer(id),
});
const queue = new Queue($("jobs"), $("no-jobs"), {
  onRerender: (job) => rerender(job),
  onDuplicate: (job) => duplicate(job),
  report: (message) => say(message),
  fail: (error) => fail(error),
});

// -- messages -------------------------------------------------------------------------------

function say(message) {
  $("status").textContent = message;
}

function fail(error) {
  if (error instanceof ApiError && error.status === 401 && error.key !== getKey()) return;
  const alert = $("alert");
  alert.textContent = error instanceof ApiError ? error.describe(fieldName) : error.message;
  alert.hidden = false;
}

function clearAlert() {
  $("alert").hidden = true;
  $("alert").textContent = "";
}

/** A field path of a 422, with the brush it came from: "brush 2 (regions.1.prompt)". */
function fieldName(loc) {
  const path = loc.join(".");
  if (loc[0] === "regions" && Number.isInteger(loc[1]) && page.regionBrushes[loc[1]]) {
    return `brush ${page.regionBrushes[loc[1]]} (${path})`;
  }
  return path;
}

/** Run an action; its errors go to the alert instead of the console. */
function guarded(action) {
  return async (...args) => {
    clearAlert();
    try {
      await action(...args);
    } catch (error) {
      if (!(error instanceof ApiError || error instanceof SpecProblem)) console.error(error);
      fail(error);
    }
  };
}

// -- key and models -------------------------------------------------------------------------

async function loadModels() {
  const { models } = await listModels();
  page.models = new Map(models.map((m) => [m.name, m]));
  const select = $("model");
  const current = select.value;
  select.replaceChildren(
    element("option", { value: "", textContent: "(the farm's default)" }),
    ...models.map((m) =>
      element("option", {
        value: m.name,
        textContent: m.live ? `${m.name} (${m.workers} worker${m.workers === 1 ? "" : "s"})`
          : `${m.name} (no worker: jobs wait)`,
      }),
    ),
  );
  const live = models.filter((m) => m.live);
  const pick = page.models.has(current) ? current
    : (live.find((m) => m.default) || live[0] || models.find((m) => m.default) || {}).name;
  select.value = pick || "";
  if (select.value !== current) modelChanged(); // a model the user kept keeps its steps
}

function modelChanged() {
  const model = page.models.get($("model").value);
  if (model) $("steps").value = String(model.steps);
  offerPrompts();
}

/** The chosen model's starting prompts (its models-file `prompts`: the background's, then the
 * brushes') for an empty background and empty brushes: a toy model knows only its world's
 * words, and a newcomer's first render should show what they asked for. */
function offerPrompts() {
  const prompts = page.models.get($("model").value)?.prompts || [];
  if (!prompts.length) return;
  if (!$("bg-prompt").value) $("bg-prompt").value = prompts[0];
  const brushPrompts = prompts.slice(1);
  if (!brushPrompts.length) return;
  let changed = false;
  palette.brushes.forEach((brush, i) => {
    if (brush.prompt) return;
    brush.prompt = brushPrompts[i % brushPrompts.length];
    changed = true;
  });
  if (changed) palette.render();
}

function useKey(key) {
  setKey(key);
  queue.reset();
  queue.start();
  return loadModels();
}

// -- canvas size and background -------------------------------------------------------------

function resize(width, height) {
  editor.resize(width, height);
  if (page.background?.stretched) {
    page.background.uri = stretchedDataUri(page.background.bitmap, width, height);
  }
  const preset = `${width}x${height}`;
  const known = [...$("size-preset").options].some((o) => o.value === preset);
  $("size-preset").value = known ? preset : "custom";
  $("custom-size").hidden = known;
  $("custom-width").value = String(width);
  $("custom-height").value = String(height);
  $("canvas-info").textContent = `${width} × ${height} pixels`;
}

function applyCustomSize() {
  const width = Number($("custom-width").value);
  const height = Number($("custom-height").value);
  const problem = sideProblem(width, "width") || sideProblem(height, "height");
  if (problem) throw new SpecProblem(`custom size: ${problem}`);
  resize(width, height);
  say(`Canvas is ${width} × ${height}; painted masks were stretched to it.`);
}

async function loadBackground(file) {
  const bitmap = await decodeBitmap(file, file.type, `background image ${file.name}`);
  const uri = stretchedDataUri(bitmap, editor.width, editor.height);
  page.background = { bitmap, uri, stretched: true };
  editor.setBackground(bitmap);
  const size = `${bitmap.width} × ${bitmap.height}`;
  say(`Background image ${file.name} (${size}) stretched to the canvas.`);
}

function clearBackground() {
  page.background = null;
  editor.setBackground(null);
  $("bg-image").value = "";
}

// -- seeds ----------------------------------------------------------------------------------

/** A random seed a web page holds exactly (below 2^53). */
function randomSeed() {
  const [high, low] = crypto.getRandomValues(new Uint32Array(2));
  return (high >>> 11) * 2 ** 32 + low;
}

// -- specs ----------------------------------------------------------------------------------

function settings() {
  return {
    model: $("model").value,
    seed: $("seed").value === "" ? NaN : Number($("seed").value),
    steps: $("steps").value === "" ? NaN : Number($("steps").value),
    format: $("output-format").value,
    quality: Number($("output-quality").value),
    bgPrompt: $("bg-prompt").value,
    bgNegative: $("bg-negative").value,
  };
}

/** The spec as text, exactly as both Submit and Export send it, and a note for the user. */
function currentSpec() {
  const built = buildSpec({
    settings: settings(),
    palette,
    editor,
    backgroundUri: page.background?.uri ?? null,
    kept: page.kept,
  });
  page.regionBrushes = built.regionBrushes;
  const { unpainted } = built;
  const note = unpainted.length === 1
    ? ` Brush ${unpainted[0]} has nothing painted and is left out.`
    : unpainted.length
      ? ` Brushes ${unpainted.join(", ")} have nothing painted and are left out.`
      : "";
  return { text: specText(built.spec), note };
}

async function submit() {
  const { text, note } = currentSpec();
  const button = $("submit");
  button.disabled = true;
  try {
    const job = await submitJob(text);
    queue.added(job);
    say(`Submitted job ${job.id} (${job.status}).${note}`);
  } finally {
    button.disabled = false;
  }
}

function exportSpec() {
  const { text, note } = currentSpec();
  const link = element("a", {
    href: URL.createObjectURL(new Blob([text], { type: "application/json" })),
    download: `regionfarm-spec-${settings().seed}.json`,
  });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
  say(`Exported the spec: submit it with \`regionfarm submit ${link.download}\`.${note}`);
}

/** Show a decoded spec in the editor: canvas, brushes and masks, settings, kept fields. */
function apply(doc, source) {
  resize(doc.width, doc.height);
  palette.clear();
  const added = doc.brushes.map((b) => palette.add(b.fields));
  editor.setBrushes(palette.brushes);
  doc.brushes.forEach((b, i) => paintMask(editor.layer(added[i].id), b.mask, added[i].color));
  editor.draw();
  if (added.length) palette.select(added[0].id);
  const select = $("model");
  if (doc.model && ![...select.options].some((o) => o.value === doc.model)) {
    const label = `${doc.model} (not served here)`;
    select.append(element("option", { value: doc.model, textContent: label }));
  }
  select.value = doc.model;
  const notes = [];
  if (doc.seed === null || doc.seedProblem) {
    $("seed").value = String(randomSeed());
    if (doc.seedProblem) notes.push(`${doc.seedProblem}: a new seed was drawn`);
  } else {
    $("seed").value = String(doc.seed);
  }
  if (doc.steps !== null) $("steps").value = String(doc.steps);
  $("output-format").value = doc.format;
  if (doc.quality !== null) $("output-quality").value = String(doc.quality);
  formatChanged();
  $("bg-prompt").value = doc.bgPrompt;
  $("bg-negative").value = doc.bgNegative;
  page.background = doc.backgroundImage && { ...doc.backgroundImage, stretched: false };
  editor.setBackground(doc.backgroundImage?.bitmap ?? null);
  page.kept = doc.kept;
  showKept();
  say([`Loaded ${source}: ${added.length} brush${added.length === 1 ? "" : "es"}.`, ...notes]
    .join(" "));
}

function showKept() {
  const names = Object.keys(page.kept);
  $("kept").hidden = names.length === 0;
  $("kept-text").textContent = `Kept from the imported spec as they were: ${names.join(", ")}.`;
}

async function importSpec(file) {
  const spec = parseSpecText(await file.text(), file.name);
  apply(await decodeSpec(spec), file.name);
}

async function duplicate(job) {
  clearAlert();
  try {
    apply(await decodeSpec(job.spec), `job ${job.id}`);
  } catch (error) {
    fail(error);
  }
}

async function rerender(job) {
  clearAlert();
  try {
    const spec = { ...job.spec, seed: randomSeed() };
    const again = await submitJob(specText(spec));
    queue.added(again);
    say(`Submitted job ${again.id}: job ${job.id} again with seed ${spec.seed}.`);
  } catch (error) {
    fail(error);
  }
}

/** A label map's colors become the brushes' masks; a brush of the same color keeps its prompt. */
async function loadLabelMap(file) {
  const bitmap = await decodeBitmap(file, file.type, `palette image ${file.name}`);
  const notes = [];
  if (bitmap.width !== editor.width || bitmap.height !== editor.height) {
    const problem =
      sideProblem(bitmap.width, "its width") || sideProblem(bitmap.height, "its height");
    if (problem) {
      throw new SpecProblem(`palette image ${file.name} is ${bitmap.width} × ${bitmap.height}: ` +
        `${problem}, so it cannot be a canvas`);
    }
    resize(bitmap.width, bitmap.height);
    notes.push(`The canvas is now ${bitmap.width} × ${bitmap.height}, the image's size.`);
  }
  let masks;
  try {
    masks = colorMasks(pixelsOf(bitmap));
  } catch (error) {
    throw new SpecProblem(`palette image ${file.name}: ${error.message}`);
  }
  if (!masks.size) throw new SpecProblem(`palette image ${file.name} has no color but black`);
  for (const [color] of masks) {
    if (!palette.brushes.some((b) => b.color === color)) palette.add({ color });
  }
  editor.setBrushes(palette.brushes);
  for (const brush of palette.brushes) {
    const mask = masks.get(brush.color);
    if (mask) paintMask(editor.layer(brush.id), mask, brush.color);
    else editor.clearLayer(brush.id);
  }
  editor.draw();
  const first = palette.brushes.find((b) => masks.has(b.color));
  palette.select(first.id); // paint on with the map's first color
  say([`Loaded ${masks.size} colors from ${file.name} as brush masks.`, ...notes].join(" "));
}

function formatChanged() {
  $("output-quality").disabled = $("output-format").value === "png";
}

// -- keyboard -------------------------------------------------------------------------------

function typing(target) {
  return target.closest("input, textarea, select, [contenteditable]") !== null;
}

function setTool(tool) {
  editor.tool = tool;
  $(`tool-${tool}`).checked = true;
  editor.draw();
}

function setSize(tool, size) {
  const input = $(`${tool}-size`);
  const value = Math.min(Number(input.max), Math.max(Number(input.min), Math.round(size)));
  input.value = String(value);
  editor.sizes[tool] = value;
  $(`${tool}-size-value`).textContent = `${value} px`;
  editor.draw();
}

function onShortcut(event) {
  if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
  const key = event.key.toLowerCase();
  if (key === "b") setTool("brush");
  else if (key === "e") setTool("eraser");
  else if (key === "[" || key === "]") {
    const size = editor.sizes[editor.tool];
    setSize(editor.tool, key === "]" ? size * 1.25 + 1 : size / 1.25);
  } else if (/^[1-9]$/.test(key) && palette.at(Number(key) - 1)) {
    palette.select(palette.at(Number(key) - 1).id);
    say(`Painting with brush ${key}.`);
  } else return;
  event.preventDefault();
}

// -- wiring ---------------------------------------------------------------------------------

function fileHandler(input, action) {
  input.addEventListener("change", guarded(async () => {
    const file = input.files[0];
    if (!file) return;
    try {
      await action(file);
    } finally {
      if (input !== $("bg-image")) input.value = ""; // the same file may be loaded again
    }
  }));
}

function wire() {
  $("key-form").addEventListener("submit", guarded(async (event) => {
    event.preventDefault();
    await useKey($("api-key").value.trim());
    say(getKey() ? "Using the API key for this tab."
      : "No API key: that works only with a farm that has no keys.");
  }));
  $("forget-key").addEventListener("click", () => {
    $("api-key").value = "";
    setKey("");
    queue.stop();
    queue.reset();
    say("The API key is forgotten.");
  });
  $("refresh-models").addEventListener("click", guarded(loadModels));
  $("model").addEventListener("change", modelChanged);
  $("size-preset").addEventListener("change", () => {
    const value = $("size-preset").value;
    $("custom-size").hidden = value !== "custom";
    if (value !== "custom") {
      const [width, height] = value.split("x").map(Number);
      resize(width, height);
    }
  });
  $("apply-size").addEventListener("click", guarded(applyCustomSize));
  $("new-seed").addEventListener("click", () => {
    $("seed").value = String(randomSeed());
  });
  $("output-format").addEventListener("change", formatChanged);
  fileHandler($("bg-image"), loadBackground);
  $("clear-bg-image").addEventListener("click", clearBackground);
  fileHandler($("import-spec"), importSpec);
  fileHandler($("label-map"), loadLabelMap);
  $("forget-kept").addEventListener("click", () => {
    page.kept = {};
    showKept();
  });
  $("export-spec").addEventListener("click", guarded(exportSpec));
  $("submit").addEventListener("click", guarded(submit));
  $("refresh-jobs").addEventListener("click", () => queue.start());
  for (const tool of ["brush", "eraser"]) {
    $(`tool-${tool}`).addEventListener("change", () => setTool(tool));
    const input = $(`${tool}-size`);
    input.addEventListener("input", () => setSize(tool, Number(input.value)));
  }
  $("add-brush").addEventListener("click", () => {
    const brush = palette.add();
    offerPrompts();
    palette.select(brush.id);
    document.getElementById(`brush-${brush.id}-prompt`).focus();
  });
  document.addEventListener("keydown", onShortcut);
}

function start() {
  wire();
  $("seed").value = String(randomSeed());
  $("api-key").value = getKey();
  resize(768, 768);
  palette.select(palette.add().id);
  queue.start();
  guarded(loadModels)();
  document.body.dataset.ready = "true"; // for scripts and tests: the page is wired
}

start();
