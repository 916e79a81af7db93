"""Benchmark the whole pipeline as a user runs it: ``assay run``, then the same run again.

Each run is the real command (``python -m flows.cli run ...``) in a fresh process, so the
times include Python start-up and Prefect's ephemeral API server. The first run computes
every stage; the second, identical one must come from the cache. Both the command's wall
time and the flow's own time (``run.json`` ``seconds``) are reported.

Targets (issue 6, on two CPU cores):

- ``digits`` end to end <= 4 min;
- the MNIST test set with the benchmark budget <= 25 min (``--mnist``);
- the cached run <= 10% of the first (flow time);
- ``report.html`` <= 5 MB.

Usage::

    python benchmarks/flow.py                      # digits with injected dirt
    python benchmarks/flow.py --mnist              # the real MNIST test set
    python benchmarks/flow.py --runner dask --json out.json

Prints a table on stderr and the figures as one JSON line on stdout (also written to
``--json``, default ``<runs root>/benchmark-flow.json``). Exit status 0 when every
target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

TARGETS = {
    "digits_seconds": 4 * 60,
    "mnist_seconds": 25 * 60,
    "cached_fraction": 0.10,
    "report_bytes": 5 * 1024 * 1024,
}


def _latest_run(runs_root: Path, known: set[str]) -> Path:
    new = [p for p in runs_root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    new = [p for p in new if p.name not in known]
    if len(new) != 1:
        raise RuntimeError(f"expected one new run folder in {runs_root}, found {new}")
    return new[0]


def run_once(args: argparse.Namespace, runs_root: Path, data: str) -> dict[str, Any]:
    """One ``assay run`` in a fresh process; its wall time and run.json figures."""
    known = {p.name for p in runs_root.iterdir()} if runs_root.exists() else set()
    cmd = [
        sys.executable, "-m", "assay.flows.cli", "run",
        "--data", data,
        "--runs-root", str(runs_root),
        "--folds", str(args.folds),
        "--device", args.device,
        "--seed", str(args.seed),
        "--runner", args.runner,
    ]  # fmt: skip
    if args.steps is not None:  # else the run's own default: chosen for the data and device
        cmd += ["--steps", str(args.steps)]
    if args.inject:
        cmd += ["--inject", args.inject]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=os.environ.copy())
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"assay run failed with exit status {proc.returncode}")
    run_dir = _latest_run(runs_root, known)
    info = json.loads((run_dir / "run.json").read_text())
    report = run_dir / "report.html"
    return {
        "run_id": run_dir.name,
        "wall_seconds": round(wall, 2),
        "flow_seconds": info.get("seconds"),
        "stage_seconds": info.get("timings", {}),
        "stage_states": {s: v.get("state") for s, v in info.get("stages", {}).items()},
        "verdict": (info.get("verdict") or {}).get("text"),
        "report_bytes": report.stat().st_size if report.exists() else None,
        "unchanged_since": info.get("unchanged_since"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist", action="store_true", help="the real MNIST test set")
    parser.add_argument("--data", default=None, help="data spec (default: digits)")
    parser.add_argument("--inject", default="mixed-mild", help="injection preset ('' for none)")
    parser.add_argument("--steps", type=int, default=None, help="GAN steps per arm")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runner", default="threads")
    parser.add_argument("--runs-root", type=Path, default=None, help="default: a temp folder")
    parser.add_argument("--json", type=Path, default=None, help="where to write the figures")
    args = parser.parse_args(argv)

    if args.mnist:
        sys.path.insert(0, str(REPO))
        from assay.pipeline.io import default_mnist_path

        data = str(default_mnist_path())
        if not Path(data).exists():
            raise SystemExit(f"MNIST not found at {data}; set ASSAY_MNIST.")
    else:
        data = args.data or "digits"
    runs_root = args.runs_root or Path(tempfile.mkdtemp(prefix="assay-bench-"))
    runs_root.mkdir(parents=True, exist_ok=True)

    first = run_once(args, runs_root, data)
    second = run_once(args, runs_root, data)
    fraction = (
        second["flow_seconds"] / first["flow_seconds"] if first["flow_seconds"] else None
    )
    limit = TARGETS["mnist_seconds"] if args.mnist else TARGETS["digits_seconds"]
    checks = {
        "end_to_end": first["wall_seconds"] <= limit,
        "cached_fraction": fraction is not None and fraction <= TARGETS["cached_fraction"],
        "cached_all_stages": set(second["stage_states"].values()) <= {"cached", "skipped"},
        "report_size": (first["report_bytes"] or 0) <= TARGETS["report_bytes"],
    }
    result = {
        "data": data,
        "inject": args.inject,
        "steps": args.steps,
        "folds": args.folds,
        "device": args.device,
        "runner": args.runner,
        "cpu_count": len(os.sched_getaffinity(0)),
        "first": first,
        "cached": second,
        "cached_fraction_flow": None if fraction is None else round(fraction, 4),
        "cached_fraction_wall": round(second["wall_seconds"] / first["wall_seconds"], 4),
        "targets": {**TARGETS, "end_to_end_seconds": limit},
        "checks": checks,
    }
    out = args.json or runs_root / "benchmark-flow.json"
    out.write_text(json.dumps(result, indent=2) + "\n")

    def say(line: str) -> None:
        print(line, file=sys.stderr)

    say(f"data {data}  inject {args.inject or '-'}  steps {args.steps or 'auto'}  "
        f"folds {args.folds}  runner {args.runner}  device {args.device}")  # fmt: skip
    say(f"{'':<10}{'wall s':>10}{'flow s':>10}")
    for name, r in (("first", first), ("cached", second)):
        say(f"{name:<10}{r['wall_seconds']:>10.1f}{(r['flow_seconds'] or 0):>10.1f}")
    say("stage seconds (first): " + ", ".join(
        f"{s} {v:.1f}" for s, v in first["stage_seconds"].items()))  # fmt: skip
    say(f"cached / first (flow): {result['cached_fraction_flow']}  "
        f"(wall: {result['cached_fraction_wall']})")  # fmt: skip
    say(f"report: {first['report_bytes']} bytes")
    for name, ok in checks.items():
        say(f"  {'ok  ' if ok else 'MISS'} {name}")
    say(f"figures: {out}")
    print(json.dumps(result), flush=True)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
