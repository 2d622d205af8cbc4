// The image with zoom and pan, the heatmap overlay and the boxes, all in
// original-image pixels: one transformed layer holds the picture, the
// heatmap stretched over the whole image, and an SVG whose viewBox is the
// image, so a box stored in pixels is drawn exactly there at any zoom.
import { type KeyboardEvent, type PointerEvent, type ReactNode, useCallback, useEffect, useLayoutEffect, useRef, useState } from "react";
import type { DicomImage } from "./dicom";
import { type Handle, type PixelBox, type Point, type Size, type View, actualSize, boxBetween, fitToViewport, moveBox, pan, resizeBox, toImage, zoomAt } from "./transform";
import { type WindowLevel, buildLut, dragWindow, renderGrey } from "./windowLevel";

export type Picture = { kind: "url"; url: string } | { kind: "dicom"; image: DicomImage };

export interface ViewerBox {
  id: string;
  label: string;
  box: PixelBox;
  kind: "cam" | "radiologist";
  /** CAM score (not a probability). */
  score?: number;
}

export type Tool = "pan" | "window" | "draw";

interface Props {
  size: Size;
  picture: Picture;
  window?: WindowLevel;
  onWindow?: (w: WindowLevel) => void;
  heatmap?: { url: string; opacity: number };
  boxes: ViewerBox[];
  tool: Tool;
  selected?: string;
  onSelect?: (id: string | undefined) => void;
  /** A new box drawn with the draw tool (image pixels). */
  onDraw?: (box: PixelBox) => void;
  /** A radiologist box moved or resized. */
  onEdit?: (id: string, box: PixelBox) => void;
  onDelete?: (id: string) => void;
  onKey?: (e: KeyboardEvent) => boolean;
  label: string;
  children?: ReactNode;
}

type Drag =
  | { kind: "pan"; last: Point }
  | { kind: "window"; last: Point; start: WindowLevel }
  | { kind: "draw"; from: Point }
  | { kind: "move"; id: string; from: Point; start: PixelBox }
  | { kind: "resize"; id: string; handle: Handle; start: PixelBox };

const MIN_BOX = 3; // image pixels: smaller drags are clicks

