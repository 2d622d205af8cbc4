import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { type KeyboardEvent, useEffect, useMemo, useState } from "react";
import { Link, useParams } from "react-router-dom";
import { NOT_A_DIAGNOSIS, useApi } from "../App";
import { type Annotation, type AnnotationLabel, type LabelSet, type StudyView, unwrap } from "../api/client";
import { ApiProblem, explainProblem } from "../api/problem";
import { ProblemMessage } from "../ProblemMessage";
import type { DicomImage } from "../viewer/dicom";
import { ImageViewer, type Picture, type Tool, type ViewerBox } from "../viewer/ImageViewer";
import type { PixelBox } from "../viewer/transform";
import { PRESETS, type WindowLevel } from "../viewer/windowLevel";
import { FindingsPanel, scoreFindings } from "./FindingsPanel";

const FINISHED = new Set(["done", "failed"]);
const STATUS_WORDS: Record<string, string> = {
  created: "Created: waiting for the image",
  uploaded: "Uploaded: waiting for the model",
  processing: "Processing: the model is reading the image",
  done: "Done",
  failed: "Failed",
};
export const ANNOTATION_LABEL_SET = "vinbigdata";

/** The label a number key picks: 1-9 and 0 the first ten, Shift+1-4 the next four. */
export function labelForKey(e: { key: string; code?: string; shiftKey: boolean }, labels: string[]): string | undefined {
  const digit = e.code?.startsWith("Digit") ? Number(e.code.slice(5)) : Number.parseInt(e.key, 10);
  if (Number.isNaN(digit)) return undefined;
  const index = e.shiftKey ? 9 + digit : digit === 0 ? 9 : digit - 1;
  return labels[index];
}

function usePicture(study: StudyView | undefined) {
  // Presigned URLs change on every read: keep the first ones, so the
  // picture is not fetched again at each poll.
  const [urls, setUrls] = useState<{ image?: string; preview?: string; heatmap?: string }>({});
  useEffect(() => {
    if (!study) return;
    setUrls((u) => ({
      image: u.image ?? study.image_url ?? undefined,
      preview: u.preview ?? study.preview_url ?? undefined,
      heatmap: u.heatmap ?? study.heatmap_url ?? undefined,
    }));
  }, [study]);
  const dicom = study?.media_type === "application/dicom";
  const [decoded, setDecoded] = useState<{ image?: DicomImage; fallback?: string }>();
  useEffect(() => {
    if (!dicom || !urls.image || decoded) return;
    let live = true;
    (async () => {
      try {
        const [{ parseDicom }, bytes] = await Promise.all([import("../viewer/dicom"), fetch(urls.image as string).then((r) => {
          if (!r.ok) throw new Error(`the image store answered ${r.status}`);
          return r.arrayBuffer();
        })]);
        const result = parseDicom(new Uint8Array(bytes));
        if (live) setDecoded(result.ok ? { image: result.image } : { fallback: result.reason });
      } catch (e) {
        if (live) setDecoded({ fallback: `the file could not be read in the browser (${(e as Error).message})` });
      }
    })();
    return () => {
      live = false;
    };
  }, [dicom, urls.image, decoded]);
  let picture: Picture | undefined;
  let note: string | undefined;
  if (!dicom && urls.image) picture = { kind: "url", url: urls.image };
  else if (decoded?.image) picture = { kind: "dicom", image: decoded.image };
  else if (decoded?.fallback && urls.preview) {
    picture = { kind: "url", url: urls.preview };
    note = `Showing the server's 8-bit preview, not the original pixels: ${decoded.fallback}.`;
  }
  return { picture, note, heatmapUrl: urls.heatmap, dicomImage: decoded?.image, decodingDicom: dicom && !decoded };
}

