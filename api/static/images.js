// Images in and out of the page: data URIs, decoding without color management, and masks
// read and written the way the API reads them (alpha when there is one, else luminance).

/** `data:image/png;base64,...` -> { mime, bytes }; throws Error naming what is wrong. */
export function dataUriBytes(uri, what) {
  const match = /^data:([^;,]*)((?:;[^;,]*)*),(.*)$/s.exec(uri);
  if (!match) {
    const hint = uri.startsWith("asset:")
      ? " (an uploaded asset: the page can load inline data URIs only)"
      : "";
    throw new Error(`${what} is not a data URI${hint}`);
  }
  if (!match[2].toLowerCase().includes(";base64")) {
    throw new Error(`${what} is not base64-encoded`);
  }
  let binary;
  try {
    binary = atob(match[3].replace(/\s+/g, ""));
  } catch {
    throw new Error(`${what} holds invalid base64`);
  }
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return { mime: match[1].toLowerCase(), bytes };
}

/** Decode image bytes (or a File) as they are stored: no color management, alpha kept apart. */
export async function decodeBitmap(blobOrBytes, mime, what) {
  const blob = blobOrBytes instanceof Blob ? blobOrBytes : new Blob([blobOrBytes], { type: mime });
  try {
    return await createImageBitmap(blob, {
      premultiplyAlpha: "none",
      colorSpaceConversion: "none",
    });
  } catch {
    throw new Error(`${what} is not an image this browser can decode (send PNG or WebP)`);
  }
}

/** The RGBA pixels of a bitmap, at its own size. */
export function pixelsOf(bitmap) {
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  return ctx.getImageData(0, 0, bitmap.width, bitmap.height);
}

/** Whether an image file carries alpha, as Pillow sees it (PNG color type or tRNS; WebP flags). */
export function hasAlphaChannel(bytes) {
  const ascii = (start, length) => String.fromCharCode(...bytes.subarray(start, start + length));
  if (bytes.length > 33 && bytes[0] === 0x89 && ascii(1, 3) === "PNG") {
    const colorType = bytes[25];
    if (colorType === 4 || colorType === 6) return true;
    let at = 8; // chunks: length, type, data, crc
    while (at + 8 <= bytes.length) {
      const length = new DataView(bytes.buffer, bytes.byteOffset + at, 4).getUint32(0);
      const type = ascii(at + 4, 4);
      if (type === "tRNS") return true;
      if (type === "IDAT" || type === "IEND") return false;
      at += 12 + length;
    }
    return false;
  }
  if (bytes.length > 30 && ascii(0, 4) === "RIFF" && ascii(8, 4) === "WEBP") {
    const chunk = ascii(12, 4);
    if (chunk === "VP8X") return (bytes[20] & 0x10) !== 0;
    if (chunk === "VP8L") {
      const bits = new DataView(bytes.buffer, bytes.byteOffset + 21, 4).getUint32(0, true);
      return ((bits >>> 28) & 1) === 1;
    }
  }
  return false;
}

/** A 0/1 mask from pixels: the alpha channel, or the luminance, above one half. */
export function maskFromPixels(image, useAlpha) {
  const { data } = image;
  const mask = new Uint8Array(image.width * image.height);
  for (let i = 0, p = 0; p < mask.length; i += 4, p += 1) {
    const value = useAlpha
      ? data[i + 3]
      : (data[i] * 299 + data[i + 1] * 587 + data[i + 2] * 114) / 1000;
    mask[p] = value > 127 ? 1 : 0;
  }
  return mask;
}

/**
 * A layer's mask as the API takes it: a PNG data URI, opaque white where the layer's alpha is
 * above one half and transparent elsewhere (so the mask is its alpha channel, without the
 * soft edges of the brush).
 */
export function layerMaskDataUri(layer) {
  const ctx = layer.getContext("2d", { willReadFrequently: true });
  const image = ctx.getImageData(0, 0, layer.width, layer.height);
  const { data } = image;
  for (let i = 0; i < data.length; i += 4) {
    const on = data[i + 3] > 127 ? 255 : 0;
    data[i] = data[i + 1] = data[i + 2] = data[i + 3] = on;
  }
  const out = document.createElement("canvas");
  out.width = layer.width;
  out.height = layer.height;
  out.getContext("2d").putImageData(image, 0, 0);
  return out.toDataURL("image/png");
}

/** Whether a layer has any pixel that the API would count as inside its mask. */
export function layerIsEmpty(layer) {
  const ctx = layer.getContext("2d", { willReadFrequently: true });
  const { data } = ctx.getImageData(0, 0, layer.width, layer.height);
  for (let i = 3; i < data.length; i += 4) if (data[i] > 127) return false;
  return true;
}

/** Paint a 0/1 mask onto a layer in `color` (opaque where 1, transparent elsewhere). */
export function paintMask(layer, mask, color) {
  const [r, g, b] = rgbOf(color);
  const ctx = layer.getContext("2d", { willReadFrequently: true });
  const image = ctx.createImageData(layer.width, layer.height);
  const { data } = image;
  for (let p = 0, i = 0; p < mask.length; p += 1, i += 4) {
    if (mask[p]) {
      data[i] = r;
      data[i + 1] = g;
      data[i + 2] = b;
      data[i + 3] = 255;
    }
  }
  ctx.putImageData(image, 0, 0);
}

/** A picture stretched to `width` x `height`, as a PNG data URI. */
export function stretchedDataUri(bitmap, width, height) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  canvas.getContext("2d").drawImage(bitmap, 0, 0, width, height);
  return canvas.toDataURL("image/png");
}

export function rgbOf(hex) {
  const value = parseInt(hex.slice(1), 16);
  return [(value >> 16) & 255, (value >> 8) & 255, value & 255];
}

export function hexOf(r, g, b) {
  return `#${((1 << 24) | (r << 16) | (g << 8) | b).toString(16).slice(1)}`;
}
