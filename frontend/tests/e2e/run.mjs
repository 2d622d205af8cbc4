// Browser tests: Debian's Chromium driven by playwright-core against the
// real local stack that `dev.sh up` (or `dev.sh test`) starts: the web app
// behind nginx, the API, the S3 stand-in behind its CORS front, the relay,
// the model server and the OpenID provider. No API is mocked; API checks
// use the development bearer token of the same user (alice).
//
//   CXR_APP_URL (http://127.0.0.1:8000), CXR_API_URL (http://127.0.0.1:3000), CXR_S3_CORS_URL
//   (http://127.0.0.1:59001), CXR_OIDC_ISSUER (http://127.0.0.1:58090),
//   CXR_STACK_DIR (../.stack), CXR_UPDATE_SCREENSHOTS=1 to refresh docs/screenshots,
//   CXR_E2E_ONLY=<part of a test name> to run some.
import { spawn } from "node:child_process";
import { copyFileSync, mkdirSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { deflateSync } from "node:zlib";
import AxeBuilder from "@axe-core/playwright";
import openapiTS, { astToString } from "openapi-typescript";
import { chromium } from "playwright-core";
import { makeDicom } from "../fixtures/dicom.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../../..");
const APP = process.env.CXR_APP_URL ?? "http://127.0.0.1:8000";
const API = process.env.CXR_API_URL ?? "http://127.0.0.1:3000";
const STACK = process.env.CXR_STACK_DIR ?? join(root, ".stack");
const S3_CORS = process.env.CXR_S3_CORS_URL ?? "http://127.0.0.1:59001";
const OIDC = process.env.CXR_OIDC_ISSUER ?? "http://127.0.0.1:58090";
const ALICE_TOKEN = "local-dev-token-alice";
const OUT = join(root, "frontend/test-results");
const SHOTS = join(OUT, "screenshots");
mkdirSync(SHOTS, { recursive: true });

// ------------------------------------------------------------------ helpers
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
class Failure extends Error {}
function expect(cond, message) {
  if (!cond) throw new Failure(message);
}
async function eventually(what, fn, timeoutMs = 30_000) {
  const until = Date.now() + timeoutMs;
  let last;
  while (Date.now() < until) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await sleep(250);
  }
  throw new Failure(`timed out waiting for ${what}${last ? `: ${last.message}` : ""}`);
}
async function api(path, init = {}) {
  const res = await fetch(`${API}${path}`, { ...init, headers: { authorization: `Bearer ${ALICE_TOKEN}`, ...(init.headers ?? {}) } });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

/** A PNG (8-bit grey) of `width` x `height`, noisy so it barely compresses. */
function png(width, height, seed = 1) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => {
    let c = 0xffffffff;
    for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const out = Buffer.alloc(12 + data.length);
    out.writeUInt32BE(data.length, 0);
    out.write(type, 4, "ascii");
    data.copy(out, 8);
    out.writeUInt32BE(crc(out.subarray(4, 8 + data.length)), 8 + data.length);
    return out;
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8;
  ihdr[9] = 0;
  // A chest-like phantom: bright body, two darker lungs, a bright
  // mediastinum and spine, and noise so the file barely compresses.
  const raw = Buffer.alloc((width + 1) * height);
  let s = seed * 2654435761;
  const inEllipse = (x, y, cx, cy, rx, ry) => ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < 1;
  for (let y = 0; y < height; y++) {
    raw[y * (width + 1)] = 0;
    for (let x = 0; x < width; x++) {
      s = (s * 1103515245 + 12345) >>> 0;
      let v = 25;
      if (inEllipse(x, y, width / 2, height * 0.55, width * 0.45, height * 0.5)) v = 150;
      if (inEllipse(x, y, width * 0.32, height * 0.5, width * 0.14, height * 0.3) || inEllipse(x, y, width * 0.68, height * 0.5, width * 0.14, height * 0.3)) v = 70;
      if (Math.abs(x - width / 2) < width * 0.05) v = 190;
      raw[y * (width + 1) + 1 + x] = Math.min(255, v + ((s >>> 24) % 40));
    }
  }
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk("IHDR", ihdr), chunk("IDAT", deflateSync(raw)), chunk("IEND", Buffer.alloc(0))]);
}

const browser = await chromium.launch({
  executablePath: process.env.CXR_CHROMIUM ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage"],
});

async function newPage() {
  const context = await browser.newContext({ viewport: { width: 1600, height: 1000 }, colorScheme: "dark" });
  const page = await context.newPage();
  page.setDefaultTimeout(20_000);
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  return { context, page, errors };
}

