// @vitest-environment jsdom
import { render, screen, within } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { FindingsPanel, scoreFindings } from "../../src/study/FindingsPanel";

describe("findings panel", () => {
  const findings = scoreFindings(
    [
      { label: "Effusion", probability: 0.31, source: "model", box: null },
      { label: "Cardiomegaly", probability: 0.72, source: "model", box: null },
      { label: "Cardiomegaly", probability: 0.9, source: "cam", box: { x_min: 1, y_min: 2, width: 3, height: 4 } },
      { label: "Mass", probability: 0.3, source: "model", box: null },
    ],
    { Effusion: 0.3 },
  );

  it("sorts model findings, applies each label's threshold, ignores CAM boxes", () => {
    expect(findings.map((f) => [f.label, f.positive, f.threshold])).toEqual([
      ["Cardiomegaly", true, 0.5],
      ["Effusion", true, 0.3],
      ["Mass", false, 0.5],
    ]);
  });

  it("renders a table with a text equivalent of every bar and flags positives in words", () => {
    render(<FindingsPanel findings={findings} />);
    const rows = screen.getAllByTestId("finding-row");
    expect(rows).toHaveLength(3);
    expect(within(rows[0]).getByText(/Positive/)).toBeTruthy();
    expect(within(rows[2]).queryByText(/Positive/)).toBeNull();
    expect(screen.getByRole("img", { name: "Cardiomegaly: 72.0%, threshold 50.0%" })).toBeTruthy();
    expect(screen.getByText("2 labels above threshold (flagged).")).toBeTruthy();
  });
});
