"""The self-contained HTML report of a run: ``render_report(run_dir) -> run_dir/report.html``."""

from assay.pipeline.report.render import render_report

__all__ = ["render_report"]
