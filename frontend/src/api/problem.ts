// API errors (RFC 9457 problem+json) in words a clinician understands. The
// server's `detail` is kept for the "details" line, never shown alone.

export interface Problem {
  type?: string;
  title?: string;
  status: number;
  detail?: string;
  study_id?: string;
}

export class ApiProblem extends Error {
  constructor(
    readonly problem: Problem,
    readonly retryAfterSecs?: number,
  ) {
    super(explainProblem(problem).message);
  }
}

export interface Explanation {
  /** What happened, in plain words. */
  message: string;
  /** What the user can do. */
  action?: string;
  /** The server's own words, for support. */
  detail?: string;
}

export function explainProblem(p: Problem): Explanation {
  const detail = p.detail && p.detail !== p.title ? p.detail : undefined;
  switch (p.status) {
    case 0:
      return { message: "The server could not be reached.", action: "Check the connection; try again in a moment.", detail };
    case 400:
      return { message: "The request was not understood.", action: "Reload the page and try again.", detail };
    case 401:
      return { message: "Your session has ended.", action: "Sign in again to continue.", detail };
    case 403:
      return { message: "You are not allowed to do this.", detail };
    case 404:
      return { message: "This study was not found, or it belongs to someone else.", detail };
    case 409:
      return {
        message: "This cannot be done yet: the study is still being processed.",
        action: "Wait until the findings are shown, then try again.",
        detail,
      };
    case 413:
      return { message: "The file is too large.", action: "Images up to 64 MB are accepted.", detail };
    case 415:
      return { message: "This file type is not accepted.", action: "Upload a PNG, JPEG or DICOM chest X-ray.", detail };
    case 422:
      return { message: "Some of what was entered is not valid.", action: "Check the label and the box, then try again.", detail };
    case 429:
      return { message: "The system is busy.", action: "It will retry on its own; you can also try again shortly.", detail };
    case 502:
    case 504:
      return { message: "The server could not be reached: it may be restarting.", action: "Try again in a moment; nothing was lost.", detail };
    case 503:
      return {
        message: "A part of the system is temporarily unavailable.",
        action: p.study_id ? "Your study was saved and will be analysed when it is back." : "Try again in a moment.",
        detail,
      };
    default:
      return p.status >= 500
        ? { message: "Something went wrong on the server.", action: "Try again; if it keeps happening, contact support.", detail }
        : { message: `The request failed (${p.status}).`, detail };
  }
}

/** A problem from any failed response (problem+json, other JSON, or none). */
export async function problemOf(res: Response): Promise<Problem> {
  try {
    const body = (await res.clone().json()) as Partial<Problem>;
    return { ...body, status: typeof body.status === "number" ? body.status : res.status };
  } catch {
    return { status: res.status, title: res.statusText };
  }
}

/** `Retry-After` in seconds (delta-seconds or an HTTP date), if present. */
export function retryAfterSecs(header: string | null, now = Date.now()): number | undefined {
  if (!header) return undefined;
  const secs = Number(header);
  if (Number.isFinite(secs)) return Math.max(0, secs);
  const at = Date.parse(header);
  return Number.isNaN(at) ? undefined : Math.max(0, (at - now) / 1000);
}
