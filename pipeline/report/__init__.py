"""The self-contained HTML report of a run: ``render_report(run_dir) -> run_dir/report.html``."""

from assay.pipeline.report.render import compute_verdict, detection_metrics, render_report

__all__ = ["compute_verdict", "detection_metrics", "render_report"]