export default function StudyPage() {
  const { id = "" } = useParams();
  const api = useApi();
  const queries = useQueryClient();
  const study = useQuery({
    queryKey: ["study", id],
    queryFn: () => unwrap(api.GET("/v1/studies/{id}", { params: { path: { id } } })),
    refetchInterval: (q) => (q.state.data && FINISHED.has(q.state.data.status) ? false : 1500),
  });
  const annotations = useQuery({
    queryKey: ["annotations", id],
    queryFn: () => unwrap(api.GET("/v1/studies/{id}/annotations", { params: { path: { id } } })),
  });
  const labelSets = useQuery({ queryKey: ["label-sets"], queryFn: () => unwrap(api.GET("/v1/label-sets")), staleTime: Number.POSITIVE_INFINITY });
  const labels = useMemo(() => labelSets.data?.find((s: LabelSet) => s.name === ANNOTATION_LABEL_SET)?.labels ?? [], [labelSets.data]);
  const { picture, note, heatmapUrl, dicomImage, decodingDicom } = usePicture(study.data);

  const [tool, setTool] = useState<Tool>("pan");
  const [selected, setSelected] = useState<string>();
  const [currentLabel, setCurrentLabel] = useState<string>();
  const [showHeatmap, setShowHeatmap] = useState(true);
  const [opacity, setOpacity] = useState(0.45);
  const [wl, setWl] = useState<WindowLevel>();
  const [actionError, setActionError] = useState<unknown>();
  useEffect(() => {
    if (dicomImage && !wl) setWl(dicomImage.window);
  }, [dicomImage, wl]);
  useEffect(() => {
    if (!currentLabel && labels.length) setCurrentLabel(labels[0]);
  }, [labels, currentLabel]);

  const refresh = () => queries.invalidateQueries({ queryKey: ["annotations", id] });
  const onError = (e: unknown) => setActionError(e);
  const create = useMutation({
    mutationFn: (body: { label: string; box?: PixelBox }) =>
      unwrap(api.POST("/v1/studies/{id}/annotations", { params: { path: { id } }, body: { label_set: ANNOTATION_LABEL_SET, label: body.label as AnnotationLabel, box: body.box ?? null } })),
    onSuccess: (a) => {
      setActionError(undefined);
      setSelected(`a${a.id}`);
      return refresh();
    },
    onError,
  });
  const update = useMutation({
    mutationFn: ({ annotationId, ...body }: { annotationId: number; label?: string; box?: PixelBox | null }) =>
      unwrap(
        api.PATCH("/v1/studies/{id}/annotations/{annotation_id}", {
          params: { path: { id, annotation_id: annotationId } },
          // Labels come from GET /v1/label-sets at run time.
          body: { ...body, label: body.label as AnnotationLabel | undefined },
        }),
      ),
    onSuccess: () => {
      setActionError(undefined);
      return refresh();
    },
    onError,
  });
  const remove = useMutation({
    mutationFn: (annotationId: number) => unwrap(api.DELETE("/v1/studies/{id}/annotations/{annotation_id}", { params: { path: { id, annotation_id: annotationId } } })),
    onSuccess: () => {
      setActionError(undefined);
      setSelected(undefined);
      return refresh();
    },
    onError,
  });

  if (study.isPending) return <main className="page">Loading the study…</main>;
  if (study.isError) {
    const e = study.error;
    return (
      <main className="page">
        <h1>Study</h1>
        <div role="alert">
          <ProblemMessage explanation={e instanceof ApiProblem ? explainProblem(e.problem) : { message: String(e) }} />
        </div>
        <Link to="/">Back to the worklist</Link>
      </main>
    );
  }
  const s = study.data;
  const findings = scoreFindings(s.findings, s.thresholds);
  const camBoxes = s.findings.filter((f) => f.source === "cam" && f.box);
  const heatmapLabel = camBoxes[0]?.label ?? findings[0]?.label;
  const annotationId = (boxId?: string) => (boxId?.startsWith("a") ? Number(boxId.slice(1)) : undefined);
  const viewerBoxes: ViewerBox[] = [
    ...camBoxes.map((f, i) => ({ id: `c${i}`, label: f.label, box: f.box as PixelBox, kind: "cam" as const, score: f.probability })),
    ...(annotations.data ?? []).filter((a) => a.box).map((a) => ({ id: `a${a.id}`, label: a.label, box: a.box as PixelBox, kind: "radiologist" as const })),
  ];
  const selectedAnnotation = annotations.data?.find((a) => a.id === annotationId(selected));
  const size = s.width && s.height ? { width: s.width, height: s.height } : undefined;

  const pickLabel = (label: string) => {
    setCurrentLabel(label);
    if (selectedAnnotation && selectedAnnotation.label !== label) update.mutate({ annotationId: selectedAnnotation.id, label });
  };
  const onKey = (e: KeyboardEvent) => {
    if (tool !== "draw") return false;
    const label = labelForKey(e, labels);
    if (!label) return false;
    e.preventDefault();
    pickLabel(label);
    return true;
  };
  const acceptCam = (box: PixelBox, camLabel: string) => {
    const label = labels.includes(camLabel) ? camLabel : currentLabel;
    if (label) create.mutate({ label, box });
  };

  return (
    <main className="page study">
      <header className="study-head">
        <h1>
          Study <span className="mono">{s.id.slice(0, 8)}</span>
        </h1>
        <p className={`status status-${s.status}`} aria-live="polite" data-testid="study-status">
          {STATUS_WORDS[s.status] ?? s.status}
          {s.status === "failed" && s.failure ? `: ${s.failure}` : ""}
        </p>
        <ModelLine study={s} />
        <p className="notice-inline" role="note">
          {NOT_A_DIAGNOSIS}
        </p>
        <button type="button" className="no-print" onClick={() => window.print()}>
          Print report
        </button>
      </header>
      {actionError !== undefined && (
        <div role="alert" className="error">
          <ProblemMessage explanation={actionError instanceof ApiProblem ? explainProblem(actionError.problem) : { message: String(actionError) }} />
        </div>
      )}
      <div className="study-grid">
        <section className="image-pane" aria-label="Image">
          {!size || !picture ? (
            <p className="placeholder">{decodingDicom ? "Reading the DICOM file…" : s.status === "failed" ? "No image to show." : "The image appears once it has been uploaded and read."}</p>
          ) : (
            <>
              {note && (
                <p className="fallback-note" role="note">
                  {note}
                </p>
              )}
              <ImageViewer
                size={size}
                picture={picture}
                window={wl}
                onWindow={setWl}
                heatmap={showHeatmap && heatmapUrl ? { url: heatmapUrl, opacity } : undefined}
                boxes={viewerBoxes}
                tool={tool}
                selected={selected}
                onSelect={setSelected}
                onDraw={(box) => currentLabel && create.mutate({ label: currentLabel, box })}
                onEdit={(boxId, box) => {
                  const a = annotationId(boxId);
                  if (a !== undefined) update.mutate({ annotationId: a, box });
                }}
                onDelete={(boxId) => {
                  const a = annotationId(boxId);
                  if (a !== undefined) remove.mutate(a);
                }}
                onKey={onKey}
                label={`Chest X-ray, ${size.width} by ${size.height} pixels, with ${camBoxes.length} AI boxes and ${viewerBoxes.length - camBoxes.length} radiologist boxes`}
              >
                <fieldset className="tools no-print">
                  <legend className="visually-hidden">Tool</legend>
                  {(["pan", ...(picture.kind === "dicom" ? ["window"] : []), "draw"] as Tool[]).map((t) => (
                    <label key={t}>
                      <input type="radio" name="tool" value={t} checked={tool === t} onChange={() => setTool(t)} />
                      {t === "pan" ? "Pan" : t === "window" ? "Window/level" : "Annotate"}
                    </label>
                  ))}
                </fieldset>
              </ImageViewer>
              {picture.kind === "dicom" && wl && (
                <fieldset className="window-controls no-print">
                  <legend className="visually-hidden">Window and level</legend>
                  <span data-testid="window-level">
                    Window {Math.round(wl.width)} / level {Math.round(wl.center)}
                  </span>
                  {Object.entries(PRESETS).map(([name, preset]) => (
                    <button key={name} type="button" onClick={() => setWl(preset)}>
                      {name[0].toUpperCase() + name.slice(1)}
                    </button>
                  ))}
                  <button type="button" onClick={() => dicomImage && setWl(dicomImage.window)}>
                    File's window
                  </button>
                </fieldset>
              )}
              {heatmapUrl && (
                <fieldset className="heatmap-controls">
                  <legend className="visually-hidden">Heatmap</legend>
                  <label className="no-print">
                    <input type="checkbox" checked={showHeatmap} onChange={(e) => setShowHeatmap(e.target.checked)} /> Heatmap
                  </label>
                  <label className="no-print">
                    Opacity <input type="range" min={0} max={1} step={0.05} value={opacity} onChange={(e) => setOpacity(Number(e.target.value))} />
                  </label>
                  <div className="legend">
                    <span className="legend-bar" aria-hidden="true" />
                    <span>
                      Heatmap (Grad-CAM) for <strong>{heatmapLabel}</strong>: where the model looked. Low to high, relative within this image only; not comparable between images.
                    </span>
                  </div>
                </fieldset>
              )}
            </>
          )}
        </section>
        <aside className="side">
          {s.status === "done" && <FindingsPanel findings={findings} />}
          <BoxTables
            cam={camBoxes.map((f, i) => ({ id: `c${i}`, label: f.label, box: f.box as PixelBox, score: f.probability }))}
            annotations={annotations.data ?? []}
            selected={selected}
            onSelect={setSelected}
            onAccept={acceptCam}
            onDelete={(a) => remove.mutate(a)}
            canAccept={Boolean(size)}
          />
          <section className="annotate no-print" aria-labelledby="annotate-title">
            <h2 id="annotate-title">Annotate</h2>
            <label>
              Label{" "}
              <select value={currentLabel ?? ""} onChange={(e) => pickLabel(e.target.value)} data-testid="label-picker">
                {labels.map((l, i) => (
                  <option key={l} value={l}>
                    {i < 9 ? `${i + 1}` : i === 9 ? "0" : `⇧${i - 9}`} · {l}
                  </option>
                ))}
              </select>
            </label>
            <p className="hint">Choose "Annotate", then drag on the image to draw a box with this label; drag a box to move it, its corners to resize it. From the keyboard (image focused): N adds a box, Shift+arrows move it, [ and ] resize it, Delete removes it. Number keys pick labels.</p>
            <button type="button" disabled={!currentLabel || s.status === "created"} onClick={() => currentLabel && create.mutate({ label: currentLabel })}>
              Add image-level label
            </button>
          </section>
        </aside>
      </div>
    </main>
  );
}

