import type { Explanation } from "./api/problem";

export function ProblemMessage({ explanation }: { explanation: Explanation }) {
  return (
    <div className="problem">
      <p className="problem-message">{explanation.message}</p>
      {explanation.action && <p>{explanation.action}</p>}
      {explanation.detail && (
        <details>
          <summary>Details</summary>
          <p>{explanation.detail}</p>
        </details>
      )}
    </div>
  );
}