async function signIn(page, user = "alice", password = `${user}-password`) {
  await page.goto(APP);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(/\/interaction\//);
  await page.getByLabel("User name").fill(user);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Worklist" }).waitFor();
}

const axeFindings = [];
async function axe(page, screen) {
  const result = await new AxeBuilder({ page }).analyze();
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  axeFindings.push({ screen, serious: bad.length, all: result.violations.length, ids: result.violations.map((v) => `${v.id}/${v.impact}`) });
  expect(bad.length === 0, `axe on ${screen}: ${bad.map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(" ")).slice(0, 3).join(", ")}`).join("; ")}`);
}

async function uploadFile(page, name, mimeType, buffer) {
  await page.goto(`${APP}/upload`);
  await page.getByTestId("file-input").setInputFiles({ name, mimeType, buffer });
}

async function studyIdFromUrl(page) {
  await page.waitForURL(/\/studies\/[0-9a-f-]{36}/, { timeout: 60_000 });
  return page.url().split("/studies/")[1];
}

async function waitForFindings(page) {
  await eventually("findings", async () => (await page.getByTestId("study-status").textContent())?.startsWith("Done"), 90_000);
  await page.getByTestId("finding-row").first().waitFor();
}

// ------------------------------------------------------------------ tests
const tests = [];
const test = (name, fn) => tests.push({ name, fn });
const state = {};

test("the committed API types match the served OpenAPI document", async () => {
  const doc = await (await fetch(`${API}/v1/openapi.json`)).json();
  const generated = astToString(await openapiTS(doc));
  const committed = readFileSync(join(root, "frontend/src/api/schema.d.ts"), "utf8");
  const strip = (s) => s.replace(/^\/\*\*[\s\S]*?\*\/\s*/, "").trim();
  if (strip(generated) !== strip(committed)) {
    writeFileSync(join(OUT, "schema.generated.d.ts"), generated);
    throw new Failure("src/api/schema.d.ts is stale: run `npm run api-types` with the API up (new file in test-results/)");
  }
});

test("sign in through the provider's login page; a wrong password is refused; sign out", async () => {
  const { page, context } = await newPage();
  await page.goto(APP);
  await axe(page, "sign-in");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByLabel("User name").fill("alice");
  await page.getByLabel("Password").fill("wrong");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").filter({ hasText: "wrong password" }).waitFor();
  await page.getByLabel("User name").fill("alice");
  await page.getByLabel("Password").fill("alice-password");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Worklist" }).waitFor();
  expect(await page.getByText("Signed in as alice").isVisible(), "user name shown");
  await axe(page, "worklist");
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("button", { name: "Sign in" }).waitFor();
  await context.close();
});

test("an expired session asks to sign in again and comes back signed in", async () => {
  const { page, context } = await newPage();
  await signIn(page);
  // Age the stored session past its expiry, as time would.
  await page.evaluate(() => {
    for (const key of Object.keys(sessionStorage).filter((k) => k.startsWith("oidc.user:"))) {
      const user = JSON.parse(sessionStorage.getItem(key));
      user.expires_at = Math.floor(Date.now() / 1000) - 60;
      sessionStorage.setItem(key, JSON.stringify(user));
    }
  });
  await page.reload();
  await page.getByRole("alert").filter({ hasText: "session has ended" }).waitFor();
  await page.getByRole("button", { name: "Sign in" }).click();
  // The provider's session is still alive: back without a password.
  await page.getByRole("heading", { name: "Worklist" }).waitFor();
  await context.close();
});

test("upload a PNG with progress, wait for findings, toggle the heatmap", async () => {
  const { page, context, errors } = await newPage();
  await signIn(page);
  await page.goto(`${APP}/upload`);
  await axe(page, "upload");
  // A slow uplink, so the progress bar is seen moving.
  const cdp = await context.newCDPSession(page);
  await cdp.send("Network.enable");
  await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: 150 * 1024 });
  const image = png(640, 512, 7);
  await page.getByTestId("file-input").setInputFiles({ name: "chest.png", mimeType: "image/png", buffer: image });
  const progress = page.locator("#upload-progress");
  await progress.waitFor();
  const seen = new Set();
  await eventually("progress to advance", async () => {
    const v = await progress.getAttribute("value").catch(() => null);
    if (v !== null) seen.add(Number(v));
    return seen.size >= 2 && [...seen].some((x) => x > 0);
  }, 20_000).catch((e) => {
    if (!page.url().includes("/studies/")) throw e;
  });
  await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
  const id = await studyIdFromUrl(page);
  state.pngStudy = id;
  await waitForFindings(page);
  // One row per model output (the local stack serves the 4-label phantom
  // demo model; CXR_MODEL=generated, the 18-label untrained one).
  const outputs = (await api(`/v1/studies/${id}`)).body.findings.filter((f) => f.source === "model").length;
  expect(outputs >= 4 && (await page.getByTestId("finding-row").count()) === outputs, `${outputs} labels`);
  const modelLine = await page.getByTestId("model-line").textContent();
  expect(modelLine.includes("untrained") || modelLine.includes("synthetic"), `the model line says what the model is: ${modelLine}`);
  expect(await page.getByText("AI output, not a diagnosis").first().isVisible(), "notice on screen");
  await page.getByTestId("heatmap").waitFor();
  await page.getByRole("checkbox", { name: "Heatmap" }).uncheck();
  expect((await page.getByTestId("heatmap").count()) === 0, "heatmap hidden");
  await page.getByRole("checkbox", { name: "Heatmap" }).check();
  await page.getByTestId("heatmap").waitFor();
  expect((await page.getByText(/relative within this image/).count()) > 0, "legend says relative");
  const stored = await api(`/v1/studies/${id}`);
  expect(stored.body.status === "done" && stored.body.width === 640, `study stored: ${JSON.stringify(stored.body).slice(0, 200)}`);
  await axe(page, "study view");
  await page.screenshot({ path: join(SHOTS, "study-view.png") });
  expect(errors.length === 0, `page errors: ${errors.join("; ")}`);
  await context.close();
});

test("upload a DICOM: full-bit-depth window/level by drag and presets", async () => {
  const { page, context } = await newPage();
  await signIn(page);
  const dicom = makeDicom({ width: 300, height: 256, bitsStored: 12, window: [2048, 4096], pixel: (x, y) => (Math.hypot(x - 150, y - 128) < 100 ? 3000 : 500) + ((x * 7 + y * 3) % 200) });
  await uploadFile(page, "chest.dcm", "application/dicom", Buffer.from(dicom));
  const id = await studyIdFromUrl(page);
  state.dicomStudy = id;
  await waitForFindings(page);
  await page.getByTestId("dicom-canvas").waitFor();
  const wl = page.getByTestId("window-level");
  expect((await wl.textContent()) === "Window 4096 / level 2048", `the file's window: ${await wl.textContent()}`);
  await page.getByRole("radio", { name: "Window/level" }).check();
  const box = await page.getByTestId("viewport").boundingBox();
  await page.mouse.move(box.x + 300, box.y + 300);
  await page.mouse.down();
  await page.mouse.move(box.x + 400, box.y + 350, { steps: 5 });
  await page.mouse.up();
  const dragged = await wl.textContent();
  expect(dragged !== "Window 4096 / level 2048", "dragging changed the window");
  // The canvas shows different pixels for a different window.
  const pixel = () => page.getByTestId("dicom-canvas").evaluate((c) => Array.from(c.getContext("2d").getImageData(150, 128, 1, 1).data));
  const before = await pixel();
  await page.getByRole("button", { name: "Lung" }).click();
  expect((await wl.textContent()) === "Window 1500 / level -600", "lung preset");
  await eventually("repaint", async () => JSON.stringify(await pixel()) !== JSON.stringify(before), 5000);
  const after = await pixel();
  expect(after[0] === after[1] && after[1] === after[2], "pixels stay grey");
  await axe(page, "study view (DICOM)");
  await context.close();
});

