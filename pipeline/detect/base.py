"""The one shape every detector returns, and the one place detectors are registered.

A detector is a function ``detect_<name>(dataset, context, **options) -> DetectorResult``.
``context`` carries what several detectors share (out-of-fold pred_probs, embeddings, the
profile table, seed, device), so expensive work is done once.

Each result's ``table`` has one row per sample keyed by ``sample_id`` with at least
``is_<name>_issue`` (bool) and ``<name>_score`` (float in [0, 1], LOWER = MORE LIKELY AN
ISSUE, cleanlab's convention), plus any extra columns the detector wants to keep.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd


@dataclass
class DetectorResult:
    """Per-sample flags and scores of one issue type, with a one-line summary."""

    name: str
    table: pd.DataFrame
    summary: str
    info: dict[str, Any] = field(default_factory=dict)
    #: Per-sample intermediate arrays ``(N,)`` kept in memory for benchmarks (never written).
    arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    #: An outlier source's evidence per sample, float ``(N,)``, in units of its own flag
    #: threshold: the flag is ``excess > 1``, 0 is a typical sample (may be negative).
    #: :func:`pipeline.detect.combine.outlier_evidence` adds the sources' evidence up.
    excess: np.ndarray | None = field(default=None, repr=False)

    @property
    def flag_column(self) -> str:
        return f"is_{self.name}_issue"

    @property
    def score_column(self) -> str:
        return f"{self.name}_score"

    def check(self, sample_ids: np.ndarray) -> DetectorResult:
        """Raise ``ValueError`` unless the table has the agreed shape for ``sample_ids``."""
        missing = {"sample_id", self.flag_column, self.score_column} - set(self.table.columns)
        if missing:
            raise ValueError(f"detector {self.name!r} returned no column(s) {sorted(missing)}.")
        if len(self.table) != len(sample_ids) or not np.array_equal(
            self.table["sample_id"].to_numpy(), sample_ids
        ):
            raise ValueError(f"detector {self.name!r} must return one row per sample, in order.")
        scores = self.table[self.score_column].to_numpy(dtype=float)
        if not np.all(np.isfinite(scores)) or scores.min() < 0 or scores.max() > 1:
            raise ValueError(f"detector {self.name!r}: scores must be finite and in [0, 1].")
        return self


Detector = Callable[..., DetectorResult]

#: name -> detector function, in the order they run. Detector modules register here with
#: :func:`register`; ``pipeline.detect`` imports them all so the registry is complete.
REGISTRY: dict[str, Detector] = {}


def register(name: str) -> Callable[[Detector], Detector]:
    """Decorator: add a detector function to :data:`REGISTRY` under ``name``."""

    def deco(fn: Detector) -> Detector:
        if name in REGISTRY and REGISTRY[name] is not fn:
            raise ValueError(f"a detector named {name!r} is already registered.")
        REGISTRY[name] = fn
        return fn

    return deco
