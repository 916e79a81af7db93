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
from typing import Any

from pipeline import atomic

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


@dataclass(frozen=True)
class RunFolder:
    """Paths of one run folder. Creating the object creates nothing on disk."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def dataset(self) -> Path:
        return self.root / "dataset"

    @property
    def validation(self) -> Path:
        return self.root / "validation"

    @property
    def detection(self) -> Path:
        return self.root / "detection"

    @property
    def cleaned(self) -> Path:
        return self.root / "cleaned"

    @property
    def gan(self) -> Path:
        return self.root / "gan"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    def read_run_json(self) -> dict[str, Any]:
        if not self.run_json.exists():
            return {}
        return json.loads(self.run_json.read_text())

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
        atomic.write_json(self.run_json, data)
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