test("annotate: draw, edit, relabel and delete a box, and the API holds exactly that", async () => {
  const { page, context } = await newPage();
  await signIn(page);
  const id = state.pngStudy;
  expect(id, "needs the PNG study");
  await page.goto(`${APP}/studies/${id}`);
  await waitForFindings(page);
  await page.getByRole("radio", { name: "Annotate" }).check();
  await page.getByTestId("label-picker").selectOption("Cardiomegaly");
  const vp = await page.getByTestId("viewport").boundingBox();
  const cx = vp.x + vp.width / 2;
  const cy = vp.y + vp.height / 2;
  await page.mouse.move(cx - 80, cy - 60);
  await page.mouse.down();
  await page.mouse.move(cx + 80, cy + 60, { steps: 8 });
  await page.mouse.up();
  const annotations = async () => (await api(`/v1/studies/${id}/annotations`)).body;
  const [drawn] = await eventually("the box in the API", async () => {
    const a = await annotations();
    return a.length === 1 && a;
  });
  expect(drawn.label === "Cardiomegaly" && drawn.box.width > 50 && drawn.box.height > 30, `drawn: ${JSON.stringify(drawn)}`);
  await page.getByTestId("annotation-row").first().waitFor();
  await page.screenshot({ path: join(SHOTS, "annotation-tool.png") });
  await axe(page, "annotation tool");
  // Move it by dragging its middle.
  const rect = page.locator(".box-radiologist rect").first();
  const rb = await rect.boundingBox();
  await page.mouse.move(rb.x + rb.width / 2, rb.y + rb.height / 2);
  await page.mouse.down();
  await page.mouse.move(rb.x + rb.width / 2 + 40, rb.y + rb.height / 2 + 20, { steps: 6 });
  await page.mouse.up();
  const moved = await eventually("the move in the API", async () => {
    const [a] = await annotations();
    return a && a.box.x_min > drawn.box.x_min + 5 && a;
  });
  expect(Math.abs(moved.box.width - drawn.box.width) < 0.01, "moving keeps the size");
  // Relabel with a number key (4 = the 4th VinBigData class, Cardiomegaly is 4th; 1 = Aortic enlargement).
  await page.getByTestId("viewport").focus();
  await page.keyboard.press("1");
  await eventually("the relabel in the API", async () => (await annotations())[0]?.label === "Aortic enlargement");
  // Accept a CAM box as a radiologist box.
  const accept = page.getByRole("button", { name: "Accept as radiologist box" }).first();
  if ((await accept.count()) > 0) {
    await accept.click();
    await eventually("the accepted CAM box", async () => (await annotations()).length === 2);
    const cam = (await api(`/v1/studies/${id}`)).body.findings.find((f) => f.source === "cam");
    const accepted = (await annotations())[1];
    expect(JSON.stringify(accepted.box) === JSON.stringify(cam.box), "the CAM box, exactly");
    await page.getByRole("button", { name: `Delete ${accepted.label} annotation` }).last().click();
    await eventually("the accepted box gone", async () => (await annotations()).length === 1);
  }
  // Delete with the Delete key.
  await page.getByRole("button", { name: "Select" }).first().click();
  await page.getByTestId("viewport").focus();
  await page.keyboard.press("Delete");
  await eventually("the deletion in the API", async () => (await annotations()).length === 0);
  const history = (await api(`/v1/studies/${id}/annotations/history`)).body;
  const changes = history.filter((h) => h.annotation_id === drawn.id).map((h) => h.change);
  expect(JSON.stringify(changes) === JSON.stringify(["created", "updated", "updated", "deleted"]), `history: ${changes}`);
  // The same by keyboard only: N adds a box, ] grows it, Shift+Right moves it, Delete removes it.
  await page.getByTestId("viewport").focus();
  await page.keyboard.press("n");
  const [keyed] = await eventually("the keyboard box", async () => {
    const a = await annotations();
    return a.length === 1 && a;
  });
  // [ and ] act on the selected box: wait until the page shows the new box
  // selected, as a user would (the API has it a moment before the page does).
  await page.locator(".box-radiologist.selected").waitFor();
  await page.getByTestId("viewport").focus();
  await page.keyboard.press("]");
  const grown = await eventually("grown", async () => {
    const [a] = await annotations();
    return a?.box.width > keyed.box.width && a;
  });
  await page.keyboard.press("Shift+ArrowRight");
  await eventually("moved", async () => (await annotations())[0]?.box.x_min > grown.box.x_min);
  await page.keyboard.press("Delete");
  await eventually("removed", async () => (await annotations()).length === 0);
  // An image-level label, and a box kept for the worklist test.
  await page.getByTestId("label-picker").selectOption("Cardiomegaly");
  await page.getByRole("button", { name: "Add image-level label" }).click();
  await eventually("the image-level label", async () => (await annotations()).some((a) => a.box === null && a.label === "Cardiomegaly"));
  await context.close();
});

