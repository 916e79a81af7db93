"""The stage ribbon at the top and the run details at the bottom (from ``run.json``)."""

from __future__ import annotations

from typing import Any

from assay.pipeline.report.context import STAGES, ReportInputs
from assay.pipeline.report.format import fmt_seconds, fmt_value, short


def stages(inputs: ReportInputs) -> dict[str, dict[str, Any]]:
    """Stage -> {name, state, error}: run.json's record, else whether its artifact exists."""
    out = {}
    for stage in STAGES:
        record = inputs.record.stages.get(stage)
        if record is not None:
            state, error = record.state, record.error
        else:
            state, error = ("done" if inputs.stage_ran(stage) else "not run"), None
        out[stage] = {"name": stage, "state": state, "error": short(error) if error else None}
    return out


def absent(stage: dict[str, Any], what: str) -> str:
    """A plain sentence saying why a section has nothing to show."""
    name, state = stage["name"], stage["state"]
    if state in ("failed", "critical", "interrupted"):
        msg = f"The {name} stage {'was interrupted' if state == 'interrupted' else 'failed'}, " \
              f"so there is no {what}."
        return msg + (f" Error: {stage['error']}" if stage.get("error") else "")
    if state == "skipped":
        return f"The {name} stage was skipped, so there is no {what}."
    return f"The {name} stage has not run, so there is no {what}."


def build(inputs: ReportInputs) -> dict[str, Any]:
    record = inputs.record

    def pairs(obj: dict[str, Any]) -> list[tuple[str, str]]:
        return [(str(k), fmt_value(v)) for k, v in obj.items()]

    return {
        "run_id": record.run_id or inputs.run.run_id,
        "started_at": record.started_at or "unknown",
        "status": record.status,
        "parameters": pairs(record.parameters),
        "versions": pairs(record.versions),
        "timings": [(k, fmt_seconds(v)) for k, v in record.timings.items()],
        "hashes": [(k, v[:16] + "…") for k, v in record.hashes.items()],
        "has_run_json": inputs.run.has("run_json"),
    }
