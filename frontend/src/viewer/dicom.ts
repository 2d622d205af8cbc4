// DICOM in the browser: dicom-parser (MIT) reads the dataset; pixels of
// uncompressed transfer syntaxes are kept at full bit depth for our own
// window/level. Compressed syntaxes the browser cannot decode are reported,
// and the viewer falls back to the server's preview PNG, labelled as such.
// This module is loaded only when a DICOM study is opened.
import * as dicomParser from "dicom-parser";
import { type PixelEncoding, type WindowLevel, fullRangeWindow } from "./windowLevel";

export interface DicomImage {
  width: number;
  height: number;
  stored: Uint8Array | Uint16Array | Int16Array;
  encoding: PixelEncoding;
  /** The file's own VOI window, else one covering every value. */
  window: WindowLevel;
  photometric: string;
  transferSyntax: string;
}

export type DicomResult = { ok: true; image: DicomImage } | { ok: false; reason: string };

const UNCOMPRESSED_LE = new Set(["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"]);

export function parseDicom(bytes: Uint8Array): DicomResult {
  let ds: dicomParser.DataSet;
  try {
    ds = dicomParser.parseDicom(bytes);
  } catch (e) {
    return { ok: false, reason: `not a readable DICOM file (${String((e as { exception?: string }).exception ?? e)})` };
  }
  const transferSyntax = ds.string("x00020010")?.trim() ?? "1.2.840.10008.1.2";
  if (!UNCOMPRESSED_LE.has(transferSyntax)) {
    return { ok: false, reason: `transfer syntax ${transferSyntax} is compressed or big-endian; the browser cannot decode it` };
  }
  const width = ds.uint16("x00280011") ?? 0;
  const height = ds.uint16("x00280010") ?? 0;
  const bitsAllocated = ds.uint16("x00280100") ?? 16;
  const bitsStored = ds.uint16("x00280101") ?? bitsAllocated;
  const signed = (ds.uint16("x00280103") ?? 0) === 1;
  const samples = ds.uint16("x00280002") ?? 1;
  const photometric = ds.string("x00280004")?.trim() ?? "MONOCHROME2";
  const pixel = ds.elements.x7fe00010;
  if (!pixel || !width || !height) return { ok: false, reason: "no pixel data" };
  if (samples !== 1 || !photometric.startsWith("MONOCHROME")) return { ok: false, reason: `${photometric} with ${samples} samples is not a greyscale radiograph` };
  const count = width * height;
  const buffer = bytes.buffer.slice(bytes.byteOffset + pixel.dataOffset, bytes.byteOffset + pixel.dataOffset + pixel.length);
  let raw: Uint8Array | Uint16Array | Int16Array;
  if (bitsAllocated === 8) raw = new Uint8Array(buffer, 0, Math.min(count, buffer.byteLength));
  else if (bitsAllocated === 16) raw = signed ? new Int16Array(buffer, 0, Math.min(count, buffer.byteLength >> 1)) : new Uint16Array(buffer, 0, Math.min(count, buffer.byteLength >> 1));
  else return { ok: false, reason: `${bitsAllocated}-bit pixels are not supported` };
  if (raw.length < count) return { ok: false, reason: "pixel data is shorter than the image" };
  const stored = maskToBitsStored(raw, bitsStored, signed);
  const slope = ds.floatString("x00281053") ?? 1;
  const intercept = ds.floatString("x00281052") ?? 0;
  const encoding: PixelEncoding = { bitsStored, signed, slope: slope || 1, intercept, monochrome1: photometric === "MONOCHROME1" };
  const center = ds.floatString("x00281050");
  const windowWidth = ds.floatString("x00281051");
  let window: WindowLevel;
  if (center !== undefined && windowWidth !== undefined && windowWidth > 0) window = { center, width: windowWidth };
  else {
    let min = Number.POSITIVE_INFINITY;
    let max = Number.NEGATIVE_INFINITY;
    for (let i = 0; i < stored.length; i++) {
      const v = stored[i];
      if (v < min) min = v;
      if (v > max) max = v;
    }
    window = fullRangeWindow(min * encoding.slope + intercept, max * encoding.slope + intercept);
  }
  return { ok: true, image: { width, height, stored, encoding, window, photometric, transferSyntax } };
}

/** Drops bits above Bits Stored (overlays or garbage), sign-extending signed values. */
function maskToBitsStored<T extends Uint8Array | Uint16Array | Int16Array>(raw: T, bitsStored: number, signed: boolean): T {
  const allocated = raw.BYTES_PER_ELEMENT * 8;
  if (bitsStored >= allocated) return raw;
  const out = raw.slice() as T;
  const mask = (1 << bitsStored) - 1;
  const signBit = 1 << (bitsStored - 1);
  for (let i = 0; i < out.length; i++) {
    let v = out[i] & mask;
    if (signed && v & signBit) v -= 1 << bitsStored;
    out[i] = v;
  }
  return out;
}
