import type { Finding } from "../api/client";

/** A label's decision threshold: the run's, else 0.5. */
export const thresholdOf = (thresholds: Record<string, number> | undefined, label: string) => thresholds?.[label] ?? 0.5;

export interface ScoredFinding {
  label: string;
  probability: number;
  threshold: number;
  positive: boolean;
}

/** Every label's probability, highest first, with its threshold and whether it is positive. */
export function scoreFindings(findings: Finding[], thresholds: Record<string, number> | undefined): ScoredFinding[] {
  return findings
    .filter((f) => f.source === "model")
    .map((f) => {
      const threshold = thresholdOf(thresholds, f.label);
      return { label: f.label, probability: f.probability, threshold, positive: f.probability >= threshold };
    })
    .sort((a, b) => b.probability - a.probability || a.label.localeCompare(b.label));
}

const pct = (p: number) => `${(p * 100).toFixed(1)}%`;

/** The findings as a table; each row has a bar with a tick at the label's threshold. */
export function FindingsPanel({ findings }: { findings: ScoredFinding[] }) {
  const positives = findings.filter((f) => f.positive).length;
  return (
    <section aria-labelledby="findings-title" className="findings">
      <h2 id="findings-title">Findings</h2>
      <p>{positives === 0 ? "No label is above its threshold." : `${positives} label${positives > 1 ? "s" : ""} above threshold (flagged).`}</p>
      <table>
        <caption className="visually-hidden">Probability of each label, highest first, with the label's threshold</caption>
        <thead>
          <tr>
            <th scope="col">Label</th>
            <th scope="col">Flag</th>
            <th scope="col">Probability</th>
            <th scope="col" className="bar-col">
              <span className="visually-hidden">Bar</span>
            </th>
            <th scope="col">Threshold</th>
          </tr>
        </thead>
        <tbody>
          {findings.map((f) => (
            <tr key={f.label} className={f.positive ? "positive" : undefined} data-testid="finding-row">
              <th scope="row">{f.label}</th>
              <td className="flag">{f.positive ? "▲ Positive" : ""}</td>
              <td className="num">{pct(f.probability)}</td>
              <td className="bar-col">
                <svg viewBox="0 0 100 10" className="bar" role="img" aria-label={`${f.label}: ${pct(f.probability)}, threshold ${pct(f.threshold)}`} preserveAspectRatio="none">
                  <rect x="0" y="1" width="100" height="8" className="bar-bg" />
                  <rect x="0" y="1" width={f.probability * 100} height="8" className="bar-fill" />
                  <line x1={f.threshold * 100} x2={f.threshold * 100} y1="0" y2="10" className="bar-tick" vectorEffect="non-scaling-stroke" />
                </svg>
              </td>
              <td className="num">{pct(f.threshold)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