function ModelLine({ study }: { study: StudyView }) {
  if (!study.model) return <p className="model">Model: not run yet</p>;
  return (
    <p className="model" data-testid="model-line">
      Model {study.model.name} version {study.model.version}
      {study.model_trained === false && <strong className="untrained"> · untrained (generated weights: the numbers mean nothing clinically)</strong>}
      {study.model_trained === true && " · trained"}
      {study.model_trained == null && " · training status unknown"}
    </p>
  );
}

function BoxTables(props: {
  cam: { id: string; label: string; box: PixelBox; score: number }[];
  annotations: Annotation[];
  selected?: string;
  onSelect: (id: string) => void;
  onAccept: (box: PixelBox, label: string) => void;
  onDelete: (annotationId: number) => void;
  canAccept: boolean;
}) {
  const fmt = (b?: PixelBox | null) => (b ? `${Math.round(b.x_min)}, ${Math.round(b.y_min)} · ${Math.round(b.width)}×${Math.round(b.height)} px` : "whole image");
  return (
    <>
      <section aria-labelledby="cam-title">
        <h2 id="cam-title">AI boxes (CAM)</h2>
        {props.cam.length === 0 ? (
          <p>None.</p>
        ) : (
          <table>
            <thead>
              <tr>
                <th scope="col">Label</th>
                <th scope="col">CAM score</th>
                <th scope="col">Box (x, y · w×h)</th>
                <th scope="col" className="no-print">
                  <span className="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {props.cam.map((c) => (
                <tr key={c.id} className={props.selected === c.id ? "selected" : undefined}>
                  <th scope="row">{c.label}</th>
                  <td className="num">{c.score.toFixed(2)}</td>
                  <td>{fmt(c.box)}</td>
                  <td className="no-print">
                    <button type="button" disabled={!props.canAccept} onClick={() => props.onAccept(c.box, c.label)}>
                      Accept as radiologist box
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
        <p className="hint">A CAM score says how strongly the model's attention map marks the region; it is not a probability.</p>
      </section>
      <section aria-labelledby="annotations-title">
        <h2 id="annotations-title">Radiologist annotations</h2>
        {props.annotations.length === 0 ? (
          <p>None yet.</p>
        ) : (
          <table data-testid="annotations-table">
            <thead>
              <tr>
                <th scope="col">Label</th>
                <th scope="col">Box (x, y · w×h)</th>
                <th scope="col">Last change</th>
                <th scope="col" className="no-print">
                  <span className="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {props.annotations.map((a) => (
                <tr key={a.id} className={props.selected === `a${a.id}` ? "selected" : undefined} data-testid="annotation-row">
                  <th scope="row">{a.label}</th>
                  <td>{fmt(a.box)}</td>
                  <td>
                    {a.updated_by}, {new Date(a.updated_at).toLocaleString()}
                  </td>
                  <td className="no-print">
                    {a.box && (
                      <button type="button" onClick={() => props.onSelect(`a${a.id}`)}>
                        Select
                      </button>
                    )}
                    <button type="button" onClick={() => props.onDelete(a.id)} aria-label={`Delete ${a.label} annotation`}>
                      Delete
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
    </>
  );
}
