"""Time the validate stage and print one JSON line.

Measures, after every import: profiling the MNIST test set (10,000 images), profiling a
60,000-image set (the MNIST test set six times, each copy marked by one pixel so that no
two images are equal), and validating that 60,000-row profile with the default suite
(no Data Docs). Without MNIST the 60,000 images are digits scaled up to 28x28.

Targets on two CPU cores: profile 60k <= 2 s, validate 60k rows <= 2 s. ``cpu_s`` is the
process CPU time, which a machine shared with other jobs inflates less than wall time.

Run: ``python benchmarks/validate.py``
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import great_expectations  # noqa: E402,F401  (imported before timing)

from assay.pipeline import io  # noqa: E402
from assay.pipeline.dataset import Dataset  # noqa: E402
from assay.pipeline.profile import profile  # noqa: E402
from assay.pipeline.validate import validate  # noqa: E402

TARGETS = {"profile_60k_s": 2.0, "validate_60k_s": 2.0}


def _timed(fn: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def _source() -> tuple[Dataset, str]:
    path = io.default_mnist_path()
    try:
        return io.load(str(path)), "mnist"
    except Exception:  # absent or unreadable: fall back to the bundled digits
        digits = io.load("digits")
        big = np.kron(digits.images, np.ones((3, 3), dtype=np.uint8))
        big = np.pad(big, ((0, 0), (2, 2), (2, 2)))
        return Dataset.create(big, digits.labels, digits.class_names), "digits_28x28"


def _sixty_thousand(base: Dataset) -> Dataset:
    reps = -(-60000 // len(base))
    images = np.concatenate([base.images] * reps)[:60000].copy()
    copy = np.repeat(np.arange(reps), len(base))[:60000]
    images[:, 0, 0] = np.where(copy > 0, copy, images[:, 0, 0]).astype(np.uint8)
    labels = np.concatenate([base.labels] * reps)[:60000]
    return Dataset.create(images, labels, base.class_names)


def main() -> dict[str, Any]:
    base, source = _source()
    big = _sixty_thousand(base)
    out: dict[str, Any] = {"source": source, "n_base": len(base), "n_big": len(big)}

    _, wall, cpu = _timed(lambda: profile(base))
    out["profile_base_s"], out["profile_base_cpu_s"] = round(wall, 3), round(cpu, 3)
    prof, wall, cpu = _timed(lambda: profile(big))
    out["profile_60k_s"], out["profile_60k_cpu_s"] = round(wall, 3), round(cpu, 3)

    # first call after import (GX builds its expectation registry lazily), then warm calls
    result, wall, cpu = _timed(lambda: validate(big, profile_table=prof, data_docs=False))
    out["validate_60k_first_s"], out["validate_60k_first_cpu_s"] = round(wall, 3), round(cpu, 3)
    warm = [_timed(lambda: validate(big, profile_table=prof, data_docs=False)) for _ in range(2)]
    out["validate_60k_s"] = round(min(w for _, w, _ in warm), 3)
    out["validate_60k_cpu_s"] = round(min(c for _, _, c in warm), 3)
    out["validate_60k_expectations"] = len(result.results)
    out["validate_60k_failed"] = [r["expectation"] for r in result.failed]

    out["targets_s"] = TARGETS
    out["targets_met"] = {k: out[k] <= v for k, v in TARGETS.items()}
    out["targets_met_first_call"] = out["validate_60k_first_s"] <= TARGETS["validate_60k_s"]
    out["cpu_count"] = os.cpu_count()
    out["load_average_1min"] = round(os.getloadavg()[0], 2)
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
