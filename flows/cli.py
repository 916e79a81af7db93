"""The ``assay`` command: parses arguments, then runs flows or pipeline functions.

Exit codes: 0 success, 2 bad input, 3 a critical expectation failed, 1 anything else
(130 when interrupted).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_CRITICAL = 0, 1, 2, 3

Handler = Callable[[argparse.Namespace], int]


def _version() -> str:
    try:
        return metadata.version("assay")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


# --------------------------------------------------------------------------- helpers
def _print_kv(rows: Sequence[tuple[str, Any]]) -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")


def _dataset_rows(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    counts = summary["class_counts"]
    return [
        ("samples", summary["n"]),
        ("image shape", " x ".join(str(s) for s in summary["image_shape"])),
        ("classes", f"{summary['n_classes']}: {', '.join(summary['class_names'])}"),
        ("class counts", ", ".join(f"{k}={v}" for k, v in counts.items())),
        ("value range", f"{summary['value_range'][0]}..{summary['value_range'][1]}"),
        ("content hash", summary["content_hash"][:16]),
    ]


def _add_data(p: argparse.ArgumentParser, *, default: str | None = None) -> None:
    p.add_argument(
        "--data",
        default=default,
        required=default is None,
        metavar="SPEC",
        help="dataset: 'digits', an MNIST IDX folder, .npz, .csv, an image folder "
        "(one sub-folder per class) or an assay dataset folder"
        + (f" (default: {default})" if default else ""),
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse non-image files in an image folder instead of skipping them",
    )


def _add_compute(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument(
        "--device", default="auto", help="auto, cpu or cuda[:N] (default: auto = cuda if present)"
    )


# --------------------------------------------------------------------------- commands
def cmd_info(args: argparse.Namespace) -> int:
    from assay.pipeline import io

    dataset = io.load(args.data, strict=args.strict)
    summary = dataset.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
        return EXIT_OK
    print(f"{args.data}")
    _print_kv(_dataset_rows(summary))
    return EXIT_OK


def cmd_inject(args: argparse.Namespace) -> int:
    from assay.pipeline import io
    from assay.pipeline.inject import inject

    dataset = io.load(args.data, strict=args.strict)
    dirty = inject(dataset, args.config or args.preset, seed=args.seed)
    out = io.save(dirty, args.out)
    counts = dirty.columns["injected"].value_counts()
    print(f"Wrote {len(dirty)} samples ({len(dataset)} in, seed {args.seed}) to {out}")
    _print_kv([(str(k), int(v)) for k, v in counts.items()])
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from assay.pipeline import io
    from assay.pipeline.runfolder import RunFolder

    dataset = io.load(args.data, strict=args.strict)
    reference = io.load(args.reference) if args.reference else None
    from assay.pipeline.validate import critical_failures_message, validate

    run = RunFolder(Path(args.run_dir))
    result = validate(
        dataset,
        suite_path=args.suite,
        reference=reference,
        out_dir=run.paths.validation,
        data_docs=not args.no_data_docs,
    )
    failed = [r for r in result.results if not r["success"]]
    print(
        f"{len(result.results) - len(failed)}/{len(result.results)} expectations met; "
        f"{len(failed)} failed. Details: {run.paths.validation / 'validation.json'}"
    )
    for r in failed:
        column = f" [{r['column']}]" if r.get("column") else ""
        print(f"  {r['severity']:<8} {r['expectation']}{column}")
    if not result.success_critical:
        print(critical_failures_message(result), file=sys.stderr)
        return EXIT_CRITICAL
    return EXIT_OK


def cmd_expectations_learn(args: argparse.Namespace) -> int:
    from assay.pipeline import io

    dataset = io.load(args.data, strict=args.strict)
    from assay.pipeline.validate import learn_suite

    out = learn_suite(dataset, out_path=Path(args.out))
    print(f"Learned a suite from {len(dataset)} trusted samples: {out}")
    return EXIT_OK


def cmd_detect(args: argparse.Namespace) -> int:
    from assay.pipeline import io
    from assay.pipeline.runfolder import RunFolder

    dataset = io.load(args.data, strict=args.strict)
    from assay.pipeline.detect import run_detection

    run = RunFolder(Path(args.run_dir))
    result = run_detection(
        dataset, out_dir=run.paths.detection, seed=args.seed, device=args.device, folds=args.folds
    )
    counts = result.summary.get("counts", {})
    print(f"Detection on {len(dataset)} samples -> {run.paths.detection / 'issues.parquet'}")
    _print_kv([(k, v) for k, v in counts.items()] or [("issues", 0)])
    return EXIT_OK


def cmd_clean(args: argparse.Namespace) -> int:
    import pandas as pd

    from assay.pipeline import io
    from assay.pipeline.clean import clean, write_cleaned
    from assay.pipeline.runfolder import RunFolder

    run = RunFolder(Path(args.run_dir))
    data = args.data or str(run.paths.dataset)
    dataset = io.load(data)
    issues_path = run.paths.detection / "issues.parquet"
    if not issues_path.exists():
        from assay.pipeline.errors import DataError

        raise DataError(f"{issues_path}: no detection result; run `assay detect` first.")
    issues = pd.read_parquet(issues_path)
    cleaned, decisions = clean(dataset, issues, policy=args.policy)
    write_cleaned(cleaned, decisions, run.paths.cleaned)
    counts = decisions["decision"].value_counts()
    print(f"Cleaned with policy {args.policy!r}: {len(cleaned)} of {len(dataset)} kept")
    _print_kv([(str(k), int(v)) for k, v in counts.items()])
    return EXIT_OK


def cmd_gan(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    from assay.pipeline import io
    from assay.pipeline.generate import compare_gans
    from assay.pipeline.runfolder import RunFolder

    run = RunFolder(Path(args.run_dir))
    for need in (run.paths.dataset, run.paths.detection / "issues.parquet", run.paths.cleaned):
        if not need.exists():
            from assay.pipeline.errors import DataError

            raise DataError(f"{need}: missing; run `assay run` (or detect and clean) first.")
    dirty = io.load(str(run.paths.dataset))
    cleaned = io.load(str(run.paths.cleaned))
    issues = pd.read_parquet(run.paths.detection / "issues.parquet")
    noise_matrix = np.load(run.paths.detection / "noise_matrix.npy", allow_pickle=False)
    metrics = compare_gans(
        dirty,
        cleaned,
        issues,
        noise_matrix=noise_matrix,
        out_dir=run.paths.gan,
        steps=args.steps,
        device=args.device,
        seed=args.seed,
        vae_dir=run.paths.detection,
    )
    for arm, m in metrics.get("arms", {}).items():
        print(
            f"  {arm:<12} label accuracy {m.get('label_accuracy', float('nan')):.3f}  "
            f"FID {m.get('fid', float('nan')):.2f}"
        )
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from assay.pipeline.report import render_report

    path = render_report(Path(args.run_dir))
    print(f"Report: {path}")
    return EXIT_OK


def _run_overrides(args: argparse.Namespace) -> dict[str, Any]:
    keys = (
        "data", "inject", "policy", "steps", "device", "seed", "folds", "runner",
        "run_dir", "runs_root", "suite", "strict",
    )  # fmt: skip
    out = {}
    for key in keys:
        value = getattr(args, key, None)
        if value is not None and value is not False:
            out[key] = value
    return out


def cmd_run(args: argparse.Namespace) -> int:
    from assay.flows.config import load_config
    from assay.flows.main import run_pipeline

    config = load_config(args.config, overrides=_run_overrides(args))
    summary = run_pipeline(config)
    return int(getattr(summary, "exit_code", EXIT_OK))


def cmd_serve(args: argparse.Namespace) -> int:
    from assay.flows.config import load_config
    from assay.flows.serve import serve

    config = load_config(args.config, overrides=_run_overrides(args))
    serve(config, cron=args.cron, name=args.name)
    return EXIT_OK


def cmd_server(args: argparse.Namespace) -> int:
    from assay.flows.serve import start_server

    start_server(host=args.host, port=args.port)
    return EXIT_OK


# --------------------------------------------------------------------------- parser
def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, metavar="SPEC", help="dataset spec (default: digits)")
    p.add_argument("--strict", action="store_true", help="refuse non-image files in folders")
    p.add_argument("--inject", metavar="PRESET", help="inject known dirt first (e.g. mixed-mild)")
    p.add_argument(
        "--policy", choices=("drop", "relabel", "review"), help="cleaning policy (relabel)"
    )
    p.add_argument("--steps", type=int, help="GAN training steps per arm")
    p.add_argument("--device", help="auto, cpu or cuda[:N]")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--folds", type=int, help="folds of the out-of-fold classifier")
    p.add_argument("--suite", metavar="FILE", help="expectation suite (default: the built-in)")
    p.add_argument(
        "--runner", metavar="RUNNER", help="task runner: threads, processes or dask[:ADDRESS]"
    )
    p.add_argument("--run-dir", dest="run_dir", metavar="DIR", help="run folder to write/resume")
    p.add_argument(
        "--runs-root", dest="runs_root", metavar="DIR", help="where new run folders go (runs)"
    )
    p.add_argument("--config", metavar="FILE", help="YAML or TOML file of run parameters")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="assay",
        description="Assay a labelled image dataset: validate it, find the dirty samples, "
        "clean it, and measure what the dirt costs a conditional GAN.",
    )
    parser.add_argument("--version", action="version", version=f"assay {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("run", help="run the whole pipeline as a Prefect flow")
    _add_run_options(p)
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("info", help="print a dataset's size, shape, classes and hash")
    _add_data(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_info)

    p = sub.add_parser("inject", help="write a dirty copy of a dataset, with ground truth")
    _add_data(p)
    p.add_argument("--out", required=True, metavar="DIR", help="dataset folder to write")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--preset", default="mixed-mild", help="preset name (default: mixed-mild)")
    group.add_argument("--config", metavar="FILE", help="JSON or TOML file of injection rates")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.set_defaults(handler=cmd_inject)

    p = sub.add_parser("validate", help="validate a dataset with Great Expectations")
    _add_data(p)
    p.add_argument(
        "--run-dir", dest="run_dir", required=True, metavar="DIR", help="run folder to write into"
    )
    p.add_argument("--suite", metavar="FILE", help="expectation suite JSON (default: built-in)")
    p.add_argument("--reference", metavar="SPEC", help="reference dataset for class balance")
    p.add_argument("--no-data-docs", action="store_true", help="skip building GX Data Docs")
    p.set_defaults(handler=cmd_validate)

    p = sub.add_parser("expectations", help="work with expectation suites")
    esub = p.add_subparsers(dest="expectations_command", metavar="ACTION", required=True)
    q = esub.add_parser("learn", help="fit a suite to a dataset you trust")
    _add_data(q)
    q.add_argument("--out", required=True, metavar="FILE", help="suite JSON to write")
    q.set_defaults(handler=cmd_expectations_learn)

    p = sub.add_parser("detect", help="find mislabelled, outlying and duplicate samples")
    _add_data(p)
    p.add_argument(
        "--run-dir", dest="run_dir", required=True, metavar="DIR", help="run folder to write into"
    )
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (default: 5)")
    _add_compute(p)
    p.set_defaults(handler=cmd_detect)

    p = sub.add_parser("clean", help="turn detections into decisions and a cleaned dataset")
    p.add_argument(
        "--run-dir", dest="run_dir", required=True, metavar="DIR", help="run folder with detection/"
    )
    p.add_argument("--data", metavar="SPEC", help="dataset (default: the run's snapshot)")
    p.add_argument("--policy", default="relabel", choices=("drop", "relabel", "review"))
    p.set_defaults(handler=cmd_clean)

    p = sub.add_parser("gan", help="train the conditional GAN arms and compare them")
    p.add_argument(
        "--run-dir", dest="run_dir", required=True, metavar="DIR", help="run folder with cleaned/"
    )
    p.add_argument("--steps", type=int, default=None, help="training steps per arm")
    _add_compute(p)
    p.set_defaults(handler=cmd_gan)

    p = sub.add_parser("report", help="(re-)render report.html from a run folder")
    p.add_argument("--run-dir", dest="run_dir", required=True, metavar="DIR", help="run folder")
    p.set_defaults(handler=cmd_report)

    p = sub.add_parser("serve", help="serve the pipeline on a cron schedule")
    _add_run_options(p)
    p.add_argument("--cron", required=True, help='cron schedule, e.g. "0 3 * * *"')
    p.add_argument("--name", default="assay-scheduled", help="deployment name")
    p.set_defaults(handler=cmd_serve)

    p = sub.add_parser("server", help="start a local Prefect server (SQLite, loopback)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=4200)
    p.set_defaults(handler=cmd_server)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Data warnings are for the user: print them plainly, without a source line."""
    if category.__name__ == "DataWarning":
        print(f"assay: warning: {message}", file=sys.stderr)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``assay`` console script; returns the exit code.

    Every failure the user can act on ends in one ``assay: error: ...`` line on stderr and
    a non-zero exit: bad input 2 (an unreadable, read-only or full disk included, named
    with its path), a critical expectation 3, Ctrl+C 130, SIGTERM 143. A closed stdout
    (``assay info | head -3``) ends quietly. On SIGINT and SIGTERM, ``finally`` blocks and
    ``atexit`` hooks run, so temporary files are removed and a local Prefect server stops.
    """
    import contextlib
    import errno
    import os
    import signal
    import threading

    from assay.pipeline.errors import AssayError, DataError
    from assay.pipeline.io import check_output_location

    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.showwarning = _show_warning

    terminated = False

    def on_sigterm(signum: int, frame: Any) -> None:
        nonlocal terminated
        terminated = True
        raise KeyboardInterrupt  # unwinds like Ctrl+C: cleanup runs, the run is resumable

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    start = time.perf_counter()
    try:
        inputs = [getattr(args, "data", None), getattr(args, "reference", None)]
        out_kind = "file" if args.command == "expectations" else "folder"
        outputs = (("--run-dir", "run_dir"), ("--runs-root", "runs_root"), ("--out", "out"))
        for option, key in outputs:
            value = getattr(args, key, None)
            if value:
                check_output_location(value, inputs, option=option, kind=out_kind)
        code = args.handler(args)
        sys.stdout.flush()
    except AssayError as exc:
        print(f"assay: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        what = "terminated" if terminated else "interrupted"
        print(f"assay: {what}; finished stages are kept and a re-run resumes.", file=sys.stderr)
        return 143 if terminated else 130
    except BrokenPipeError:
        # The reader went away (`assay info | head -3`): stop quietly, and keep Python from
        # complaining again when it flushes stdout at exit.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 141
    except MemoryError:
        print(
            "assay: error: out of memory; the data or a parameter is too large for this "
            "machine (try a smaller dataset, --device cpu or fewer workers).",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        hint = {
            errno.ENOSPC: " Free some space, or choose another --run-dir / --runs-root.",
            errno.EDQUOT: " Free some space, or choose another --run-dir / --runs-root.",
            errno.EROFS: " The file system is read-only; choose a writable location.",
            errno.EACCES: " Check the permissions, or choose another location.",
            errno.EPERM: " Check the permissions, or choose another location.",
        }.get(exc.errno or 0, "")
        reason = exc.strerror or str(exc)
        print(f"assay: error: {where}{reason}.{hint}", file=sys.stderr)
        return DataError.exit_code
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if args.command != "run" and code == EXIT_OK:
        print(f"done in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
