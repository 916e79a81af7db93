"""The report stage: the verdict (stored in run.json) and ``report.html``."""

from __future__ import annotations

import time
from pathlib import Path

from assay.pipeline.hashing import file_hash
from assay.pipeline.runfolder import RunFolder
from assay.pipeline.stages.base import StageSummary
from assay.pipeline.verdict import Verdict


class ReportSummary(StageSummary):
    stage: str = "report"
    path: str
    bytes: int
    verdict: Verdict


def report(run: RunFolder) -> ReportSummary:
    """Compute the verdict (stored in ``run.json``) and render ``report.html``."""
    from assay.pipeline.report import render_report
    from assay.pipeline.verdict import compute_verdict

    start = time.perf_counter()
    run.require("dataset")
    verdict = compute_verdict(run)
    run.update_run_json(verdict=verdict.model_dump(mode="json"))
    path = Path(render_report(run.root))
    return ReportSummary(
        output_hash=file_hash(path),
        path=str(path),
        bytes=path.stat().st_size,
        verdict=verdict,
        seconds=round(time.perf_counter() - start, 3),
    )
