"""Time and memory of loading and saving datasets; prints one JSON line.

Measures, for the real MNIST test set (10,000 images, when present) and for a synthetic
60,000-image 28x28 set written to a temporary folder:

- loading from gzip-compressed IDX files;
- saving the canonical format (``images.npy`` + ``manifest.parquet`` + ``dataset.json``);
- loading the canonical format (memory-mapped), and that load plus one read of every pixel.

Seconds are the median of ``--repeat`` runs; ``*_peak_mb`` is the tracemalloc peak of one
further run (Python and numpy heap allocations; pages of a memory-mapped file are not
heap and are not counted). Targets: MNIST IDX load <= 0.5 s, canonical load of 60k
images <= 1 s.

Usage: ``python benchmarks/io.py [--repeat 3] [--n 60000]``
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

try:
    from assay.pipeline.io import default_mnist_path, load, save
except ModuleNotFoundError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from assay.pipeline.io import default_mnist_path, load, save

TARGETS = {"mnist_idx_load_s": 0.5, "canonical_load_60k_s": 1.0}


def measure(fn: Callable[[], Any], *, repeat: int) -> tuple[float, float, Any]:
    """Median seconds over ``repeat`` calls, tracemalloc peak (MB) of one more, last result."""
    times = []
    result = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
        del result
    tracemalloc.start()
    try:
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return round(statistics.median(times), 4), round(peak / 2**20, 2), result


def write_idx_gz(folder: Path, images: np.ndarray, labels: np.ndarray) -> None:
    n, h, w = images.shape
    head = (2051).to_bytes(4, "big") + np.array([n, h, w], ">u4").tobytes()
    (folder / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(head + images.tobytes(), compresslevel=6)
    )
    head = (2049).to_bytes(4, "big") + np.array([n], ">u4").tobytes()
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(head + labels.astype(np.uint8).tobytes(), compresslevel=6)
    )


def synthetic(n: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-like sparsity: about 19% of pixels inked, the rest 0."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    images[rng.random((n, 28, 28)) >= 0.19] = 0
    labels = rng.integers(0, 10, size=n)
    return images, labels


def touch(ds: Any) -> int:
    return int(np.asarray(ds.images, dtype=np.uint8).sum(dtype=np.uint64))


def bench_set(prefix: str, spec: Path, work: Path, *, repeat: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out[f"{prefix}_idx_load_s"], out[f"{prefix}_idx_load_peak_mb"], ds = measure(
        lambda: load(spec), repeat=repeat
    )
    out[f"{prefix}_n"] = len(ds)
    canon = work / f"{prefix}-canonical"
    out[f"{prefix}_canonical_save_s"], out[f"{prefix}_canonical_save_peak_mb"], _ = measure(
        lambda: save(ds, canon), repeat=repeat
    )
    out[f"{prefix}_canonical_load_s"], out[f"{prefix}_canonical_load_peak_mb"], back = measure(
        lambda: load(canon), repeat=repeat
    )
    out[f"{prefix}_canonical_load_touch_s"], _, _ = measure(
        lambda: touch(load(canon)), repeat=repeat
    )
    assert np.array_equal(back.images, ds.images) and np.array_equal(back.labels, ds.labels)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per measurement")
    parser.add_argument("--n", type=int, default=60_000, help="synthetic set size")
    args = parser.parse_args(argv)

    result: dict[str, Any] = {"benchmark": "io", "repeat": args.repeat}
    mnist = default_mnist_path()
    result["mnist_available"] = mnist.is_dir() and any(mnist.glob("*-images-idx3-ubyte*"))
    with tempfile.TemporaryDirectory(prefix="assay-bench-io-") as tmp:
        work = Path(tmp)
        if result["mnist_available"]:
            result.update(bench_set("mnist", mnist, work, repeat=args.repeat))
        images, labels = synthetic(args.n)
        (work / "synthetic").mkdir()
        write_idx_gz(work / "synthetic", images, labels)
        del images, labels
        stats = bench_set("synthetic", work / "synthetic", work, repeat=args.repeat)
        result.update(stats)
    result["canonical_load_60k_s"] = result["synthetic_canonical_load_s"]
    measured = {
        "mnist_idx_load_s": result.get("mnist_idx_load_s"),
        "canonical_load_60k_s": result["canonical_load_60k_s"] if args.n == 60_000 else None,
    }
    result["targets"] = TARGETS
    result["targets_met"] = {
        k: (None if measured[k] is None else bool(measured[k] <= TARGETS[k])) for k in TARGETS
    }
    result["note"] = (
        "seconds: median of repeat runs; peak_mb: tracemalloc peak of one more run (heap "
        "only; memory-mapped pages not counted); canonical_load_touch_s adds one read of "
        "every pixel"
    )
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
