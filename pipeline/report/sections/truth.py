"""Detection quality against the injected ground truth (:mod:`pipeline.evaluate`)."""

from __future__ import annotations

from typing import Any

from assay.pipeline import evaluate
from assay.pipeline.report.context import ReportInputs
from assay.pipeline.report.format import fmt_int, fmt_number, fmt_pct, is_number

#: Row titles of :data:`pipeline.evaluate.DETECTOR_TRUTH`'s detectors.
TITLES = {
    "dirty": "Any dirt (is_dirty)",
    "label": "Wrong labels (label issues)",
    "outlier": "Corrupted or foreign images (outliers)",
    "vae": "Corrupted or foreign images (VAE alone)",
    "exact_duplicate": "Exact duplicates (against all duplicates)",
    "near_duplicate": "Near duplicates (against all duplicates)",
}
COLUMNS = ["precision", "recall", "F1", "AUROC", "really dirty", "flagged"]


def build(inputs: ReportInputs) -> dict[str, Any]:
    if inputs.truth is None:
        return {"present": False, "has_truth": False}
    if inputs.issues is None:
        return {"present": False, "has_truth": True}
    table = evaluate.detection_table(inputs.issues, inputs.truth)
    order = {k: i for i, k in enumerate(TITLES)}
    table = table.assign(_o=table["detector"].map(order)).sort_values("_o")
    rows = []
    overall = None
    for r in table.itertuples(index=False):
        if r.n_true == 0:
            continue
        rows.append({"name": TITLES[r.detector], "values": [
            fmt_pct(r.precision), fmt_pct(r.recall), fmt_pct(r.f1),
            fmt_number(r.auroc) if is_number(r.auroc) else "—",
            fmt_int(r.n_true), fmt_int(r.n_flagged)]})
        if r.detector == "dirty":
            overall = (r.precision, r.recall)
    kinds = evaluate.detection_by_kind(inputs.issues, inputs.truth)
    by_kind = [{"kind": "clean (false alarms)" if k.kind == "clean" else k.kind.replace("_", " "),
                "injected": fmt_int(k.n), "caught": fmt_int(k.flagged), "recall": fmt_pct(k.share)}
               for k in kinds.itertuples(index=False)]
    return {"present": True, "has_truth": True, "columns": COLUMNS, "rows": rows,
            "by_kind": by_kind, "overall": overall}
