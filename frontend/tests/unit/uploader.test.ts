import { describe, expect, it } from "vitest";
import { type Instructions, type Presigned, StorageError, type UploadState, type UploadTransport, Uploader } from "../../src/upload/uploader";
import { sniffMediaType } from "../../src/upload/sniff";

const PNG = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
const file = (bytes: number[], size = bytes.length, name = "x.png") => {
  const body = new Uint8Array(size);
  body.set(bytes);
  return new File([body], name);
};
const target = (n: number): Presigned => ({ method: "PUT", url: `https://s3/part${n}`, headers: [["content-type", "image/png"]] });

/** A transport that records calls; `failPut` fails the given PUT attempts (1-based). */
function fake(upload: Instructions, opts: { failPut?: Set<number>; failCreate?: number; hang?: boolean; storedAfter?: number } = {}) {
  const calls = { create: [] as string[], put: [] as string[], complete: [] as unknown[] };
  let puts = 0;
  let creates = 0;
  const transport: UploadTransport = {
    async createStudy(_t, _l, key) {
      creates++;
      calls.create.push(key);
      if (opts.failCreate && creates <= opts.failCreate) throw new Error("api down");
      return { id: "study-1", upload };
    },
    put(t, body, onProgress, signal) {
      puts++;
      const attempt = puts;
      calls.put.push(t.url);
      return new Promise((resolve, reject) => {
        signal.addEventListener("abort", () => reject(Object.assign(new Error("aborted"), { name: "AbortError" })));
        if (opts.hang) return;
        onProgress(body.size / 2);
        onProgress(body.size);
        if (opts.failPut?.has(attempt)) reject(new Error("network"));
        else if (opts.storedAfter !== undefined && attempt > opts.storedAfter) reject(new StorageError(412, "<Code>PreconditionFailed</Code>"));
        else resolve(`"etag-${t.url.slice(-1)}"`);
      });
    },
    async complete(studyId, uploadId, parts) {
      calls.complete.push({ studyId, uploadId, parts });
    },
  };
  return { transport, calls };
}

describe("sniffing by first bytes", () => {
  it("tells PNG, JPEG and DICOM apart and refuses the rest", () => {
    expect(sniffMediaType(new Uint8Array(PNG))).toBe("image/png");
    expect(sniffMediaType(new Uint8Array([0xff, 0xd8, 0xff, 0xe0]))).toBe("image/jpeg");
    const dicom = new Uint8Array(132);
    dicom.set([0x44, 0x49, 0x43, 0x4d], 128);
    expect(sniffMediaType(dicom)).toBe("application/dicom");
    expect(sniffMediaType(new TextEncoder().encode("hello, not an image"))).toBeNull();
  });
});

describe("the upload state machine", () => {
  it("refuses a file that is not an image without calling the API", async () => {
    const { transport, calls } = fake({ kind: "single", ...target(1) });
    const s = await new Uploader(transport).start(new File(["just text"], "notes.txt"));
    expect(s.phase).toBe("rejected");
    expect(calls.create).toHaveLength(0);
  });

  it("uploads one PUT with progress, then is done", async () => {
    const { transport, calls } = fake({ kind: "single", ...target(1) });
    const u = new Uploader(transport);
    const seen: UploadState[] = [];
    u.subscribe((s) => seen.push(s));
    const s = await u.start(file(PNG, 1000));
    expect(s).toMatchObject({ phase: "done", studyId: "study-1" });
    const progress = seen.filter((x) => x.phase === "uploading").map((x) => (x as { loaded: number }).loaded);
    expect(progress).toContain(500);
    expect(progress.at(-1)).toBe(1000);
    expect(calls.put).toEqual(["https://s3/part1"]);
  });

  it("takes S3's 412 to a retried single PUT as the image being stored already", async () => {
    // The first PUT reached S3 but its answer was lost; the retry is refused
    // because the original is written once.
    const { transport, calls } = fake({ kind: "single", ...target(1) }, { failPut: new Set([1]), storedAfter: 1 });
    const u = new Uploader(transport);
    expect((await u.start(file(PNG, 1000))).phase).toBe("failed");
    expect(await u.retry()).toMatchObject({ phase: "done", studyId: "study-1" });
    expect(calls.put).toHaveLength(2);
  });

  it("uploads parts several at once with one overall progress, then completes with every ETag", async () => {
    const parts = [1, 2, 3, 4].map((n) => ({ part_number: n, offset: (n - 1) * 250, size: 250, upload: target(n) }));
    const { transport, calls } = fake({ kind: "multipart", upload_id: "up-1", complete_url: "/x", parts });
    const u = new Uploader(transport);
    const totals: number[] = [];
    u.subscribe((s) => s.phase === "uploading" && totals.push(s.loaded));
    const s = await u.start(file(PNG, 1000));
    expect(s.phase).toBe("done");
    expect(Math.max(...totals)).toBe(1000);
    expect(totals.every((t) => t <= 1000)).toBe(true);
    expect(calls.complete).toEqual([
      { studyId: "study-1", uploadId: "up-1", parts: [1, 2, 3, 4].map((n) => ({ part_number: n, etag: `"etag-${n}"` })) },
    ]);
  });

  it("retries only the parts that failed, on the same study", async () => {
    const parts = [1, 2, 3].map((n) => ({ part_number: n, offset: (n - 1) * 100, size: 100, upload: target(n) }));
    const { transport, calls } = fake({ kind: "multipart", upload_id: "up-1", complete_url: "/x", parts }, { failPut: new Set([2]) });
    const u = new Uploader(transport);
    expect((await u.start(file(PNG, 300))).phase).toBe("failed");
    const before = calls.put.length;
    expect((await u.retry()).phase).toBe("done");
    expect(calls.put.slice(before)).toEqual(["https://s3/part2"]);
    expect(calls.create).toHaveLength(1);
  });

  it("retries a failed create with the same Idempotency-Key", async () => {
    const { transport, calls } = fake({ kind: "single", ...target(1) }, { failCreate: 1 });
    const u = new Uploader(transport);
    expect((await u.start(file(PNG, 10))).phase).toBe("failed");
    expect((await u.retry()).phase).toBe("done");
    expect(calls.create).toHaveLength(2);
    expect(calls.create[0]).toBe(calls.create[1]);
  });

  it("cancels a PUT in flight, and resumes", async () => {
    const { transport } = fake({ kind: "single", ...target(1) }, { hang: true });
    const u = new Uploader(transport);
    const running = u.start(file(PNG, 10));
    await new Promise((r) => setTimeout(r, 10));
    u.cancel();
    expect((await running).phase).toBe("cancelled");
  });
});
