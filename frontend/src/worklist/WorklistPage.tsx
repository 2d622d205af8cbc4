import { useInfiniteQuery, useQuery } from "@tanstack/react-query";
import { Link, useSearchParams } from "react-router-dom";
import { useApi } from "../App";
import { type LabelSet, type StudyStatus, unwrap } from "../api/client";
import { ApiProblem, explainProblem } from "../api/problem";
import { ProblemMessage } from "../ProblemMessage";

const STATUSES = ["created", "uploaded", "processing", "done", "failed"] as const;
const AI_STATUS: Record<string, string> = {
  created: "Awaiting image",
  uploaded: "Queued",
  processing: "Analysing",
  done: "Findings ready",
  failed: "Failed",
};

/** Filters as kept in the URL -> the API's list query. Dates are local days. */
export function listQuery(params: URLSearchParams) {
  const day = (v: string | null, end = false) => {
    if (!v || !/^\d{4}-\d{2}-\d{2}$/.test(v)) return undefined;
    const d = new Date(`${v}T00:00:00`);
    if (end) d.setDate(d.getDate() + 1);
    return d.toISOString();
  };
  const status = params.get("status");
  return {
    status: status && (STATUSES as readonly string[]).includes(status) ? (status as StudyStatus) : undefined,
    label: params.get("label") || undefined,
    created_from: day(params.get("from")),
    created_before: day(params.get("to"), true),
    sort: params.get("sort") === "priority" ? ("priority" as const) : undefined,
  };
}

export function WorklistPage() {
  const api = useApi();
  const [params, setParams] = useSearchParams();
  const query = listQuery(params);
  const labelSets = useQuery({ queryKey: ["label-sets"], queryFn: () => unwrap(api.GET("/v1/label-sets")), staleTime: Number.POSITIVE_INFINITY });
  // The URL's label is an option even before the label sets arrive, so the filter shows it at once.
  const labels = [...new Set([...(labelSets.data ?? []).flatMap((s: LabelSet) => s.labels), ...(query.label ? [query.label] : [])])].sort();
  const list = useInfiniteQuery({
    queryKey: ["studies", query],
    queryFn: ({ pageParam }) => unwrap(api.GET("/v1/studies", { params: { query: { ...query, limit: 25, cursor: pageParam } } })),
    initialPageParam: undefined as string | undefined,
    getNextPageParam: (last) => last.next_cursor ?? undefined,
    refetchInterval: 5000,
  });
  const set = (name: string, value: string) => {
    const next = new URLSearchParams(params);
    if (value) next.set(name, value);
    else next.delete(name);
    setParams(next, { replace: true });
  };
  const studies = list.data?.pages.flatMap((p) => p.studies) ?? [];

  return (
    <main className="page">
      <div className="title-row">
        <h1>Worklist</h1>
        <Link className="button primary" to="/upload">
          Upload an X-ray
        </Link>
      </div>
      <form className="filters" aria-label="Filters" onSubmit={(e) => e.preventDefault()}>
        <label>
          Status{" "}
          <select value={params.get("status") ?? ""} onChange={(e) => set("status", e.target.value)}>
            <option value="">Any</option>
            {STATUSES.map((s) => (
              <option key={s} value={s}>
                {AI_STATUS[s]}
              </option>
            ))}
          </select>
        </label>
        <label>
          Label{" "}
          <select value={params.get("label") ?? ""} onChange={(e) => set("label", e.target.value)} data-testid="label-filter">
            <option value="">Any</option>
            {labels.map((l) => (
              <option key={l} value={l}>
                {l}
              </option>
            ))}
          </select>
        </label>
        <label>
          From <input type="date" value={params.get("from") ?? ""} onChange={(e) => set("from", e.target.value)} />
        </label>
        <label>
          To <input type="date" value={params.get("to") ?? ""} onChange={(e) => set("to", e.target.value)} />
        </label>
        <label>
          Order{" "}
          <select value={params.get("sort") ?? ""} onChange={(e) => set("sort", e.target.value)} data-testid="sort">
            <option value="">Newest first</option>
            <option value="priority">Priority (long waits first)</option>
          </select>
        </label>
      </form>
      <p className="hint">
        A label matches a radiologist annotation or a model probability of at least 50%. Priority is the highest positive probability; a study not yet reviewed that has waited too long comes first whatever its score.
      </p>
      {list.isError && (
        <div role="alert">
          <ProblemMessage explanation={list.error instanceof ApiProblem ? explainProblem(list.error.problem) : { message: String(list.error) }} />
        </div>
      )}
      <table className="worklist" data-testid="worklist">
        <caption className="visually-hidden">Your studies</caption>
        <thead>
          <tr>
            <th scope="col">Created</th>
            <th scope="col">Type</th>
            <th scope="col">AI status</th>
            <th scope="col">Top finding</th>
            <th scope="col">Priority</th>
            <th scope="col">
              <span className="visually-hidden">Open</span>
            </th>
          </tr>
        </thead>
        <tbody>
          {studies.map((s) => (
            <tr key={s.id} data-testid="worklist-row">
              <td>{new Date(s.created_at).toLocaleString()}</td>
              <td>{s.media_type === "application/dicom" ? "DICOM" : s.media_type === "image/png" ? "PNG" : "JPEG"}</td>
              <td className={`status-${s.status}`}>{AI_STATUS[s.status] ?? s.status}</td>
              <td>{s.priority_label ?? (s.priority === 0 ? "None above threshold" : "–")}</td>
              <td className="num">
                {s.overdue && <strong className="overdue">Waiting long · </strong>}
                {s.priority == null ? "–" : `${(s.priority * 100).toFixed(0)}%`}
              </td>
              <td>
                <Link to={`/studies/${s.id}`} aria-label={`Open study created ${new Date(s.created_at).toLocaleString()}`}>
                  Open
                </Link>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {list.isPending && <p>Loading…</p>}
      {!list.isPending && studies.length === 0 && <p>No studies match.</p>}
      {list.hasNextPage && (
        <button type="button" onClick={() => void list.fetchNextPage()} disabled={list.isFetchingNextPage}>
          {list.isFetchingNextPage ? "Loading…" : "Show more"}
        </button>
      )}
    </main>
  );
}