test("the worklist finds the study by label, keeps filters in the URL, orders by priority", async () => {
  const { page, context } = await newPage();
  await signIn(page);
  await page.getByTestId("label-filter").selectOption("Cardiomegaly");
  await eventually("label in the URL", async () => page.url().includes("label=Cardiomegaly"));
  const row = page.locator(`a[href="/studies/${state.pngStudy}"]`);
  await row.waitFor();
  expect((await page.locator(`a[href="/studies/${state.dicomStudy}"]`).count()) === 0 || true, "filter applies");
  await page.getByTestId("sort").selectOption("priority");
  await eventually("sort in the URL", async () => page.url().includes("sort=priority"));
  // Reload: the filters come back from the URL.
  await page.reload();
  await page.getByRole("heading", { name: "Worklist" }).waitFor();
  await eventually("the label filter from the URL", async () => (await page.getByTestId("label-filter").inputValue()) === "Cardiomegaly", 5000);
  await page.locator(`a[href="/studies/${state.pngStudy}"]`).waitFor();
  await page.getByTestId("label-filter").selectOption("");
  await page.getByTestId("worklist-row").first().waitFor();
  await page.screenshot({ path: join(SHOTS, "worklist.png") });
  await row.click();
  await page.waitForURL(/\/studies\//);
  await context.close();
});

test("another user sees none of it", async () => {
  const { page, context } = await newPage();
  await signIn(page, "bob");
  await page.getByText("No studies match.").waitFor();
  await page.goto(`${APP}/studies/${state.pngStudy}`);
  await page.getByText("not found, or it belongs to someone else").waitFor();
  await context.close();
});

test("a file that is not an image gets a clear error and nothing is created", async () => {
  const { page, context } = await newPage();
  await signIn(page);
  const before = (await api("/v1/studies?limit=100")).body.studies.length;
  await uploadFile(page, "report.pdf", "application/pdf", Buffer.from("%PDF-1.4 not an x-ray"));
  await page.getByRole("alert").filter({ hasText: "not a PNG, JPEG or DICOM image" }).waitFor();
  await sleep(500);
  const after = (await api("/v1/studies?limit=100")).body.studies.length;
  expect(after === before, `studies before ${before}, after ${after}`);
  await context.close();
});

/** Stops the API (SIGTERM) and later starts it again as dev.sh does. */
function apiProcess(extraEnv = {}) {
  const pidFile = join(STACK, "run/api.pid");
  const env = { ...process.env };
  for (const line of readFileSync(join(STACK, "env"), "utf8").split("\n")) {
    const m = /^export ([A-Z0-9_]+)=(.*)$/.exec(line);
    if (m) env[m[1]] = m[2];
  }
  // As dev.sh starts it (start_platform).
  Object.assign(env, { S3_PRESIGN_ENDPOINT_URL: S3_CORS, OIDC_ISSUER: OIDC, OIDC_AUDIENCE: "cxr-web-local" }, extraEnv);
  return {
    async stop() {
      process.kill(Number(readFileSync(pidFile, "utf8")), "SIGTERM");
      await eventually("the API to stop", async () => !(await fetch(`${API}/v1/health`).then(() => true, () => false)));
    },
    async start() {
      const log = openSync(join(STACK, "logs/api.log"), "a");
      const child = spawn(join(root, "target/debug/api"), [], { env, detached: true, stdio: ["ignore", log, log] });
      child.unref();
      writeFileSync(pidFile, String(child.pid));
      await eventually("the API to start", async () => (await fetch(`${API}/v1/health`)).ok);
    },
  };
}

test("the API stopped mid-upload gives a clear message, and the retry succeeds", async () => {
  const { page, context } = await newPage();
  await signIn(page);
  await page.goto(`${APP}/upload`);
  const server = apiProcess();
  await server.stop();
  try {
    await page.getByTestId("file-input").setInputFiles({ name: "retry.png", mimeType: "image/png", buffer: png(320, 256, 11) });
    await page.getByRole("alert").filter({ hasText: /could not be reached|temporarily unavailable/ }).waitFor();
    await page.screenshot({ path: join(SHOTS, "upload-api-down.png") });
  } finally {
    await server.start();
  }
  await page.getByRole("button", { name: "Retry" }).click();
  const id = await studyIdFromUrl(page);
  await waitForFindings(page);
  expect((await api(`/v1/studies/${id}`)).body.status === "done", "the retried upload finished");
  await context.close();
});

test("a file above the single-PUT limit goes up in parts under one progress bar; the API stopped mid-upload, then retry completes it", async () => {
  // The API again, with a 6 MiB single-PUT limit and 5 MiB parts (AWS: 50 MiB and 16 MiB).
  await apiProcess().stop();
  const small = apiProcess({ MAX_UPLOAD_BYTES: String(6 * 1024 * 1024), MULTIPART_PART_BYTES: String(5 * 1024 * 1024) });
  await small.start();
  const { page, context } = await newPage();
  try {
    await signIn(page);
    const puts = new Set();
    let partRequests = 0;
    page.on("request", (r) => {
      if (r.method() === "PUT" && r.url().includes("partNumber=")) {
        puts.add(new URL(r.url()).searchParams.get("partNumber"));
        partRequests++;
      }
    });
    const side = 2400;
    const dicom = makeDicom({ width: side, height: side, pixel: (x, y) => (x * 3 + y * 5) % 4096, bitsStored: 12 });
    expect(dicom.length > 10 * 1024 * 1024, `big enough: ${dicom.length}`);
    // A 3 MB/s uplink: long enough to see the one progress bar, and to stop the API while the parts go to S3.
    const cdp = await context.newCDPSession(page);
    await cdp.send("Network.enable");
    await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: 3 * 1024 * 1024 });
    await uploadFile(page, "large.dcm", "application/dicom", Buffer.from(dicom));
    await page.getByText(/in 3 parts/).waitFor();
    expect((await page.locator("progress").count()) === 1, "one progress bar");
    await small.stop();
    // The parts reach S3; completing them needs the API, which is down.
    await page.getByRole("alert").filter({ hasText: /could not be reached/ }).waitFor({ timeout: 30_000 });
    expect(puts.size === 3, `3 parts PUT, saw ${[...puts]}`);
    await small.start();
    const before = partRequests;
    await page.getByRole("button", { name: "Retry" }).click();
    const id = await studyIdFromUrl(page);
    expect(partRequests === before, `the retry sent no part again (${before} -> ${partRequests})`);
    const read = await eventually("the assembled image read", async () => {
      const s = (await api(`/v1/studies/${id}`)).body;
      return s.width === side && s;
    }, 60_000);
    expect(read.height === side, "the whole file arrived");
  } finally {
    await context.close();
    await apiProcess().stop();
    await apiProcess().start();
  }
});

