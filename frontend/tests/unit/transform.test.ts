import { describe, expect, it } from "vitest";
import { actualSize, boxBetween, fitToViewport, moveBox, pan, resizeBox, toImage, toScreen, zoomAt } from "../../src/viewer/transform";

describe("image <-> screen", () => {
  const image = { width: 2000, height: 1000 };
  const viewport = { width: 1000, height: 1000 };

  it("fits the whole image, centred", () => {
    const v = fitToViewport(image, viewport);
    expect(v.scale).toBe(0.5);
    expect(toScreen(v, { x: 0, y: 0 })).toEqual({ x: 0, y: 250 });
    expect(toScreen(v, { x: 2000, y: 1000 })).toEqual({ x: 1000, y: 750 });
  });

  it("round-trips points", () => {
    const v = { scale: 1.7, offsetX: -33, offsetY: 12 };
    const p = { x: 123.5, y: 456.25 };
    const q = toImage(v, toScreen(v, p));
    expect(q.x).toBeCloseTo(p.x, 9);
    expect(q.y).toBeCloseTo(p.y, 9);
  });

  it("zooms about the pointer: the image point under it stays", () => {
    const v = fitToViewport(image, viewport);
    const at = { x: 300, y: 400 };
    const before = toImage(v, at);
    const after = toImage(zoomAt(v, at, 3), at);
    expect(after.x).toBeCloseTo(before.x, 9);
    expect(after.y).toBeCloseTo(before.y, 9);
  });

  it("shows 1:1 about the centre, and pans", () => {
    const v = actualSize(fitToViewport(image, viewport), viewport);
    expect(v.scale).toBeCloseTo(1, 12);
    expect(toImage(v, { x: 500, y: 500 })).toEqual({ x: 1000, y: 500 });
    expect(pan(v, 10, -5).offsetX).toBe(v.offsetX + 10);
  });

  it("builds, moves and resizes boxes inside the image", () => {
    expect(boxBetween({ x: 50, y: 80 }, { x: 10, y: 20 }, image)).toEqual({ x_min: 10, y_min: 20, width: 40, height: 60 });
    expect(boxBetween({ x: -10, y: -10 }, { x: 5000, y: 20 }, image)).toEqual({ x_min: 0, y_min: 0, width: 2000, height: 20 });
    const b = { x_min: 1900, y_min: 900, width: 100, height: 100 };
    expect(moveBox(b, 50, 50, image)).toEqual(b);
    expect(moveBox(b, -100, -100, image)).toEqual({ x_min: 1800, y_min: 800, width: 100, height: 100 });
    expect(resizeBox({ x_min: 10, y_min: 10, width: 10, height: 10 }, "se", { x: 40, y: 30 }, image)).toEqual({ x_min: 10, y_min: 10, width: 30, height: 20 });
    expect(resizeBox({ x_min: 10, y_min: 10, width: 10, height: 10 }, "nw", { x: 0, y: 5 }, image)).toEqual({ x_min: 0, y_min: 5, width: 20, height: 15 });
  });
});
