import { describe, expect, it } from "vitest";
import { buildLut, dragWindow, fullRangeWindow, renderGrey, windowValue } from "../../src/viewer/windowLevel";

describe("window/level", () => {
  it("follows DICOM's linear VOI function", () => {
    const w = { center: 2048, width: 4096 };
    expect(windowValue(0, w)).toBe(0);
    expect(windowValue(4095, w)).toBe(255);
    expect(windowValue(2048, w)).toBeGreaterThanOrEqual(127);
    expect(windowValue(2048, w)).toBeLessThanOrEqual(128);
    expect(windowValue(-10, w)).toBe(0);
    expect(windowValue(99999, w)).toBe(255);
  });

  it("builds a LUT over every stored value of 12-bit unsigned pixels, with rescale", () => {
    const { lut, offset } = buildLut({ bitsStored: 12, signed: false, slope: 2, intercept: -1000, monochrome1: false }, { center: 0, width: 2000 });
    expect(lut.length).toBe(4096);
    expect(offset).toBe(0);
    expect(lut[0]).toBe(0); // -1000 -> bottom
    expect(lut[500]).toBeGreaterThan(120); // 0 -> middle
    expect(lut[500]).toBeLessThan(135);
    expect(lut[1000]).toBe(255); // 1000 -> top
  });

  it("indexes signed 16-bit values by offset", () => {
    const { lut, offset } = buildLut({ bitsStored: 16, signed: true, slope: 1, intercept: 0, monochrome1: false }, { center: 0, width: 100 });
    expect(offset).toBe(32768);
    expect(lut[-32768 + offset]).toBe(0);
    expect(lut[32767 + offset]).toBe(255);
  });

  it("inverts MONOCHROME1", () => {
    const mono2 = buildLut({ bitsStored: 8, signed: false, slope: 1, intercept: 0, monochrome1: false }, fullRangeWindow(0, 255));
    const mono1 = buildLut({ bitsStored: 8, signed: false, slope: 1, intercept: 0, monochrome1: true }, fullRangeWindow(0, 255));
    for (const v of [0, 10, 128, 255]) expect(mono1.lut[v]).toBe(255 - mono2.lut[v]);
  });

  it("renders grey RGBA, never tinted", () => {
    const lut = buildLut({ bitsStored: 8, signed: false, slope: 1, intercept: 0, monochrome1: false }, fullRangeWindow(0, 255));
    const out = new Uint8ClampedArray(8);
    renderGrey([0, 255], lut, out);
    expect([...out]).toEqual([0, 0, 0, 255, 255, 255, 255, 255]);
  });

  it("drags: right widens, down raises the level, width stays positive", () => {
    expect(dragWindow({ center: 100, width: 200 }, 10, 5)).toEqual({ center: 120, width: 240 });
    expect(dragWindow({ center: 100, width: 10 }, -100, 0).width).toBe(1);
  });
});
