"""What several detectors share, computed once per run: the :class:`DetectionContext`.

A detector is called as ``detector(dataset, context, **options)``. The context carries the
run settings (``seed``, ``device``, ``n_folds``, ``progress``, ``out_dir``), the profile
table of the validation stage, and, computed lazily on first use, the cross-validated
classifier's out-of-fold ``pred_probs`` and embeddings (:mod:`pipeline.detect.oof`). A
failure while computing them is remembered and re-raised to every detector that asks, so
it is reported once per dependent detector and never retried.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from assay.pipeline.dataset import Dataset
from assay.pipeline.detect.oof import OOFResult, out_of_fold
from assay.pipeline.progress import say as progress_line

__all__ = ["DetectionContext"]


@dataclass
class DetectionContext:
    """Shared inputs and lazily computed intermediate results of one detection run.

    Parameters
    ----------
    dataset : Dataset
        The dataset being assayed (``N`` samples, ``K`` classes).
    seed : int
        Seeds every model.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.
    n_folds : int
        Cross-validation folds of the classifier.
    progress : bool
        Print progress lines.
    out_dir : Path or None
        Where the run's detection outputs go (detectors may save models there).
    profile : DataFrame or None
        The validation profile (one row per sample), when available.
    classifier : str
        Model choice passed to :func:`pipeline.detect.oof.out_of_fold`.
    classifier_options : dict
        Extra keyword arguments for :func:`pipeline.detect.oof.out_of_fold`.
    cache : dict
        Free space for detectors to share results (e.g. one Datalab run for several
        issue types).
    timings : dict
        Seconds spent on shared steps (``"classifier"``…).
    """

    dataset: Dataset
    seed: int = 0
    device: str = "auto"
    n_folds: int = 5
    progress: bool = False
    out_dir: Path | None = None
    profile: pd.DataFrame | None = None
    classifier: str = "auto"
    classifier_options: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    _oof: OOFResult | None = field(default=None, repr=False)
    _oof_error: BaseException | None = field(default=None, repr=False)

    def log(self, message: str) -> None:
        """Print ``[detect] message`` when ``progress`` is on."""
        if self.progress:
            progress_line(f"[detect] {message}")

    @property
    def oof(self) -> OOFResult:
        """The cross-validated classifier's results (trained on first access)."""
        if self._oof is None:
            if self._oof_error is not None:
                raise RuntimeError(
                    f"the cross-validated classifier failed earlier: {self._oof_error}"
                ) from self._oof_error
            t0 = time.perf_counter()
            try:
                self._oof = out_of_fold(
                    self.dataset,
                    n_folds=self.n_folds,
                    seed=self.seed,
                    device=self.device,
                    model=self.classifier,
                    progress=self.progress,
                    **self.classifier_options,
                )
            except Exception as exc:
                self._oof_error = exc
                raise
            finally:
                self.timings["classifier"] = round(time.perf_counter() - t0, 3)
        return self._oof

    @property
    def has_oof(self) -> bool:
        """Whether the classifier has been run successfully already."""
        return self._oof is not None

    @property
    def pred_probs(self) -> np.ndarray:
        """Out-of-fold predicted probabilities, float64 ``(N, K)``."""
        return self.oof.pred_probs

    @property
    def embeddings(self) -> np.ndarray:
        """Each sample's out-of-fold penultimate embedding, float32 ``(N, D)``."""
        return self.oof.embeddings

    @property
    def features(self) -> np.ndarray:
        """The feature space of the kNN detectors: every fold model's normalised
        embedding side by side, float32 ``(N, F * D)`` (comparable across samples)."""
        return self.oof.ensemble_embeddings
