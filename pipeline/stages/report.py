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

    start = time.perf_counter()
    path = Path(render_report(run.root))
    verdict = run.read_run_json().verdict
    assert verdict is not None  # render_report stores it before it renders
    return ReportSummary(
        output_hash=file_hash(path),
        path=str(path),
        bytes=path.stat().st_size,
        verdict=verdict,
        seconds=round(time.perf_counter() - start, 3),
    )