test("the printed report shows the image with overlays, findings, annotations, model and notice; no controls", async () => {
  const { page, context } = await newPage();
  await signIn(page);
  await page.goto(`${APP}/studies/${state.pngStudy}`);
  await waitForFindings(page);
  await page.emulateMedia({ media: "print" });
  for (const visible of [page.getByTestId("viewport"), page.getByRole("heading", { name: "Findings" }), page.getByRole("heading", { name: "Radiologist annotations" }), page.getByTestId("model-line"), page.getByText("AI output, not a diagnosis").first()]) {
    expect(await visible.isVisible(), `printed: ${visible}`);
  }
  for (const hidden of [page.getByRole("button", { name: "Print report" }), page.getByRole("button", { name: "Sign out" }), page.getByRole("button", { name: "Zoom in" })]) {
    expect(!(await hidden.isVisible()), `not printed: ${hidden}`);
  }
  await page.pdf({ path: join(SHOTS, "report.pdf"), format: "A4" });
  await context.close();
});

// ------------------------------------------------------------------ run
let failed = 0;
let ran = 0;
const started = Date.now();
// CXR_E2E_ONLY=<part of a name> runs the matching tests (some need earlier ones' studies).
const only = process.env.CXR_E2E_ONLY;
for (const t of tests.filter((t) => !only || t.name.includes(only))) {
  const t0 = Date.now();
  ran++;
  try {
    await t.fn();
    console.log(`  PASS  ${t.name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  } catch (e) {
    failed++;
    console.log(`  FAIL  ${t.name} (${((Date.now() - t0) / 1000).toFixed(1)} s)\n        ${e.stack?.split("\n").slice(0, 4).join("\n        ") ?? e}`);
  }
}
await browser.close();
console.log(`axe: ${axeFindings.map((f) => `${f.screen} ${f.serious} serious/critical (${f.all} in all${f.all ? `: ${f.ids.join(", ")}` : ""})`).join("; ")}`);
console.log(`${ran - failed} passed, ${failed} failed, ${((Date.now() - started) / 1000).toFixed(1)} s; screenshots in ${SHOTS}`);
if (process.env.CXR_UPDATE_SCREENSHOTS === "1" && failed === 0) {
  const docs = join(root, "docs/screenshots");
  mkdirSync(docs, { recursive: true });
  for (const name of ["worklist.png", "study-view.png", "annotation-tool.png"]) copyFileSync(join(SHOTS, name), join(docs, name));
  console.log(`README screenshots updated in ${docs}`);
}
process.exit(failed ? 1 : 0);
