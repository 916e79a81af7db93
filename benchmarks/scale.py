"""Scale: ingesting a folder of mixed-size photos, and the canonical dataset on disk.

Scenario ``folder``: an image folder of ``--files`` files (10 classes; sizes 32 to 96 px
drawn per file, non-square included; two thirds colour, one third greyscale; half JPEG,
half PNG; textured coloured shapes on textured backgrounds) is written to a temporary
folder, then loaded with :func:`assay.pipeline.io.load` (the size policy, decoding in
worker processes) and saved in the canonical format. Target: >= 1,500 files/s for the
load on 2 cores with 20,000 files (``--files 20000``).

Prints one JSON line: files, workers, seconds and files/s of the load, its CPU time (this
process and the workers) and files per CPU-second, the chosen image size, seconds of the
canonical save, peak RSS of this process. On a machine other jobs use too, files/s is a
lower bound and files per CPU-second the steadier figure; the load average at the start is
recorded.

Run: ``python benchmarks/scale.py [--files 4000] [--workers N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assay.pipeline import io  # noqa: E402
from assay.pipeline.formats.image_folder import read_image_folder  # noqa: E402

TARGET_FILES_PER_SECOND = 1500


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=4000)
    ap.add_argument("--workers", type=int, default=None, help="decoding processes")
    args = ap.parse_args(argv)

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
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