export function ImageViewer(props: Props) {
  const { size, picture, window: wl, onWindow, heatmap, boxes, tool, selected, onSelect, onDraw, onEdit, onDelete, onKey } = props;
  const viewport = useRef<HTMLDivElement>(null);
  const canvas = useRef<HTMLCanvasElement>(null);
  const [view, setView] = useState<View>({ scale: 1, offsetX: 0, offsetY: 0 });
  const [drag, setDrag] = useState<Drag>();
  const [draft, setDraft] = useState<{ id?: string; box: PixelBox }>();

  const viewportSize = useCallback((): Size => {
    const r = viewport.current?.getBoundingClientRect();
    return { width: r?.width || 800, height: r?.height || 600 };
  }, []);
  const fitView = useCallback(() => setView(fitToViewport(size, viewportSize())), [size, viewportSize]);
  useLayoutEffect(fitView, [fitView]);

  // DICOM pixels through the window/level LUT, at full bit depth.
  useEffect(() => {
    if (picture.kind !== "dicom" || !canvas.current || !wl) return;
    const { image } = picture;
    const ctx = canvas.current.getContext("2d");
    if (!ctx) return;
    const frame = requestAnimationFrame(() => {
      const data = ctx.createImageData(image.width, image.height);
      renderGrey(image.stored, buildLut(image.encoding, wl), data.data);
      ctx.putImageData(data, 0, 0);
    });
    return () => cancelAnimationFrame(frame);
  }, [picture, wl]);

  const local = (e: { clientX: number; clientY: number }): Point => {
    const r = viewport.current?.getBoundingClientRect();
    return { x: e.clientX - (r?.left ?? 0), y: e.clientY - (r?.top ?? 0) };
  };
  const imagePoint = (e: { clientX: number; clientY: number }) => toImage(view, local(e));

  const onWheel = (e: React.WheelEvent) => {
    setView((v) => zoomAt(v, local(e), e.deltaY < 0 ? 1.15 : 1 / 1.15));
  };

  const onPointerDown = (e: PointerEvent) => {
    if (e.button !== 0) return;
    const target = e.target as Element;
    const id = target.getAttribute("data-box-id") ?? undefined;
    const handle = target.getAttribute("data-handle") as Handle | null;
    const editable = boxes.find((b) => b.id === id && b.kind === "radiologist");
    viewport.current?.setPointerCapture(e.pointerId);
    if (id) onSelect?.(id);
    if (tool === "draw" && editable && handle) setDrag({ kind: "resize", id: editable.id, handle, start: editable.box });
    else if (tool === "draw" && editable) setDrag({ kind: "move", id: editable.id, from: imagePoint(e), start: editable.box });
    else if (tool === "draw" && !id) {
      onSelect?.(undefined);
      setDrag({ kind: "draw", from: imagePoint(e) });
    } else if (tool === "window" && picture.kind === "dicom" && wl) setDrag({ kind: "window", last: local(e), start: wl });
    else if (!id || tool === "pan") setDrag({ kind: "pan", last: local(e) });
  };

  const onPointerMove = (e: PointerEvent) => {
    if (!drag) return;
    const p = local(e);
    switch (drag.kind) {
      case "pan":
        setView((v) => pan(v, p.x - drag.last.x, p.y - drag.last.y));
        setDrag({ ...drag, last: p });
        break;
      case "window":
        onWindow?.(dragWindow(wl ?? drag.start, p.x - drag.last.x, p.y - drag.last.y));
        setDrag({ ...drag, last: p });
        break;
      case "draw":
        setDraft({ box: boxBetween(drag.from, imagePoint(e), size) });
        break;
      case "move": {
        const q = imagePoint(e);
        setDraft({ id: drag.id, box: moveBox(drag.start, q.x - drag.from.x, q.y - drag.from.y, size) });
        break;
      }
      case "resize":
        setDraft({ id: drag.id, box: resizeBox(drag.start, drag.handle, imagePoint(e), size) });
        break;
    }
  };

  const onPointerUp = () => {
    if (drag && draft && draft.box.width >= MIN_BOX && draft.box.height >= MIN_BOX) {
      if (drag.kind === "draw") onDraw?.(draft.box);
      if ((drag.kind === "move" || drag.kind === "resize") && draft.id) onEdit?.(draft.id, draft.box);
    }
    setDrag(undefined);
    setDraft(undefined);
  };

  const keyDown = (e: KeyboardEvent) => {
    if (onKey?.(e)) return;
    const step = 40;
    const centre = { x: viewportSize().width / 2, y: viewportSize().height / 2 };
    const sel = boxes.find((b) => b.id === selected && b.kind === "radiologist");
    let handled = true;
    switch (e.key) {
      case "+":
      case "=":
        setView((v) => zoomAt(v, centre, 1.25));
        break;
      case "-":
        setView((v) => zoomAt(v, centre, 0.8));
        break;
      case "f":
        fitView();
        break;
      case "o":
        setView((v) => actualSize(v, viewportSize()));
        break;
      case "ArrowLeft":
      case "ArrowRight":
      case "ArrowUp":
      case "ArrowDown": {
        const dx = e.key === "ArrowLeft" ? -1 : e.key === "ArrowRight" ? 1 : 0;
        const dy = e.key === "ArrowUp" ? -1 : e.key === "ArrowDown" ? 1 : 0;
        // With a radiologist box selected and Shift held, arrows move the box.
        if (sel && e.shiftKey && tool === "draw") onEdit?.(sel.id, moveBox(sel.box, dx * 5, dy * 5, size));
        else setView((v) => pan(v, -dx * step, -dy * step));
        break;
      }
      case "n":
      case "N":
        // A new box without a pointer: the middle fifth of what is on screen, then Shift+arrows and [ ] adjust it.
        if (tool === "draw" && onDraw) {
          const vs = viewportSize();
          const a = toImage(view, { x: vs.width * 0.4, y: vs.height * 0.4 });
          const b = toImage(view, { x: vs.width * 0.6, y: vs.height * 0.6 });
          onDraw(boxBetween(a, b, size));
        } else handled = false;
        break;
      case "[":
      case "]":
        if (sel && tool === "draw") {
          const d = e.key === "]" ? 5 : -5;
          const grown = { x_min: sel.box.x_min - d, y_min: sel.box.y_min - d, width: sel.box.width + 2 * d, height: sel.box.height + 2 * d };
          if (grown.width >= MIN_BOX && grown.height >= MIN_BOX) onEdit?.(sel.id, boxBetween({ x: grown.x_min, y: grown.y_min }, { x: grown.x_min + grown.width, y: grown.y_min + grown.height }, size));
        } else handled = false;
        break;
      case "Delete":
      case "Backspace":
        if (sel) onDelete?.(sel.id);
        else handled = false;
        break;
      case "Escape":
        onSelect?.(undefined);
        break;
      default:
        handled = false;
    }
    if (handled) e.preventDefault();
  };

  const shown = boxes.map((b) => (draft?.id === b.id ? { ...b, box: draft.box } : b));
  const px = 1 / view.scale; // one screen pixel, in image pixels
  return (
    <div className="viewer-wrap">
      <div
        ref={viewport}
        className={`viewport tool-${tool}`}
        // biome-ignore lint/a11y/noNoninteractiveTabindex: the viewer takes keyboard zoom, pan and box editing
        tabIndex={0}
        role="application"
        aria-label={`${props.label}. Keys: plus and minus zoom, arrows pan, F fits, O shows one to one${tool === "draw" ? ", N adds a box, Shift+arrows move the selected box, [ and ] shrink and grow it, Delete removes it, number keys set its label" : ""}.`}
        onWheel={onWheel}
        onPointerDown={onPointerDown}
        onPointerMove={onPointerMove}
        onPointerUp={onPointerUp}
        onPointerCancel={onPointerUp}
        onKeyDown={keyDown}
        data-testid="viewport"
      >
        <div className="layer" style={{ width: size.width, height: size.height, transform: `translate(${view.offsetX}px, ${view.offsetY}px) scale(${view.scale})` }}>
          {picture.kind === "url" ? (
            <img src={picture.url} alt="" width={size.width} height={size.height} draggable={false} className="pixels" data-testid="image" />
          ) : (
            <canvas ref={canvas} width={picture.image.width} height={picture.image.height} style={{ width: size.width, height: size.height }} className="pixels" data-testid="dicom-canvas" />
          )}
          {heatmap && <img src={heatmap.url} alt="" className="heatmap" style={{ opacity: heatmap.opacity }} width={size.width} height={size.height} draggable={false} data-testid="heatmap" />}
          <svg className="boxes" viewBox={`0 0 ${size.width} ${size.height}`} width={size.width} height={size.height} aria-hidden="true">
            {shown.map((b) => (
              <g key={b.id} className={`box box-${b.kind}${b.id === selected ? " selected" : ""}`} data-testid={`box-${b.kind}`}>
                <rect data-box-id={b.id} x={b.box.x_min} y={b.box.y_min} width={b.box.width} height={b.box.height} vectorEffect="non-scaling-stroke" />
                <text x={b.box.x_min} y={Math.max(b.box.y_min - 4 * px, 12 * px)} fontSize={13 * px}>
                  {b.kind === "cam" ? `AI (CAM) ${b.label} · CAM score ${b.score?.toFixed(2)}` : `Radiologist: ${b.label}`}
                </text>
                {b.kind === "radiologist" && b.id === selected && tool === "draw" &&
                  (["nw", "ne", "sw", "se"] as Handle[]).map((h) => (
                    <rect
                      key={h}
                      data-box-id={b.id}
                      data-handle={h}
                      className="handle"
                      x={(h.endsWith("w") ? b.box.x_min : b.box.x_min + b.box.width) - 5 * px}
                      y={(h.startsWith("n") ? b.box.y_min : b.box.y_min + b.box.height) - 5 * px}
                      width={10 * px}
                      height={10 * px}
                    />
                  ))}
              </g>
            ))}
            {draft && !draft.id && <rect className="draft" x={draft.box.x_min} y={draft.box.y_min} width={draft.box.width} height={draft.box.height} vectorEffect="non-scaling-stroke" />}
          </svg>
        </div>
      </div>
      <div className="viewer-controls" role="toolbar" aria-label="View">
        <button type="button" onClick={() => setView((v) => zoomAt(v, { x: viewportSize().width / 2, y: viewportSize().height / 2 }, 1.25))}>Zoom in</button>
        <button type="button" onClick={() => setView((v) => zoomAt(v, { x: viewportSize().width / 2, y: viewportSize().height / 2 }, 0.8))}>Zoom out</button>
        <button type="button" onClick={fitView}>Fit</button>
        <button type="button" onClick={() => setView((v) => actualSize(v, viewportSize()))}>1:1</button>
        <span className="zoom" aria-live="polite">{Math.round(view.scale * 100)}%</span>
        {props.children}
      </div>
    </div>
  );
}
