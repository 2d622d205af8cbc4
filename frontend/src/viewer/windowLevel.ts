// Window/level at full bit depth: stored values -> modality values
// (rescale slope/intercept) -> 8-bit display through a lookup table.
// MONOCHROME1 (bright = low) is inverted at the end, as DICOM PS3.3 C.7.6.3.1.2 says.

export interface WindowLevel {
  center: number;
  width: number;
}

export interface PixelEncoding {
  bitsStored: number;
  signed: boolean;
  slope: number;
  intercept: number;
  monochrome1: boolean;
}

/** Lung, mediastinum and bone presets (Hounsfield-like modality units, as in CT viewers; for CR/DX the file's own VOI is the usual start). */
export const PRESETS: Record<string, WindowLevel> = {
  lung: { center: -600, width: 1500 },
  mediastinum: { center: 50, width: 350 },
  bone: { center: 400, width: 1800 },
};

/** DICOM's linear VOI function (PS3.3 C.11.2.1.2.1), 0..255. */
export function windowValue(x: number, w: WindowLevel): number {
  const width = Math.max(1, w.width);
  const c = w.center - 0.5;
  const span = width - 1;
  if (x <= c - span / 2) return 0;
  if (x > c + span / 2) return 255;
  return Math.round(((x - c) / Math.max(span, 1e-6) + 0.5) * 255);
}

/**
 * A table from every stored value to a display byte. Index with
 * `stored - minStored` (see `lutOffset`).
 */
export function buildLut(enc: PixelEncoding, w: WindowLevel): { lut: Uint8Array; offset: number } {
  const bits = Math.min(16, Math.max(1, enc.bitsStored));
  const min = enc.signed ? -(2 ** (bits - 1)) : 0;
  const max = enc.signed ? 2 ** (bits - 1) - 1 : 2 ** bits - 1;
  const lut = new Uint8Array(max - min + 1);
  for (let stored = min; stored <= max; stored++) {
    const v = windowValue(stored * enc.slope + enc.intercept, w);
    lut[stored - min] = enc.monochrome1 ? 255 - v : v;
  }
  return { lut, offset: min === 0 ? 0 : -min };
}

/** The window covering all of the given modality values (when the file names none). */
export function fullRangeWindow(minValue: number, maxValue: number): WindowLevel {
  const width = Math.max(1, maxValue - minValue + 1);
  return { center: minValue + width / 2, width };
}

/** Dragging changes the window by screen pixels: right widens, down raises the level. */
export function dragWindow(w: WindowLevel, dx: number, dy: number, sensitivity = 4): WindowLevel {
  return { center: w.center + dy * sensitivity, width: Math.max(1, w.width + dx * sensitivity) };
}

/** Stored values -> RGBA pixels through the LUT (pixels are grey: never tinted). */
export function renderGrey(
  stored: ArrayLike<number>,
  lut: { lut: Uint8Array; offset: number },
  out: Uint8ClampedArray,
): void {
  const last = lut.lut.length - 1;
  for (let i = 0; i < stored.length; i++) {
    const idx = Math.min(last, Math.max(0, stored[i] + lut.offset));
    const g = lut.lut[idx];
    const o = i * 4;
    out[o] = g;
    out[o + 1] = g;
    out[o + 2] = g;
    out[o + 3] = 255;
  }
}
