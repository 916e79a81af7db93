"""The run folder: where every stage of one run writes its outputs.

::

    runs/<run-id>/
      dataset/            the ingested snapshot (canonical format)
      validation/         validation.json (+ Great Expectations Data Docs)
      detection/          issues.parquet, summary.json
      cleaned/            the cleaned dataset (canonical format) + decisions.parquet
      gan/                metrics.json, samples_<arm>.png, training curves
      report.html
      run.json            parameters, versions, timings per stage, data hashes
"""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd
from pydantic import BaseModel

from assay.pipeline import artifacts as A
from assay.pipeline import atomic
from assay.pipeline.errors import DataError

if TYPE_CHECKING:
    from assay.pipeline.dataset import Dataset

PACKAGES = (
    "assay",
    "numpy",
    "pandas",
    "scikit-learn",
    "torch",
    "cleanlab",
    "great-expectations",
    "prefect",
)


M = TypeVar("M", bound=BaseModel)


class MissingArtifactError(DataError):
    """A stage's input is not in the run folder; the message names the stage to run first."""


#: Which stage writes each part of a run folder (for "run ... first" messages).
PRODUCERS = {
    "dataset": "validate",
    "validation": "validate",
    "detection": "detect",
    "cleaned": "clean",
    "gan": "gan",
    "report": "report",
}


@dataclass(frozen=True)
class RunPaths:
    """Every file name of a run folder (from :mod:`pipeline.artifacts`)."""

    root: Path

    @property
    def dataset(self) -> Path:
        return self.root / A.DATASET_DIR

    @property
    def validation(self) -> Path:
        return self.root / A.VALIDATION_DIR

    @property
    def validation_json(self) -> Path:
        return self.validation / A.VALIDATION_JSON

    @property
    def sample_flags(self) -> Path:
        return self.validation / A.SAMPLE_FLAGS

    @property
    def data_docs(self) -> Path:
        return self.validation / A.DATA_DOCS_DIR

    @property
    def detection(self) -> Path:
        return self.root / A.DETECTION_DIR

    @property
    def issues(self) -> Path:
        return self.detection / A.ISSUES

    @property
    def issues_csv(self) -> Path:
        return self.detection / A.ISSUES_CSV

    @property
    def noise_matrix(self) -> Path:
        return self.detection / A.NOISE_MATRIX

    @property
    def detection_summary(self) -> Path:
        return self.detection / A.DETECTION_SUMMARY

    @property
    def cleaned(self) -> Path:
        return self.root / A.CLEANED_DIR

    @property
    def decisions(self) -> Path:
        return self.cleaned / A.DECISIONS

    @property
    def gan(self) -> Path:
        return self.root / A.GAN_DIR

    @property
    def gan_metrics(self) -> Path:
        return self.gan / A.GAN_METRICS

    @property
    def gan_loss_curves(self) -> Path:
        return self.gan / A.GAN_LOSS_CURVES

    def gan_samples(self, arm: str) -> Path:
        """The sample grid of one GAN arm (one row per class)."""
        return self.gan / A.GAN_SAMPLES.format(arm=arm)

    @property
    def report(self) -> Path:
        return self.root / A.REPORT

    @property
    def run_json(self) -> Path:
        return self.root / A.RUN_JSON


