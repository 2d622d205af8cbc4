import { describe, expect, it } from "vitest";
import { parseDicom } from "../../src/viewer/dicom";
import { buildLut } from "../../src/viewer/windowLevel";
// @ts-expect-error: a JavaScript fixture
import { makeDicom } from "../fixtures/dicom.mjs";

describe("DICOM parsing of generated files", () => {
  it("reads 16-bit unsigned pixels and the file's window", () => {
    const bytes = makeDicom({ width: 4, height: 3, pixel: (x: number, y: number) => x * 1000 + y, window: [2000, 4000] });
    const r = parseDicom(bytes);
    if (!r.ok) throw new Error(r.reason);
    expect(r.image.width).toBe(4);
    expect(r.image.height).toBe(3);
    expect(r.image.stored).toBeInstanceOf(Uint16Array);
    expect(r.image.stored[3]).toBe(3000);
    expect(r.image.stored[4 + 1]).toBe(1001);
    expect(r.image.window).toEqual({ center: 2000, width: 4000 });
    expect(r.image.encoding.monochrome1).toBe(false);
  });

  it("reads 12-bit stored in 16 and masks bits above Bits Stored", () => {
    const bytes = makeDicom({ width: 2, height: 1, bitsStored: 12, pixel: (x: number) => (x ? 0xf000 | 4095 : 17) });
    const r = parseDicom(bytes);
    if (!r.ok) throw new Error(r.reason);
    expect([...r.image.stored]).toEqual([17, 4095]);
    expect(r.image.encoding.bitsStored).toBe(12);
    expect(buildLut(r.image.encoding, r.image.window).lut.length).toBe(4096);
    // No window in the file: one covering every value.
    expect(r.image.window.center - r.image.window.width / 2).toBeCloseTo(17, 6);
  });

  it("reads 8-bit MONOCHROME1", () => {
    const r = parseDicom(makeDicom({ width: 3, height: 1, bitsAllocated: 8, photometric: "MONOCHROME1", pixel: (x: number) => x * 100 }));
    if (!r.ok) throw new Error(r.reason);
    expect(r.image.stored).toBeInstanceOf(Uint8Array);
    expect([...r.image.stored]).toEqual([0, 100, 200]);
    expect(r.image.encoding.monochrome1).toBe(true);
    const { lut } = buildLut(r.image.encoding, { center: 100, width: 200 });
    expect(lut[0]).toBe(255);
  });

  it("reads signed pixels with rescale slope and intercept", () => {
    const r = parseDicom(makeDicom({ width: 2, height: 1, signed: true, pixel: (x: number) => (x ? -1024 : 1000), slope: 0.5, intercept: -100 }));
    if (!r.ok) throw new Error(r.reason);
    expect(r.image.stored).toBeInstanceOf(Int16Array);
    expect([...r.image.stored]).toEqual([1000, -1024]);
    expect(r.image.encoding).toMatchObject({ signed: true, slope: 0.5, intercept: -100 });
    // Full-range window in modality units: -612 .. 400.
    expect(r.image.window.center - r.image.window.width / 2).toBeCloseTo(-612, 6);
  });

  it("reports compressed transfer syntaxes instead of showing garbage", () => {
    const r = parseDicom(makeDicom({ width: 2, height: 2, transferSyntax: "1.2.840.10008.1.2.4.90", pixel: () => 0 }));
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.reason).toMatch(/compressed/);
  });

  it("reports a file that is not DICOM", () => {
    expect(parseDicom(new Uint8Array([1, 2, 3])).ok).toBe(false);
  });
});
