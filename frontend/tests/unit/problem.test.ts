import { describe, expect, it } from "vitest";
import { explainProblem, problemOf, retryAfterSecs } from "../../src/api/problem";
import { retryingFetch } from "../../src/api/client";

describe("problem+json in words a clinician understands", () => {
  it("explains each status, keeping the server's detail aside", () => {
    const e = explainProblem({ status: 415, title: "Unsupported Media Type", detail: '"text/plain" is not image/png, image/jpeg or application/dicom' });
    expect(e.message).toBe("This file type is not accepted.");
    expect(e.action).toMatch(/PNG, JPEG or DICOM/);
    expect(e.detail).toMatch(/text\/plain/);
    expect(explainProblem({ status: 404 }).message).toMatch(/not found/);
    expect(explainProblem({ status: 401 }).action).toMatch(/Sign in/);
    expect(explainProblem({ status: 503, study_id: "abc" }).action).toMatch(/saved/);
    expect(explainProblem({ status: 502 }).message).toMatch(/could not be reached|restarting/);
    expect(explainProblem({ status: 0 }).message).toMatch(/could not be reached/);
  });

  it("reads problems from any failed answer", async () => {
    const p = await problemOf(new Response(JSON.stringify({ status: 422, detail: "bad box" }), { status: 422, headers: { "content-type": "application/problem+json" } }));
    expect(p).toMatchObject({ status: 422, detail: "bad box" });
    expect((await problemOf(new Response("<html>Bad gateway</html>", { status: 502, statusText: "Bad Gateway" }))).status).toBe(502);
  });

  it("reads Retry-After as seconds or a date", () => {
    expect(retryAfterSecs("5")).toBe(5);
    expect(retryAfterSecs(new Date(10_000).toUTCString(), 4_000)).toBe(6);
    expect(retryAfterSecs(null)).toBeUndefined();
    expect(retryAfterSecs("soon")).toBeUndefined();
  });

  it("retries 429 and 503 after Retry-After, with the same Idempotency-Key", async () => {
    const seen: { key: string | null; body: string }[] = [];
    const waits: number[] = [];
    const answers = [new Response("", { status: 429, headers: { "retry-after": "2" } }), new Response("", { status: 503 }), new Response("{}", { status: 201 })];
    const f = retryingFetch({
      fetch: async (input) => {
        const r = input as Request;
        seen.push({ key: r.headers.get("idempotency-key"), body: await r.text() });
        return answers.shift() as Response;
      },
      sleep: async (ms) => {
        waits.push(ms);
      },
    });
    const res = await f(new Request("http://api/v1/studies", { method: "POST", body: "{\"a\":1}", headers: { "Idempotency-Key": "k1" } }));
    expect(res.status).toBe(201);
    expect(waits).toEqual([2000, 1000]);
    expect(seen.map((s) => s.key)).toEqual(["k1", "k1", "k1"]);
    expect(seen.every((s) => s.body === '{"a":1}')).toBe(true);
  });
});
