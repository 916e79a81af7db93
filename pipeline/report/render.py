"""Render ``report.html`` from a run folder.

The report is one self-contained HTML file: inline CSS, no scripts, no fonts, every picture
and the full list of flagged samples a ``data:`` URI. It reads the run folder's typed
artifacts (:mod:`pipeline.report.context`); each section has its own module
(:mod:`pipeline.report.sections`) and template (``templates/sections/``). Every string that
reaches the page goes through Jinja2's autoescaping.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from assay.pipeline import atomic
from assay.pipeline.report import context, figures
from assay.pipeline.report.sections import (
    cleaning,
    dataset,
    generation,
    issues,
    noise,
    run,
    truth,
    validation,
)
from assay.pipeline.runfolder import RunFolder
from assay.pipeline.verdict import compute_verdict

#: Samples shown per issue type unless ``gallery_size`` says otherwise.
DEFAULT_GALLERY_SIZE = 24


def render_report(run_dir: Path, *, gallery_size: int = DEFAULT_GALLERY_SIZE) -> Path:
    """Compute the run's verdict, store it in ``run.json``, and render ``report.html``.

    Beside the report, ``detection/issues.csv`` lists every flagged sample (the same list
    the report embeds as a download).

    Parameters
    ----------
    run_dir : Path
        A run folder (see :mod:`pipeline.runfolder`). Stages that have not run leave their
        sections saying so.
    gallery_size : int, keyword-only
        Most samples pictured per issue type (the worst first), at least 1.

    Returns
    -------
    Path
        The report's path, written atomically.

    Raises
    ------
    MissingArtifactError
        When ``run_dir`` is not a run folder (it has no ingested dataset).
    DataError
        When an artifact does not match its schema (the message names the file).
    ValueError
        When ``gallery_size`` is smaller than 1.
    """
    if not isinstance(gallery_size, int | np.integer) or gallery_size < 1:
        raise ValueError(f"`gallery_size` must be an integer >= 1. Got {gallery_size!r} instead.")
    folder = RunFolder(Path(run_dir))
    folder.require("dataset")
    folder.update_run_json(verdict=compute_verdict(folder))
    inputs = context.load(folder)
    csv = None
    if inputs.issues is not None:
        csv = issues.flagged_table(inputs).to_csv(index=False)
        atomic.write_text(folder.paths.issues_csv, csv)
    page = build_context(inputs, gallery_size=int(gallery_size), flagged_csv=csv)
    html = _environment().get_template("report.html").render(**page)
    return atomic.write_text(folder.paths.report, html)


def build_context(
    inputs: context.ReportInputs,
    *,
    gallery_size: int = DEFAULT_GALLERY_SIZE,
    flagged_csv: str | None = None,
) -> dict[str, Any]:
    """Everything the template needs, section by section, as plain dicts and strings."""
    stages = run.stages(inputs)
    csv_uri = figures.data_uri(flagged_csv.encode(), "text/csv") if flagged_csv else ""
    return {
        "title": f"assay report — {inputs.record.run_id or inputs.run.run_id}",
        "run": run.build(inputs),
        "stages": stages,
        "verdict": inputs.record.verdict,
        "dataset": dataset.build(inputs, stages["ingest"]),
        "validation": validation.build(inputs, stages["validate"]),
        "detection": issues.build(inputs, stages["detect"], gallery_size=gallery_size,
                                  flagged_csv=csv_uri),
        "noise": noise.build(inputs, stages["detect"]),
        "cleaning": cleaning.build(inputs, stages["clean"]),
        "truth": truth.build(inputs),
        "generation": generation.build(inputs, stages["generate"]),
    }


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).with_name("templates"))),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
