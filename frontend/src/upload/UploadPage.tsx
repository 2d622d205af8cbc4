import { useEffect, useMemo, useRef, useState } from "react";
import { Link, useNavigate } from "react-router-dom";
import { useApi } from "../App";
import { type ApiClient, unwrap } from "../api/client";
import { ApiProblem, explainProblem } from "../api/problem";
import { ProblemMessage } from "../ProblemMessage";
import { type Instructions, StorageError, type UploadState, type UploadTransport, Uploader, xhrPut } from "./uploader";

export function apiTransport(api: ApiClient): UploadTransport {
  return {
    async createStudy(contentType, contentLength, idempotencyKey) {
      const created = await unwrap(
        api.POST("/v1/studies", { body: { content_type: contentType, content_length: contentLength }, headers: { "Idempotency-Key": idempotencyKey } }),
      );
      return { id: created.id, upload: created.upload as unknown as Instructions };
    },
    put: xhrPut,
    async complete(studyId, uploadId, parts, idempotencyKey) {
      await unwrap(
        api.POST("/v1/studies/{id}/upload/complete", {
          params: { path: { id: studyId } },
          body: { upload_id: uploadId, parts },
          headers: { "Idempotency-Key": idempotencyKey },
        }),
      );
    },
  };
}

function describe(error: unknown) {
  if (error instanceof ApiProblem) return explainProblem(error.problem);
  if (error instanceof StorageError) {
    return error.status === 0
      ? { message: "The image store could not be reached.", action: "Check the connection, then retry: parts already sent are kept." }
      : { message: "The image store refused the upload.", action: "Retry; if it keeps failing, start a new upload.", detail: `${error.status} ${error.body.slice(0, 200)}` };
  }
  return { message: "The upload failed.", action: "Retry.", detail: String((error as Error)?.message ?? error) };
}

export function UploadPage() {
  const api = useApi();
  const navigate = useNavigate();
  const uploader = useMemo(() => new Uploader(apiTransport(api)), [api]);
  const [state, setState] = useState<UploadState>(uploader.state);
  const [dragging, setDragging] = useState(false);
  const input = useRef<HTMLInputElement>(null);
  useEffect(() => uploader.subscribe(setState), [uploader]);
  useEffect(() => {
    if (state.phase === "done") {
      const t = setTimeout(() => navigate(`/studies/${state.studyId}`), 600);
      return () => clearTimeout(t);
    }
  }, [state, navigate]);

  const busy = ["checking", "creating", "uploading", "completing"].includes(state.phase);
  const choose = (files: FileList | null) => {
    const file = files?.[0];
    if (file && !busy) void uploader.start(file);
  };

  return (
    <main className="page">
      <h1>Upload a chest X-ray</h1>
      <section
        className={`dropzone${dragging ? " dragging" : ""}`}
        aria-label="Drop zone"
        onDragOver={(e) => {
          e.preventDefault();
          setDragging(true);
        }}
        onDragLeave={() => setDragging(false)}
        onDrop={(e) => {
          e.preventDefault();
          setDragging(false);
          choose(e.dataTransfer.files);
        }}
      >
        <p>Drag a PNG, JPEG or DICOM file here, or</p>
        <label className="button primary">
          Choose a file
          <input ref={input} type="file" accept=".png,.jpg,.jpeg,.dcm,image/png,image/jpeg,application/dicom" disabled={busy} onChange={(e) => choose(e.target.files)} data-testid="file-input" className="visually-hidden" />
        </label>
        <p className="hint">Images up to 64 MB. Large files are sent in parts, several at once.</p>
      </section>

      <section aria-live="polite" className="upload-status">
        {state.phase === "checking" && <p>Checking {state.fileName}…</p>}
        {state.phase === "rejected" && (
          <p role="alert" className="error">
            {state.fileName}: {state.reason}
          </p>
        )}
        {state.phase === "creating" && <p>Preparing the upload of {state.fileName}…</p>}
        {state.phase === "uploading" && (
          <div>
            <label htmlFor="upload-progress">
              Uploading {state.fileName}
              {state.parts > 1 ? ` in ${state.parts} parts` : ""}: {Math.round((100 * state.loaded) / Math.max(1, state.total))}%
            </label>
            <progress id="upload-progress" max={state.total} value={state.loaded} />
            <button type="button" onClick={() => uploader.cancel()}>
              Cancel
            </button>
          </div>
        )}
        {state.phase === "completing" && <p>Finishing the upload of {state.fileName}…</p>}
        {state.phase === "done" && (
          <p>
            {state.fileName} uploaded. <Link to={`/studies/${state.studyId}`}>Open the study</Link> (opening…)
          </p>
        )}
        {state.phase === "cancelled" && (
          <p>
            Upload of {state.fileName} cancelled.{" "}
            <button type="button" onClick={() => void uploader.retry()}>
              Resume
            </button>
          </p>
        )}
        {state.phase === "failed" && (
          <div role="alert" className="error">
            <ProblemMessage explanation={describe(state.error)} />
            <button type="button" className="primary" onClick={() => void uploader.retry()}>
              Retry
            </button>
          </div>
        )}
      </section>
    </main>
  );
}
