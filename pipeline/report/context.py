"""Load what the report shows: the run folder's typed artifacts, read once.

A stage that has not run leaves its artifact missing; the matching field is ``None`` and
the section says so. An artifact that does not match its schema is an error (the report
stage fails and names the file): the report never guesses at a shape nothing writes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import pandas as pd

from assay.pipeline import artifacts, inject
from assay.pipeline.dataset import Dataset
from assay.pipeline.report import figures
from assay.pipeline.runfolder import MissingArtifactError, RunFolder

T = TypeVar("T")

#: The stages of a run, in order, and the artifact that shows each one ran.
STAGES: dict[str, str] = {
    "ingest": "dataset",
    "validate": "validation_json",
    "detect": "issues",
    "clean": "decisions",
    "generate": "gan_metrics",
}


def optional(read: Callable[[], T]) -> T | None:
    """``read()``, or ``None`` when its artifact is not in the run folder yet."""
    try:
        return read()
    except MissingArtifactError:
        return None


@dataclass
class Samples:
    """Images, label names and injected ground truth, looked up by ``sample_id``."""

    dataset: Dataset | None
    pictures: bool = True
    _rows: dict[int, int] = field(default_factory=dict)
    _cache: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dataset is not None:
            self._rows = {int(s): i for i, s in enumerate(self.dataset.sample_ids)}

    @property
    def names(self) -> tuple[str, ...]:
        return self.dataset.class_names if self.dataset is not None else ()

    def label(self, value: int) -> str:
        """The class name of label ``value``; ``—`` for -1 (none, out of distribution)."""
        value = int(value)
        if value < 0:
            return "—"
        return self.names[value] if value < len(self.names) else str(value)

    def row(self, sample_id: int) -> int:
        """The position of ``sample_id`` in the dataset."""
        return self._rows[int(sample_id)]

    def thumb(self, sample_id: int) -> str | None:
        """A thumbnail ``data:`` URI of the sample (None when pictures are off)."""
        sid = int(sample_id)
        if not self.pictures or self.dataset is None or sid not in self._rows:
            return None
        if sid not in self._cache:
            self._cache[sid] = figures.thumbnail_uri(self.dataset.images[self._rows[sid]])
        return self._cache[sid]


@dataclass
class ReportInputs:
    """Every artifact of one run folder the report reads (None: not written yet)."""

    run: RunFolder
    record: artifacts.RunRecord
    dataset: Dataset | None
    validation: artifacts.ValidationReport | None
    issues: pd.DataFrame | None
    summary: artifacts.DetectionSummary | None
    noise_matrix: np.ndarray | None
    decisions: pd.DataFrame | None
    cleaned: Dataset | None
    gan: artifacts.GanMetrics | None
    truth: pd.DataFrame | None
    samples: Samples

    def stage_ran(self, stage: str) -> bool:
        return self.run.has(STAGES[stage])


def load(run: RunFolder, *, pictures: bool = True) -> ReportInputs:
    """Read every artifact of ``run`` the report shows.

    Parameters
    ----------
    run : RunFolder
    pictures : bool, keyword-only
        Draw thumbnails (False gives only the numbers; much faster).
    """
    dataset = optional(run.dataset)
    truth = None
    if dataset is not None and all(c in dataset.columns for c in inject.GROUND_TRUTH_COLUMNS):
        truth = inject.ground_truth(dataset)
    return ReportInputs(
        run=run,
        record=run.read_run_json(),
        dataset=dataset,
        validation=optional(run.validation),
        issues=optional(run.issues),
        summary=optional(run.detection_summary),
        noise_matrix=optional(run.noise_matrix),
        decisions=optional(run.decisions),
        cleaned=optional(run.cleaned),
        gan=optional(run.gan_metrics),
        truth=truth,
        samples=Samples(dataset, pictures=pictures),
    )
