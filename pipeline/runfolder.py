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
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

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
    """Every file name of a run folder. No other code spells these names."""

    root: Path

    @property
    def dataset(self) -> Path:
        return self.root / "dataset"

    @property
    def validation(self) -> Path:
        return self.root / "validation"

    @property
    def validation_json(self) -> Path:
        return self.validation / "validation.json"

    @property
    def sample_flags(self) -> Path:
        return self.validation / "sample_flags.parquet"

    @property
    def detection(self) -> Path:
        return self.root / "detection"

    @property
    def issues(self) -> Path:
        return self.detection / "issues.parquet"

    @property
    def noise_matrix(self) -> Path:
        return self.detection / "noise_matrix.npy"

    @property
    def detection_summary(self) -> Path:
        return self.detection / "summary.json"

    @property
    def cleaned(self) -> Path:
        return self.root / "cleaned"

    @property
    def decisions(self) -> Path:
        return self.cleaned / "decisions.parquet"

    @property
    def gan(self) -> Path:
        return self.root / "gan"

    @property
    def gan_metrics(self) -> Path:
        return self.gan / "metrics.json"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"


@dataclass(frozen=True)
class RunFolder:
    """One run folder: its paths (:attr:`paths`) and typed readers of its artifacts.

    Creating the object creates nothing on disk. Each reader raises
    :class:`MissingArtifactError` (exit 2) naming the stage to run first when its
    artifact is not there.
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

    # ----------------------------------------------------------------- readers
    def dataset(self) -> Dataset:
        """The ingested snapshot."""
        from assay.pipeline import io

        return io.load(str(self.require("dataset")))

    def cleaned(self) -> Dataset:
        """The cleaned dataset (its manifest carries the decisions)."""
        from assay.pipeline import io

        return io.load(str(self.require("cleaned")))

    def issues(self) -> pd.DataFrame:
        """``detection/issues.parquet``: one row per sample, keyed by ``sample_id``."""
        return pd.read_parquet(self.require("issues"))

    def noise_matrix(self) -> np.ndarray:
        """The estimated noise matrix, shape ``(K, K)``: P(given label i | true label j)."""
        return np.load(self.require("noise_matrix"), allow_pickle=False)

    def detection_summary(self) -> dict[str, Any]:
        return json.loads(self.require("detection_summary").read_text())

    def validation(self) -> dict[str, Any]:
        return json.loads(self.require("validation_json").read_text())

    def sample_flags(self) -> pd.DataFrame:
        return pd.read_parquet(self.require("sample_flags"))

    def decisions(self) -> pd.DataFrame:
        return pd.read_parquet(self.require("decisions"))

    def gan_metrics(self) -> dict[str, Any]:
        return json.loads(self.require("gan_metrics").read_text())

    # ----------------------------------------------------------------- run.json
    def read_run_json(self) -> dict[str, Any]:
        if not self.paths.run_json.exists():
            return {}
        return json.loads(self.paths.run_json.read_text())

    def update_run_json(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into run.json (dicts merge one level deep) and write it atomically."""
        data = self.read_run_json()
        for key, value in fields.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        data["updated_at"] = now_iso()
        self.root.mkdir(parents=True, exist_ok=True)
        atomic.write_json(self.paths.run_json, data)
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
