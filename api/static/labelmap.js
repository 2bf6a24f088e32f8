// Palette images (label maps): every pixel of one flat color belongs to that color's region.

import { hexOf } from "./images.js";

/** The API's region limit; a label map with more colors is not a label map. */
export const MAX_COLORS = 64;

/** Black pixels are left to the background prompt (as in the examples' label map). */
const BACKGROUND = 0x000000;

function labelsOf(image) {
  // 0xrrggbb per pixel; -1 where transparent (alpha at most half), as schemas/palette.py reads.
  const { data } = image;
  const labels = new Int32Array(image.width * image.height);
  for (let p = 0, i = 0; p < labels.length; p += 1, i += 4) {
    labels[p] = data[i + 3] <= 127 ? -1 : (data[i] << 16) | (data[i + 1] << 8) | data[i + 2];
  }
  return labels;
}

function maskOf(labels, value) {
  const mask = new Uint8Array(labels.length);
  for (let p = 0; p < labels.length; p += 1) mask[p] = labels[p] === value ? 1 : 0;
  return mask;
}

/**
 * Every color of a label map but black and transparent, in order of first appearance, with
 * its 0/1 mask. Throws Error when the image holds more colors than a job has regions.
 */
export function colorMasks(image) {
  const labels = labelsOf(image);
  const seen = new Map(); // value -> first pixel
  for (let p = 0; p < labels.length; p += 1) {
    const value = labels[p];
    if (value < 0 || value === BACKGROUND || seen.has(value)) continue;
    seen.set(value, p);
    if (seen.size > MAX_COLORS) {
      throw new Error(
        `the palette image has more than ${MAX_COLORS} colors: a label map is painted in flat ` +
          "colors, one per region (save it as PNG without anti-aliasing or JPEG compression)",
      );
    }
  }
  const masks = new Map();
  for (const value of seen.keys()) {
    masks.set(hexOf((value >> 16) & 255, (value >> 8) & 255, value & 255), maskOf(labels, value));
  }
  return masks;
}

/** The masks of the given `#rrggbb` colors (a spec's `palette.colors`); Error for a missing one. */
export function masksOfColors(image, colors) {
  const labels = labelsOf(image);
  const masks = new Map();
  for (const color of colors) {
    const mask = maskOf(labels, parseInt(color.slice(1), 16));
    if (!mask.includes(1)) {
      throw new Error(`palette color ${color} never occurs in the palette image`);
    }
    masks.set(color, mask);
  }
  return masks;
}
