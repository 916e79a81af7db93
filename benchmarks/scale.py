"""Scale: a mixed-size photo folder, and data sets of 60,000 and 250,000 images.

Scenario ``folder``: an image folder of ``--files`` files (10 classes; sizes 32 to 96 px
drawn per file, non-square included; two thirds colour, one third greyscale; half JPEG,
half PNG; textured coloured shapes on textured backgrounds) is written to a temporary
folder, then loaded with :func:`assay.pipeline.io.load` (the size policy, decoding in
worker processes) and saved in the canonical format. Target: >= 1,500 files/s for the
load on 2 cores with 20,000 files (``--files 20000``). Prints one JSON line: files,
workers, seconds and files/s of the load, its CPU time (this process and the workers) and
files per CPU-second, the chosen image size, seconds of the canonical save, peak RSS of
this process. On a machine other jobs use too, files/s is a lower bound and files per
CPU-second the steadier figure; the load average at the start is recorded.

Scenario ``memory``: sets of ``--base`` (10,000), ``--big`` (60,000) and ``--huge``
(250,000) 28x28 images derived from the real MNIST test set (``../shared/data/mnist``
from the repository, or ``$ASSAY_MNIST``; without it the scenario says so and is skipped)
by small random affine changes (rotation within 10 degrees, scale 0.9 to 1.1, shift
within 1.5 px, bilinear; image ``i`` is a changed copy of MNIST image ``i mod 10,000``),
written as ``.npz`` files. The ``base`` and ``big`` sets go through ``assay validate
--data`` (ingest + validate) then ``assay detect``; the ``huge`` set through ``assay
validate --data``. Every part runs as its own child process of this (small) one, and its
peak RSS is the child's own (``os.wait4``), so parts do not add up. Targets: the ``big``
set's validate + detect time <= 6.5 x the ``base`` set's, measured in the same run; its
peak RSS <= 3 GB; the ``huge`` set's peak RSS <= 2 GB. Prints one JSON line with the
seconds and peak RSS of every part and ``met`` / ``not met`` per target. ``--quick``
uses 1,000 / 6,000 / 25,000 images (a smoke test; its ratios say little).

Run: ``python benchmarks/scale.py [--scenario folder|memory] [--files 4000] [--workers N]
[--quick | --base N --big N --huge N] [--folds F]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assay.pipeline import io  # noqa: E402
from assay.pipeline.formats.image_folder import read_image_folder  # noqa: E402

TARGET_FILES_PER_SECOND = 1500
#: Targets of the ``memory`` scenario.
TARGET_TIME_RATIO = 6.5
TARGET_BIG_PEAK_GB = 3.0
TARGET_HUGE_PEAK_GB = 2.0
SIZES = {"base": 10_000, "big": 60_000, "huge": 250_000}
QUICK_SIZES = {"base": 1_000, "big": 6_000, "huge": 25_000}


def make_folder(root: Path, n_files: int, *, seed: int = 0) -> None:
    """``n_files`` synthetic photos in 10 class folders (see the module docstring)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for c in range(10):
        (root / f"class_{c}").mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        c = i % 10
        h, w = (int(v) for v in rng.integers(32, 97, size=2))
        background = rng.integers(0, 256, 3)
        noise = rng.normal(0, 18, (h, w, 1))
        pixels = np.clip(background + noise, 0, 255).astype(np.uint8)
        img = Image.fromarray(pixels)
        draw = ImageDraw.Draw(img)
        box = sorted(rng.integers(0, w, 2)), sorted(rng.integers(0, h, 2))
        shape = (box[0][0], box[1][0], box[0][1] + 4, box[1][1] + 4)
        fill = tuple(int(v) for v in (np.array([40, 90, 140]) + 12 * c) % 256)
        (draw.ellipse if c % 2 else draw.rectangle)(shape, fill=fill)
        if i % 3 == 2:
            img = img.convert("L")
        path = root / f"class_{c}" / f"{i:06d}"
        if i % 2:
            img.save(path.with_suffix(".jpg"), quality=90)
        else:
            img.save(path.with_suffix(".png"), compress_level=1)


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the decoding workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def folder_scenario(args: argparse.Namespace) -> dict[str, Any]:
    """The ``folder`` scenario (see the module docstring): its JSON line as a dict."""
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "photos"
        t0 = time.perf_counter()
        make_folder(root, args.files)
        made = time.perf_counter() - t0
        t0, cpu0 = time.perf_counter(), _cpu_seconds()
        ds = read_image_folder(root, workers=args.workers, progress=False)
        seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
        t0 = time.perf_counter()
        io.save(ds, Path(tmp) / "dataset")
        saved = time.perf_counter() - t0
    rate = len(ds) / seconds
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    line = {
        "benchmark": "scale",
        "scenario": "folder",
        "files": args.files,
        "loaded": len(ds),
        "workers": args.workers or min(len(os.sched_getaffinity(0)), -(-args.files // 128)),
        "cores": len(os.sched_getaffinity(0)),
        "load_average_at_start": [round(x, 2) for x in load],
        "image_shape": list(ds.images.shape[1:]),
        "size_policy": ds.meta["size_policy"]["image_size"],
        "n_resized": ds.meta["size_policy"]["n_resized"],
        "seconds_to_write_the_folder": round(made, 2),
        "load_seconds": round(seconds, 2),
        "files_per_second": round(rate, 1),
        "load_cpu_seconds": round(cpu, 2),
        "files_per_cpu_second": round(len(ds) / max(cpu, 1e-9), 1),
        "save_seconds": round(saved, 2),
        "peak_rss_mb": round(peak_mb, 1),
        "target_files_per_second_min": TARGET_FILES_PER_SECOND,
        "met": bool(rate >= TARGET_FILES_PER_SECOND),
    }
    return line




# ------------------------------------------------------------------------- memory scenario
def make_affine_set(n: int, out: Path, *, seed: int = 0) -> None:
    """Write ``n`` small random affine changes of the MNIST test set to ``out`` (.npz).

    Image ``i`` is MNIST image ``i mod 10,000`` rotated within 10 degrees, scaled by 0.9
    to 1.1 and shifted within 1.5 px about its centre (bilinear, ``scipy.ndimage``); its
    label is that image's label. Runs in a child process of the benchmark, so that the
    benchmark process itself stays small (a child's peak RSS includes its parent's at
    the time it starts).
    """
    from scipy import ndimage

    mnist = io.load(str(io.default_mnist_path()))
    rng = np.random.default_rng(seed)
    h, w = mnist.images.shape[1:]
    images = np.empty((n, h, w), dtype=np.uint8)
    source = np.arange(n) % len(mnist)
    grid = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij")).reshape(2, -1)
    centre = np.array([[(h - 1) / 2], [(w - 1) / 2]])
    for rows in range(0, n, 4096):
        idx = np.arange(rows, min(rows + 4096, n))
        m = len(idx)
        angle = np.deg2rad(rng.uniform(-10, 10, m))
        scale = rng.uniform(0.9, 1.1, m)
        shift = rng.uniform(-1.5, 1.5, (m, 2, 1))
        cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
        inverse = np.stack([np.stack([cos, sin], 1), np.stack([-sin, cos], 1)], 1)  # (m, 2, 2)
        where = inverse @ (grid[None] - centre[None] - shift) + centre[None]  # (m, 2, H*W)
        coords = np.concatenate(
            [np.repeat(np.arange(m), h * w)[None], where.transpose(1, 0, 2).reshape(2, -1)]
        )
        batch = mnist.images[source[idx]].astype(np.float32)
        moved = ndimage.map_coordinates(batch, coords, order=1, mode="constant", cval=0.0)
        images[idx] = np.clip(np.rint(moved), 0, 255).astype(np.uint8).reshape(m, h, w)
    np.savez(out, images=images, labels=mnist.labels[source])


def _child(argv: list[str], what: str, log: Path) -> dict[str, float]:
    """Run ``argv`` as a child process: its seconds and its own peak RSS (MB).

    The child's stderr goes to ``log``; a failure raises with its tail.
    """
    t0 = time.perf_counter()
    with open(log, "w") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def _say(msg: str) -> None:
    print(f"[scale] {msg}", file=sys.stderr, flush=True)


def memory_scenario(args: argparse.Namespace) -> dict[str, Any]:
    """The ``memory`` scenario (see the module docstring): its JSON line as a dict."""
    line: dict[str, Any] = {"benchmark": "scale", "scenario": "memory"}
    mnist = io.default_mnist_path()
    if not mnist.exists():
        _say(f"MNIST test set not found at {mnist} (set ASSAY_MNIST); memory scenario skipped")
        return {**line, "skipped": f"MNIST test set not found at {mnist}"}
    sizes = dict(QUICK_SIZES if args.quick else SIZES)
    for name in sizes:
        if getattr(args, name) is not None:
            sizes[name] = getattr(args, name)
    cli = [sys.executable, "-m", "assay.flows.cli"]
    line.update(
        sizes=sizes,
        folds=args.folds,
        cores=len(os.sched_getaffinity(0)),
        load_average_at_start=[round(x, 2) for x in os.getloadavg()],
    )
    parts: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="assay-scale-") as tmp:
        root = Path(tmp)
        for name, n in sizes.items():
            data = root / f"{name}.npz"
            _say(f"{name}: writing {n:,} changed MNIST images")
            made = _child(
                [sys.executable, __file__, "--make-set", str(n), "--out", str(data)],
                f"making the {name} set", root / f"{name}-make.log",
            )  # fmt: skip
            _say(f"{name}: written in {made['seconds']} s")
            run_dir = root / f"run-{name}"
            steps = [("validate", ["validate", "--data", str(data)])]
            if name != "huge":
                steps.append(("detect", ["detect", "--folds", str(args.folds)]))
            for step, extra in steps:
                _say(f"{name}: assay {step} on {n:,} images ...")
                key = f"{name}_{'ingest_validate' if step == 'validate' else step}"
                parts[key] = _child(
                    [*cli, *extra, "--run-dir", str(run_dir), "--quiet"],
                    f"assay {step} on the {name} set", root / f"{key}.log",
                )  # fmt: skip
                _say(f"{name}: {step} {parts[key]['seconds']} s, peak RSS "
                     f"{parts[key]['peak_rss_mb']:.0f} MB")  # fmt: skip
            (root / f"{name}.npz").unlink()
            if name != "huge":
                shutil.rmtree(run_dir, ignore_errors=True)

    def total(name: str) -> float:
        return parts[f"{name}_ingest_validate"]["seconds"] + parts[f"{name}_detect"]["seconds"]

    ratio = total("big") / total("base")
    big_peak = max(parts["big_ingest_validate"]["peak_rss_mb"], parts["big_detect"]["peak_rss_mb"])
    huge_peak = parts["huge_ingest_validate"]["peak_rss_mb"]
    targets = {
        "big_time_ratio": (ratio, TARGET_TIME_RATIO),
        "big_peak_rss_gb": (big_peak / 1024, TARGET_BIG_PEAK_GB),
        "huge_peak_rss_gb": (huge_peak / 1024, TARGET_HUGE_PEAK_GB),
    }
    line.update(
        parts=parts,
        base_seconds=round(total("base"), 1),
        big_seconds=round(total("big"), 1),
        load_average_at_end=[round(x, 2) for x in os.getloadavg()],
        targets={
            k: {"value": round(v, 3), "max": t, "met": "met" if v <= t else "not met"}
            for k, (v, t) in targets.items()
        },
        met=all(v <= t for v, t in targets.values()),
    )
    return line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", choices=("folder", "memory", "all"), default="all")
    ap.add_argument("--files", type=int, default=4000, help="folder: image files")
    ap.add_argument("--workers", type=int, default=None, help="folder: decoding processes")
    ap.add_argument("--quick", action="store_true", help="memory: 1,000 / 6,000 / 25,000 images")
    for name, n in SIZES.items():
        ap.add_argument(f"--{name}", type=int, default=None, help=f"memory: default {n:,}")
    ap.add_argument("--folds", type=int, default=5, help="memory: folds of assay detect")
    ap.add_argument("--make-set", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.make_set is not None:  # the child that writes one data set
        make_affine_set(args.make_set, args.out)
        return 0
    if args.scenario in ("folder", "all"):
        print(json.dumps(folder_scenario(args)), flush=True)
    if args.scenario in ("memory", "all"):
        print(json.dumps(memory_scenario(args)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
