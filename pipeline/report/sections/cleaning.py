"""The cleaning section: decision counts, reasons, and a sample of the changed samples."""

from __future__ import annotations

import re
from typing import Any

from assay.pipeline.report.context import ReportInputs
from assay.pipeline.report.format import fmt_int, share, short

#: Rows of the changed-samples table.
DECISION_ROWS = 30
_ORDER = ("keep", "relabel", "drop", "review")
#: Numbers inside a reason ("confidence 0.93", "duplicate of 1234") do not make it another
#: reason when reasons are counted.
_NUMBER = re.compile(r"\d+(\.\d+)?")


def build(inputs: ReportInputs, stage: dict[str, Any]) -> dict[str, Any]:
    from assay.pipeline.report.sections.run import absent

    table = inputs.decisions
    if table is None:
        return {"present": False, "note": absent(stage, "cleaning decision")}
    n = len(table)
    vc = table["decision"].value_counts()
    count_of = {d: int(vc.get(d, 0)) for d in _ORDER}
    counts = [{"decision": d, "count": fmt_int(count_of[d]), "share": share(count_of[d], n)}
              for d in _ORDER if count_of[d]]
    changed = table.loc[table["decision"] != "keep"]
    reasons = []
    kinds = changed["reason"].astype(str).str.replace(_NUMBER, "#", regex=True)
    for reason, count in kinds.value_counts().head(10).items():
        reasons.append({"reason": short(reason, 160), "count": fmt_int(count)})
    rows = []
    per = max(1, DECISION_ROWS // max(1, changed["decision"].nunique()))
    rank = {d: i for i, d in enumerate(_ORDER)}
    picked = (changed.assign(_r=changed["decision"].map(rank))
              .sort_values(["_r", "sample_id"], kind="stable")
              .groupby("decision", sort=False, group_keys=False).head(per).head(DECISION_ROWS))
    for row in picked.itertuples(index=False):
        rows.append({
            "sample_id": str(row.sample_id),
            "thumb": inputs.samples.thumb(row.sample_id),
            "decision": row.decision,
            "old": inputs.samples.label(row.old_label),
            "new": inputs.samples.label(row.new_label) if row.new_label != row.old_label else "",
            "reason": short(row.reason, 160),
        })
    n_after = len(inputs.cleaned) if inputs.cleaned is not None else n - count_of["drop"]
    done = [f"{count_of[d]:,} {verb}" for d, verb in
            (("relabel", "relabelled"), ("drop", "dropped"), ("review", "sent to review"))
            if count_of[d]]
    sentence = (f"Of {n:,} samples, {count_of['keep']:,} were kept as they are"
                + (", " + ", ".join(done) if done else "") + "."
                + f" The cleaned dataset has {n_after:,} samples.")
    return {
        "present": True,
        "sentence": sentence,
        "counts": counts,
        "reasons": reasons,
        "table": rows,
        "table_note": f"{len(rows)} of {len(changed):,} changed samples"
        if len(changed) > len(rows) else None,
    }
