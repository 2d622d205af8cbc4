// The upload state machine: check the file's type by its first bytes,
// create the study (Idempotency-Key kept for retries, so a retry gets the
// same study back), PUT the bytes straight to S3 through the presigned
// URL(s) with progress, several parts at once for large files, then
// complete. Cancel aborts every request in flight; retry resumes: parts
// already uploaded are not sent again.
//
// The transport is injected (XMLHttpRequest in the browser, since fetch
// reports no upload progress; fakes in unit tests).
import { type ImageMediaType, sniffFile } from "./sniff";

export type Presigned = { method: string; url: string; headers: [string, string][] };
export type Instructions =
  | ({ kind: "single" } & Presigned)
  | { kind: "multipart"; upload_id: string; complete_url: string; parts: { part_number: number; offset: number; size: number; upload: Presigned }[] };

export interface UploadTransport {
  createStudy(contentType: ImageMediaType, contentLength: number, idempotencyKey: string): Promise<{ id: string; upload: Instructions }>;
  /** PUT `body`; resolves with the ETag S3 answered. */
  put(target: Presigned, body: Blob, onProgress: (loaded: number) => void, signal: AbortSignal): Promise<string>;
  complete(studyId: string, uploadId: string, parts: { part_number: number; etag: string }[], idempotencyKey: string): Promise<void>;
}

export type UploadState =
  | { phase: "idle" }
  | { phase: "checking"; fileName: string }
  | { phase: "rejected"; fileName: string; reason: string }
  | { phase: "creating"; fileName: string }
  | { phase: "uploading"; fileName: string; studyId: string; loaded: number; total: number; parts: number }
  | { phase: "completing"; fileName: string; studyId: string }
  | { phase: "done"; fileName: string; studyId: string }
  | { phase: "cancelled"; fileName: string; studyId?: string }
  | { phase: "failed"; fileName: string; studyId?: string; error: unknown };

/** Parts PUT at once for a multipart upload. */
export const PARTS_IN_FLIGHT = 3;

export class AbortError extends Error {
  constructor() {
    super("cancelled");
    this.name = "AbortError";
  }
}

export class Uploader {
  state: UploadState = { phase: "idle" };
  private file?: File;
  private mediaType?: ImageMediaType;
  private createKey = crypto.randomUUID();
  private completeKey = crypto.randomUUID();
  private created?: { id: string; upload: Instructions };
  private etags = new Map<number, string>();
  private controller?: AbortController;
  private listeners = new Set<(s: UploadState) => void>();

  constructor(private readonly transport: UploadTransport) {}

