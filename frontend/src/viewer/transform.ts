// Image <-> screen coordinates for a zoomed, panned view. Image pixels are
// the original image's (what boxes are stored in); the screen is the
// viewport element's CSS pixels.

export interface View {
  /** Screen pixels per image pixel. */
  scale: number;
  /** Screen position of image pixel (0, 0). */
  offsetX: number;
  offsetY: number;
}

export interface Size {
  width: number;
  height: number;
}

export interface Point {
  x: number;
  y: number;
}

export const MIN_SCALE = 0.02;
export const MAX_SCALE = 32;

export const toScreen = (v: View, p: Point): Point => ({ x: p.x * v.scale + v.offsetX, y: p.y * v.scale + v.offsetY });
export const toImage = (v: View, p: Point): Point => ({ x: (p.x - v.offsetX) / v.scale, y: (p.y - v.offsetY) / v.scale });

const clampScale = (s: number) => Math.min(MAX_SCALE, Math.max(MIN_SCALE, s));

/** The whole image, centred, as large as the viewport allows. */
export function fitToViewport(image: Size, viewport: Size): View {
  const scale = clampScale(Math.min(viewport.width / image.width, viewport.height / image.height));
  return { scale, offsetX: (viewport.width - image.width * scale) / 2, offsetY: (viewport.height - image.height * scale) / 2 };
}

/** One image pixel per screen pixel, keeping the viewport's centre. */
export function actualSize(v: View, viewport: Size): View {
  return zoomAt(v, { x: viewport.width / 2, y: viewport.height / 2 }, 1 / v.scale);
}

/** Zoom by `factor` keeping the image point under `screen` in place. */
export function zoomAt(v: View, screen: Point, factor: number): View {
  const scale = clampScale(v.scale * factor);
  const anchor = toImage(v, screen);
  return { scale, offsetX: screen.x - anchor.x * scale, offsetY: screen.y - anchor.y * scale };
}

export const pan = (v: View, dx: number, dy: number): View => ({ ...v, offsetX: v.offsetX + dx, offsetY: v.offsetY + dy });

/** Clamp a point into the image. */
export const clampToImage = (p: Point, image: Size): Point => ({
  x: Math.min(image.width, Math.max(0, p.x)),
  y: Math.min(image.height, Math.max(0, p.y)),
});

export interface PixelBox {
  x_min: number;
  y_min: number;
  width: number;
  height: number;
}

/** The box spanned by two image points, inside the image. */
export function boxBetween(a: Point, b: Point, image: Size): PixelBox {
  const p = clampToImage(a, image);
  const q = clampToImage(b, image);
  return { x_min: Math.min(p.x, q.x), y_min: Math.min(p.y, q.y), width: Math.abs(p.x - q.x), height: Math.abs(p.y - q.y) };
}

/** A box moved by (dx, dy) image pixels, kept inside the image. */
export function moveBox(b: PixelBox, dx: number, dy: number, image: Size): PixelBox {
  return {
    ...b,
    x_min: Math.min(image.width - b.width, Math.max(0, b.x_min + dx)),
    y_min: Math.min(image.height - b.height, Math.max(0, b.y_min + dy)),
  };
}

export type Handle = "nw" | "ne" | "sw" | "se";

/** A box with one corner dragged to `to` (image pixels). */
export function resizeBox(b: PixelBox, handle: Handle, to: Point, image: Size): PixelBox {
  const fixed: Point = {
    x: handle === "nw" || handle === "sw" ? b.x_min + b.width : b.x_min,
    y: handle === "nw" || handle === "ne" ? b.y_min + b.height : b.y_min,
  };
  return boxBetween(fixed, to, image);
}
