"""The estimated label-noise matrix, as a table with shaded cells (and a heatmap)."""

from __future__ import annotations

from typing import Any

import numpy as np

from assay.pipeline.report import figures
from assay.pipeline.report.context import ReportInputs
from assay.pipeline.report.format import fmt_pct


def build(inputs: ReportInputs, stage: dict[str, Any]) -> dict[str, Any]:
    """``T[i, j] = P(given label j | true label i)`` (rows sum to 1) as table rows."""
    from assay.pipeline.report.sections.run import absent

    matrix, summary = inputs.noise_matrix, inputs.summary
    if matrix is None or summary is None:
        return {"present": False, "note": absent(stage, "noise matrix")}
    if not summary.noise_matrix.estimated:
        return {"present": False, "note": "The label detector did not run, so the label-noise "
                "matrix was not estimated."}
    names = [inputs.samples.label(i) for i in range(matrix.shape[0])]
    peak = float(matrix.max()) or 1.0
    rows = []
    for i, name in enumerate(names):
        cells = []
        for j in range(len(names)):
            v = float(matrix[i, j])
            # a square-root scale keeps small off-diagonal shares visible next to the diagonal
            alpha = min(1.0, (v / peak) ** 0.5)
            cells.append({"text": f"{100 * v:.1f}" if v >= 0.0005 else "·",
                          "alpha": f"{alpha:.2f}", "dark": alpha > 0.55, "diagonal": i == j})
        rows.append({"name": name, "cells": cells})
    off = matrix.copy()
    np.fill_diagonal(off, -np.inf)
    i, j = np.unravel_index(int(np.argmax(off)), off.shape)
    worst = None
    if off[i, j] > 0:
        worst = (f"The largest estimated confusion: {fmt_pct(off[i, j])} of the samples that "
                 f"are really “{names[i]}” carry the label “{names[j]}”.")
    rate = summary.noise_matrix.estimated_noise_rate
    plot = None
    if inputs.samples.pictures:
        plot = figures.heatmap_uri(matrix, row_labels=names, col_labels=names,
                                   row_title="true label (estimated)", col_title="given label")
    return {
        "present": True,
        "names": names,
        "rows": rows,
        "diagonal": fmt_pct(float(np.mean(np.diag(matrix)))),
        "noise_rate": fmt_pct(rate) if rate is not None else None,
        "worst": worst,
        "plot": plot,
    }