  subscribe(listener: (s: UploadState) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private set(state: UploadState) {
    this.state = state;
    for (const l of this.listeners) l(state);
  }

  /** Checks and uploads `file`; resolves with the final state. */
  async start(file: File): Promise<UploadState> {
    this.file = file;
    this.created = undefined;
    this.etags.clear();
    this.createKey = crypto.randomUUID();
    this.completeKey = crypto.randomUUID();
    this.set({ phase: "checking", fileName: file.name });
    const mediaType = await sniffFile(file);
    if (!mediaType) {
      this.set({ phase: "rejected", fileName: file.name, reason: "This file is not a PNG, JPEG or DICOM image. Nothing was uploaded." });
      return this.state;
    }
    if (file.size === 0) {
      this.set({ phase: "rejected", fileName: file.name, reason: "This file is empty. Nothing was uploaded." });
      return this.state;
    }
    this.mediaType = mediaType;
    return this.run();
  }

  /** Tries again from where it stopped (same study, missing parts only). */
  retry(): Promise<UploadState> {
    if (!this.file || !this.mediaType) return Promise.resolve(this.state);
    return this.run();
  }

  cancel(): void {
    this.controller?.abort();
  }

  private async run(): Promise<UploadState> {
    const file = this.file as File;
    const controller = new AbortController();
    this.controller = controller;
    const fileName = file.name;
    try {
      if (!this.created) {
        this.set({ phase: "creating", fileName });
        this.created = await this.transport.createStudy(this.mediaType as ImageMediaType, file.size, this.createKey);
      }
      const { id: studyId, upload } = this.created;
      if (controller.signal.aborted) throw new AbortError();
      const total = file.size;
      if (upload.kind === "single") {
        this.set({ phase: "uploading", fileName, studyId, loaded: 0, total, parts: 1 });
        try {
          await this.transport.put(upload, file, (loaded) => this.progress(studyId, loaded, total, 1), controller.signal);
        } catch (error) {
          // The URL creates the original once (If-None-Match: * is signed):
          // 412 to this retry of the same file means an earlier attempt
          // landed even though its answer was lost.
          if (!(error instanceof StorageError && error.status === 412)) throw error;
        }
      } else {
        await this.putParts(studyId, upload, file, controller.signal);
        this.set({ phase: "completing", fileName, studyId });
        const parts = upload.parts.map((p) => ({ part_number: p.part_number, etag: this.etags.get(p.part_number) as string }));
        await this.transport.complete(studyId, upload.upload_id, parts, this.completeKey);
      }
      this.set({ phase: "done", fileName, studyId });
    } catch (error) {
      const studyId = this.created?.id;
      if (controller.signal.aborted || (error as Error)?.name === "AbortError") this.set({ phase: "cancelled", fileName, studyId });
      else this.set({ phase: "failed", fileName, studyId, error });
    }
    return this.state;
  }

  private progress(studyId: string, loaded: number, total: number, parts: number) {
    if (this.state.phase === "uploading" || this.state.phase === "creating") {
      this.set({ phase: "uploading", fileName: this.file?.name ?? "", studyId, loaded: Math.min(loaded, total), total, parts });
    }
  }

  private async putParts(studyId: string, upload: Extract<Instructions, { kind: "multipart" }>, file: File, signal: AbortSignal) {
    const total = file.size;
    const loaded = new Map<number, number>();
    for (const p of upload.parts) if (this.etags.has(p.part_number)) loaded.set(p.part_number, p.size);
    const sum = () => [...loaded.values()].reduce((a, b) => a + b, 0);
    this.set({ phase: "uploading", fileName: file.name, studyId, loaded: sum(), total, parts: upload.parts.length });
    const queue = upload.parts.filter((p) => !this.etags.has(p.part_number));
    const worker = async () => {
      for (let part = queue.shift(); part; part = queue.shift()) {
        if (signal.aborted) throw new AbortError();
        const p = part;
        const etag = await this.transport.put(p.upload, file.slice(p.offset, p.offset + p.size), (n) => {
          loaded.set(p.part_number, n);
          this.progress(studyId, sum(), total, upload.parts.length);
        }, signal);
        this.etags.set(p.part_number, etag);
        loaded.set(p.part_number, p.size);
        this.progress(studyId, sum(), total, upload.parts.length);
      }
    };
    await Promise.all(Array.from({ length: Math.min(PARTS_IN_FLIGHT, queue.length) }, worker));
  }
}

/** The browser transport's PUT: XMLHttpRequest, for upload progress. Never sends the API's token. */
export function xhrPut(target: Presigned, body: Blob, onProgress: (loaded: number) => void, signal: AbortSignal): Promise<string> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(target.method, target.url);
    for (const [name, value] of target.headers) {
      // The browser sets Content-Length itself (it is signed, and the body is exactly that long).
      if (name.toLowerCase() !== "content-length") xhr.setRequestHeader(name, value);
    }
    xhr.upload.onprogress = (e) => onProgress(e.loaded);
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve(xhr.getResponseHeader("ETag") ?? "");
      else reject(new StorageError(xhr.status, xhr.responseText));
    };
    xhr.onerror = () => reject(new StorageError(0, "network error"));
    xhr.onabort = () => reject(new AbortError());
    signal.addEventListener("abort", () => xhr.abort(), { once: true });
    xhr.send(body);
  });
}

export class StorageError extends Error {
  constructor(
    readonly status: number,
    readonly body: string,
  ) {
    super(status === 0 ? "The image store could not be reached." : `The image store refused the upload (${status}).`);
  }
}