@dataclass(frozen=True)
class RunFolder:
    """One run folder: its paths (:attr:`paths`) and typed readers of its artifacts.

    Creating the object creates nothing on disk. Each reader raises
    :class:`MissingArtifactError` (exit 2) naming the stage to run first when its
    artifact is not there, and :class:`DataError` naming the file when it does not match
    its schema (:mod:`pipeline.artifacts`).
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def paths(self) -> RunPaths:
        return RunPaths(self.root)

    @property
    def run_id(self) -> str:
        return self.root.name

    def require(self, part: str) -> Path:
        """The path of ``part`` (a :class:`RunPaths` name), or a clear error when missing."""
        path: Path = getattr(self.paths, part)
        return self._require(path)

    def _require(self, path: Path) -> Path:
        if not path.exists():
            folder = path.relative_to(self.root).parts[0].removesuffix(".html")
            stage = PRODUCERS.get(folder, folder)
            command = f"assay {stage} --run-dir {self.root}"
            if folder == "dataset":
                command = f"assay validate --data SPEC --run-dir {self.root}"
            raise MissingArtifactError(f"{path}: missing; run `{command}` first.")
        return path

    def relative(self, part: str) -> str:
        """The path of ``part`` (a :class:`RunPaths` name) relative to the run folder."""
        path: Path = getattr(self.paths, part)
        return path.relative_to(self.root).as_posix()

    def has(self, part: str) -> bool:
        """Whether the artifact ``part`` (a :class:`RunPaths` name) exists."""
        return bool(getattr(self.paths, part).exists())

    # ----------------------------------------------------------------- readers
    def dataset(self) -> Dataset:
        """The ingested snapshot."""
        from assay.pipeline import io

        return io.load(str(self.require("dataset")))

    def cleaned(self) -> Dataset:
        """The cleaned dataset; its manifest has :data:`~pipeline.artifacts.CLEANED_COLUMNS`."""
        from assay.pipeline import io

        path = self.require("cleaned")
        data = io.load(str(path))
        A.check_columns(data.columns.assign(label=data.labels, sample_id=data.sample_ids),
                        A.CLEANED_COLUMNS, source=path)
        return data

    def issues(self) -> pd.DataFrame:
        """``detection/issues.parquet``: :data:`~pipeline.artifacts.ISSUE_COLUMNS`, one row
        per sample, keyed by ``sample_id``."""
        return self._table("issues", A.ISSUE_COLUMNS)

    def noise_matrix(self) -> np.ndarray:
        """The estimated noise matrix, float64 ``(K, K)``: ``T[i, j] = P(given label j |
        true label i)``; rows sum to 1."""
        path = self.require("noise_matrix")
        matrix = np.load(path, allow_pickle=False)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise DataError(f"{path}: expected a square (K, K) matrix. Got {matrix.shape}.")
        return matrix.astype(np.float64)

    def detection_summary(self) -> A.DetectionSummary:
        return self._json("detection_summary", A.DetectionSummary)

    def validation(self) -> A.ValidationReport:
        return self._json("validation_json", A.ValidationReport)

    def sample_flags(self) -> pd.DataFrame:
        return self._table("sample_flags", A.SAMPLE_FLAG_COLUMNS)

    def decisions(self) -> pd.DataFrame:
        return self._table("decisions", A.DECISION_COLUMNS)

    def gan_metrics(self) -> A.GanMetrics:
        return self._json("gan_metrics", A.GanMetrics)

    def _json(self, part: str, model: type[M]) -> M:
        path = self.require(part)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: not readable JSON ({exc}).") from exc
        return A.parse(model, data, source=path)

    def _table(self, part: str, spec: dict[str, A.Column]) -> pd.DataFrame:
        path = self.require(part)
        frame = pd.read_parquet(path)
        A.check_columns(frame, spec, source=path)
        return frame

    # ----------------------------------------------------------------- run.json
    def read_run_json(self) -> A.RunRecord:
        """``run.json`` (empty when the run has not written it yet)."""
        if not self.paths.run_json.exists():
            return A.RunRecord()
        return self._json("run_json", A.RunRecord)

    def update_run_json(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into run.json (dicts merge one level deep, models replace) and
        write it atomically.

        The merged record is checked against :class:`~pipeline.artifacts.RunRecord`
        before it is written.
        """
        path = self.paths.run_json
        data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        for key, value in fields.items():
            if isinstance(value, BaseModel):  # a whole record: replaced, not merged
                data[key] = value.model_dump(mode="json")
            elif isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        data["updated_at"] = now_iso()
        A.parse(A.RunRecord, data, source=path)
        self.root.mkdir(parents=True, exist_ok=True)
        atomic.write_json(path, data)
        return data


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_run_id() -> str:
    """A sortable, human-readable run id: ``20260131-142501-3f2a``."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{int(time.time_ns()) % 0xFFFF:04x}"


def versions() -> dict[str, str]:
    """Versions of Python and of the packages whose behaviour shapes the results."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out
