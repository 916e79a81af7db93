"""The ``assay`` command: parses arguments, then runs flows or pipeline functions.

Exit codes: 0 success, 2 bad input, 3 a critical expectation failed, 1 anything else
(130 when interrupted with Ctrl+C, 143 on SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_CRITICAL = 0, 1, 2, 3
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143
_RESUMES = "finished stages are kept and a re-run resumes."
INTERRUPTED_MESSAGE = f"assay: interrupted; {_RESUMES}"
TERMINATED_MESSAGE = f"assay: terminated; {_RESUMES}"

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


_DATA_HELP = (
    "dataset: 'digits', an MNIST IDX folder, .npz, .csv, an image folder (one sub-folder "
    "per class) or an assay dataset folder"
)


def _add_data(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    help_text = _DATA_HELP if required else _DATA_HELP + "; snapshot into the run folder " \
        "(default: the dataset the run folder holds)"
    p.add_argument("--data", required=required, metavar="SPEC", help=help_text)
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse non-image files in an image folder instead of skipping them",
    )
    _add_image_policy(p)


def _add_image_policy(p: argparse.ArgumentParser, *, defaults: bool = True) -> None:
    p.add_argument(
        "--image-size", dest="image_size", type=int, metavar="N",
        help="scale an image folder's images to N x N (8..1024; default: the folder's typical "
        "size, at most 64 px on the longer side)",
    )  # fmt: skip
    p.add_argument(
        "--image-fit", dest="image_fit", choices=("pad", "crop"),
        default="pad" if defaults else None,
        help="keep an image folder's aspect ratios by padding (in each image's border "
             "colour) or centre crop"
        + ("" if defaults else _run_default("image_fit")),
    )  # fmt: skip


def _add_output(p: argparse.ArgumentParser, *, json_too: bool = True) -> None:
    if json_too:
        p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")


def _add_run_dir(p: argparse.ArgumentParser, help_text: str) -> None:
    p.add_argument("--run-dir", dest="run_dir", required=True, metavar="DIR", help=help_text)


def _add_compute(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")


# --------------------------------------------------------------------------- commands
def cmd_info(args: argparse.Namespace) -> int:
    from assay.pipeline import io

    dataset = io.load(args.data, strict=args.strict, image_size=args.image_size,
                      image_fit=args.image_fit)  # fmt: skip
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

    dataset = io.load(args.data, strict=args.strict, image_size=args.image_size,
                      image_fit=args.image_fit)  # fmt: skip
    dirty = inject(dataset, args.config or args.preset, seed=args.seed)
    out = io.save(dirty, args.out)
    counts = dirty.columns["injected"].value_counts()
    print(f"Wrote {len(dirty)} samples ({len(dataset)} in, seed {args.seed}) to {out}")
    _print_kv([(str(k), int(v)) for k, v in counts.items()])
    return EXIT_OK


# --------------------------------------------------------------------------- stage commands
def _emit(args: argparse.Namespace, document: dict[str, Any], lines: Sequence[str]) -> None:
    """One JSON document on stdout with ``--json``; otherwise the lines for people."""
    if getattr(args, "json", False):
        print(json.dumps(document, indent=2, default=str))
    elif not getattr(args, "quiet", False):
        for line in lines:
            print(line)


def _stage_run(args: argparse.Namespace) -> Any:
    from assay.pipeline.runfolder import RunFolder

    return RunFolder(Path(args.run_dir).expanduser().resolve())


@contextlib.contextmanager
def _all_or_nothing(run: Any) -> Iterator[None]:
    """A stage command that fails leaves the run folder as it found it.

    The stage's own folder is written atomically; this undoes what the command did
    before it (a snapshot of ``--data``, its note in run.json, a new run folder).
    """
    import shutil

    existed = run.root.exists()
    had_dataset = run.paths.dataset.exists()
    record = run.paths.run_json.read_bytes() if run.paths.run_json.exists() else None
    try:
        yield
    except BaseException:
        if not existed:
            shutil.rmtree(run.root, ignore_errors=True)
        else:
            if not had_dataset and run.paths.dataset.exists():
                shutil.rmtree(run.paths.dataset, ignore_errors=True)
            if record is not None:
                from assay.pipeline.atomic import write_bytes

                write_bytes(run.paths.run_json, record)
            elif run.paths.run_json.exists():
                run.paths.run_json.unlink()
        raise


def _record(run: Any, stage: str, parameters: dict[str, Any], summary: Any) -> None:
    """Note a stage command's parameters and outcome in run.json (a later resume reads them)."""
    from assay.pipeline.runfolder import now_iso, versions

    record = run.read_run_json()
    fields: dict[str, Any] = {
        "parameters": {**record.parameters, **parameters},
        "stages": {stage: {"state": "done", "seconds": summary.seconds,
                           "finished_at": now_iso()}},
        "hashes": {stage: summary.output_hash},
    }  # fmt: skip
    if record.run_id is None:
        fields.update(run_id=run.run_id, started_at=now_iso(), versions=versions())
    run.update_run_json(**fields)


def _ensure_dataset(run: Any, args: argparse.Namespace) -> None:
    """Snapshot ``--data`` into the run folder unless it already holds that dataset."""
    from assay.pipeline import stages
    from assay.pipeline.errors import DataError

    if not args.data:
        run.require("dataset")
        return
    params = stages.IngestParams(data=args.data, inject=getattr(args, "inject", None),
                                 seed=args.seed, strict=args.strict,
                                 image_size=args.image_size, image_fit=args.image_fit)  # fmt: skip
    dataset, raw_hash = stages.load_input(params)
    if run.paths.dataset.exists():
        held = run.dataset().content_hash()
        if held != dataset.content_hash():
            raise DataError(
                f"{run.paths.dataset}: the run folder already holds a different dataset than "
                f"--data {args.data}; use a new --run-dir, or leave out --data to use it."
            )
        return
    summary = stages.ingest(run, dataset, raw_hash=raw_hash)
    _record(run, "ingest", stages.params_dict(params), summary)


def cmd_validate(args: argparse.Namespace) -> int:
    from assay.pipeline import stages

    params = stages.ValidateParams(suite=args.suite, reference=args.reference,
                                   data_docs=args.data_docs)  # fmt: skip
    run = _stage_run(args)
    with _all_or_nothing(run):
        _ensure_dataset(run, args)
        summary = stages.validate(run, params)
        _record(run, "validate", stages.params_dict(params), summary)
    met = summary.n_expectations - summary.n_failed
    lines = [f"{met}/{summary.n_expectations} expectations met; {summary.n_failed} failed. "
             f"Details: {run.paths.validation_json}"]  # fmt: skip
    for r in summary.failed:
        column = f" [{r['column']}]" if r.get("column") else ""
        lines.append(f"  {r['severity']:<8} {r['expectation']}{column}")
    _emit(args, summary.model_dump(mode="json"), lines)
    if not summary.success_critical:
        print(summary.critical_message, file=sys.stderr)
        return EXIT_CRITICAL
    return EXIT_OK


def cmd_expectations_learn(args: argparse.Namespace) -> int:
    from assay.pipeline import io
    from assay.pipeline.validate import learn_suite

    dataset = io.load(args.data, strict=args.strict, image_size=args.image_size,
                      image_fit=args.image_fit)  # fmt: skip
    out = learn_suite(dataset, out_path=Path(args.out), base_suite=args.suite)
    print(f"Learned a suite from {len(dataset)} trusted samples: {out} "
          f"(use it with --suite {out})")  # fmt: skip
    return EXIT_OK


def cmd_detect(args: argparse.Namespace) -> int:
    from assay.pipeline import stages

    params = stages.DetectParams(folds=args.folds, seed=args.seed, device=args.device)
    run = _stage_run(args)
    with _all_or_nothing(run):
        _ensure_dataset(run, args)
        summary = stages.detect(run, params, progress=not (args.quiet or args.json))
        _record(run, "detect", stages.params_dict(params), summary)
    lines = [f"Detection on {summary.n} samples -> {run.paths.issues}"]
    lines += [f"  {k:<24} {v}" for k, v in summary.counts.items()]
    _emit(args, summary.model_dump(mode="json"), lines)
    return EXIT_OK


def cmd_clean(args: argparse.Namespace) -> int:
    from assay.pipeline import stages

    run = _stage_run(args)
    decisions = str(Path(args.decisions).expanduser().resolve()) if args.decisions else None
    params = stages.CleanParams(policy=args.policy, decisions=decisions)
    summary = stages.clean(run, params)
    _record(run, "clean", stages.params_dict(params), summary)
    lines = [f"Cleaned with policy {args.policy!r}: {summary.n_out} of {summary.n_in} kept"]
    lines += [f"  {k:<8} {v}" for k, v in summary.decisions.items()]
    _emit(args, summary.model_dump(mode="json"), lines)
    return EXIT_OK


def cmd_gan(args: argparse.Namespace) -> int:
    from assay.pipeline import stages

    run = _stage_run(args)
    params = stages.GenerateParams(steps=args.steps, seed=args.seed, device=args.device,
                                   seeds=args.seeds)  # fmt: skip
    summary = stages.generate(run, params, progress=not (args.quiet or args.json))
    _record(run, "generate", stages.params_dict(params), summary)
    lines = []
    for arm, m in summary.arms.items():
        acc, fid = m.get("label_accuracy"), m.get("fid")
        lines.append(f"  {arm:<12} label accuracy "
                     f"{'n/a' if acc is None else f'{acc:.3f}'}  FID "
                     f"{'n/a' if fid is None else f'{fid:.2f}'}")  # fmt: skip
    _emit(args, summary.model_dump(mode="json"), lines)
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from assay.pipeline import stages

    run = _stage_run(args)
    summary = stages.report(run)
    _record(run, "report", {}, summary)
    _emit(args, summary.model_dump(mode="json"),
          [f"Verdict: {summary.verdict.headline}", f"Report: {summary.path}"])  # fmt: skip
    return EXIT_OK


def _run_overrides(args: argparse.Namespace) -> dict[str, Any]:
    keys = (
        "data", "inject", "policy", "steps", "seeds", "device", "seed", "folds", "runner",
        "run_dir", "runs_root", "suite", "strict", "decisions", "image_size", "image_fit",
    )  # fmt: skip
    out = {}
    for key in keys:
        value = getattr(args, key, None)
        if value is not None and value is not False:
            out[key] = value
    return out


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The run parameters the user set: the ``--config`` file's, then the command line's."""
    from assay.flows.config import read_config_file

    given = read_config_file(Path(args.config)) if args.config else {}
    given.update(_run_overrides(args))
    return given


def cmd_run(args: argparse.Namespace) -> int:
    from assay.flows.config import load_config
    from assay.flows.main import run_pipeline, summary_dict
    from assay.flows.resume import resume_config

    overrides = _run_overrides(args)
    if args.quiet or args.json:
        overrides["progress"] = False
    config = resume_config(load_config(args.config, overrides=overrides), _given(args))
    summary = run_pipeline(config)
    lines = [f"verdict: {summary.verdict}"]
    if summary.report is not None:
        lines.append(f"report: {summary.report}")
    _emit(args, summary_dict(summary), lines)
    return int(summary.exit_code)


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
def _run_default(key: str) -> str:
    from assay.flows.config import RunConfig

    return f" (default: {RunConfig.model_fields[key].default})"


def _add_run_options(p: argparse.ArgumentParser) -> None:
    from assay.pipeline.inject import PRESETS
    from assay.pipeline.stages.base import STEPS_HELP

    p.add_argument("--data", metavar="SPEC", help=_DATA_HELP + _run_default("data"))
    p.add_argument("--strict", action="store_true", help="refuse non-image files in folders")
    _add_image_policy(p, defaults=False)
    p.add_argument(
        "--inject", metavar="PRESET",
        help=f"inject known dirt first: {', '.join(sorted(PRESETS))} or a config file",
    )  # fmt: skip
    p.add_argument("--policy", choices=("drop", "relabel", "review"),
                   help="cleaning policy" + _run_default("policy"))  # fmt: skip
    p.add_argument("--steps", type=int, help=f"GAN training steps per arm (default: {STEPS_HELP})")
    p.add_argument("--seeds", type=int, help="training seeds per GAN arm, side by side"
                   + _run_default("seeds"))  # fmt: skip
    p.add_argument("--decisions", metavar="FILE",
                   help="a person's edited review.csv, applied on top of the policy")
    p.add_argument("--device", help="auto, cpu or cuda[:N]" + _run_default("device"))
    p.add_argument("--seed", type=int, help="random seed" + _run_default("seed"))
    p.add_argument("--folds", type=int, help="folds of the out-of-fold classifier"
                   + _run_default("folds"))  # fmt: skip
    p.add_argument("--suite", metavar="FILE", help="expectation suite (default: the built-in)")
    p.add_argument("--runner", metavar="RUNNER", help="task runner: threads, processes or "
                   "dask[:ADDRESS]" + _run_default("runner"))  # fmt: skip
    p.add_argument("--run-dir", dest="run_dir", metavar="DIR",
                   help="run folder to write, or to resume with its recorded parameters "
                   "(default: a new folder under --runs-root)")  # fmt: skip
    p.add_argument("--runs-root", dest="runs_root", metavar="DIR",
                   help="where new run folders go" + _run_default("runs_root"))  # fmt: skip
    p.add_argument("--config", metavar="FILE", help="YAML, TOML or JSON file of run parameters")


def build_parser() -> argparse.ArgumentParser:
    from assay.pipeline.stages.base import STEPS_HELP, DetectParams, GenerateParams

    parser = argparse.ArgumentParser(
        prog="assay",
        description="Assay a labelled image dataset: validate it, find the dirty samples, "
        "clean it, and measure what the dirt costs a conditional GAN.",
    )
    parser.add_argument("--version", action="version", version=f"assay {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    fmt = {"formatter_class": argparse.ArgumentDefaultsHelpFormatter}

    p = sub.add_parser("run", help="run the whole pipeline as a Prefect flow")
    _add_run_options(p)
    _add_output(p)
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("info", help="print a dataset's size, shape, classes and hash", **fmt)
    _add_data(p)
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.set_defaults(handler=cmd_info)

    p = sub.add_parser("inject", help="write a dirty copy of a dataset, with ground truth", **fmt)
    _add_data(p)
    p.add_argument("--out", required=True, metavar="DIR", help="dataset folder to write")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--preset", default="mixed-mild", help="preset name")
    group.add_argument("--config", metavar="FILE", help="JSON or TOML file of injection rates")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.set_defaults(handler=cmd_inject)

    p = sub.add_parser("validate", help="snapshot a dataset and validate it with Great "
                       "Expectations", **fmt)  # fmt: skip
    _add_run_dir(p, "run folder to write into")
    _add_data(p, required=False)
    p.add_argument("--inject", metavar="PRESET", help="inject known dirt into --data first")
    p.add_argument("--seed", type=int, default=0, help="random seed of --inject")
    p.add_argument("--suite", metavar="FILE", help="expectation suite JSON (default: built-in)")
    p.add_argument("--reference", metavar="SPEC", help="reference dataset for class balance")
    p.add_argument("--data-docs", action="store_true",
                   help="also build Great Expectations Data Docs (an HTML site that loads its "
                   "scripts from the web; the report holds the validation results)")  # fmt: skip
    _add_output(p)
    p.set_defaults(handler=cmd_validate)

    p = sub.add_parser("expectations", help="work with expectation suites")
    esub = p.add_subparsers(dest="expectations_command", metavar="ACTION", required=True)
    q = esub.add_parser("learn", help="fit a suite to a dataset you trust", **fmt)
    _add_data(q)
    q.add_argument("--out", required=True, metavar="FILE", help="suite JSON to write")
    q.add_argument("--suite", metavar="FILE",
                   help="suite to start from (default: the built-in generic suite)")  # fmt: skip
    q.set_defaults(handler=cmd_expectations_learn)

    p = sub.add_parser("detect", help="find mislabelled, outlying and duplicate samples", **fmt)
    _add_run_dir(p, "run folder to write into")
    _add_data(p, required=False)
    p.add_argument("--inject", metavar="PRESET", help="inject known dirt into --data first")
    p.add_argument("--folds", type=int, default=DetectParams.folds, help="cross-validation folds")
    _add_compute(p)
    _add_output(p)
    p.set_defaults(handler=cmd_detect)

    p = sub.add_parser("clean", help="turn detections into decisions and a cleaned dataset",
                       **fmt)  # fmt: skip
    _add_run_dir(p, "run folder with detection/")
    p.add_argument("--policy", default="relabel", choices=("drop", "relabel", "review"),
                   help="cleaning policy")  # fmt: skip
    p.add_argument("--decisions", metavar="FILE",
                   help="a person's edited review.csv (written by the review policy), "
                   "applied on top of the policy's decisions")  # fmt: skip
    _add_output(p)
    p.set_defaults(handler=cmd_clean)

    p = sub.add_parser("gan", help="train the conditional GAN arms and compare them", **fmt)
    _add_run_dir(p, "run folder with cleaned/")
    p.add_argument("--steps", type=int, default=GenerateParams.steps,
                   help=f"training steps per arm (default: {STEPS_HELP})")  # fmt: skip
    p.add_argument("--seeds", type=int, default=GenerateParams.seeds,
                   help="training seeds per arm, trained side by side")  # fmt: skip
    _add_compute(p)
    _add_output(p)
    p.set_defaults(handler=cmd_gan)

    p = sub.add_parser("report", help="compute the verdict and (re-)render report.html", **fmt)
    _add_run_dir(p, "run folder")
    _add_output(p)
    p.set_defaults(handler=cmd_report)

    p = sub.add_parser("serve", help="serve the pipeline on a cron schedule")
    _add_run_options(p)
    p.add_argument("--cron", required=True, help='cron schedule, e.g. "0 3 * * *"')
    p.add_argument("--name", default="assay-scheduled", help="deployment name")
    p.set_defaults(handler=cmd_serve)

    p = sub.add_parser("server", help="start a local Prefect server (SQLite, loopback)", **fmt)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=4200, help="port to listen on")
    p.set_defaults(handler=cmd_server)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Data warnings are for the user: print them plainly, without a source line."""
    if category.__name__ == "DataWarning":
        print(f"assay: warning: {message}", file=sys.stderr)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning


class _Termination:
    """The SIGTERM handler of the command: a SIGTERM at any moment ends it with 143.

    While the command works, the first SIGTERM unwinds it like Ctrl+C (``finally`` blocks
    and ``atexit`` hooks run: temporary files go, a local Prefect server stops); later ones
    let that cleanup finish (Prefect passes the one it caught during a flow on to this
    handler). While the outcome is being reported, a SIGTERM only changes the exit code.
    After :func:`main` returned in a process of its own, one ends the process at once
    with 143 (a local Prefect server then stops with its parent).
    """

    def __init__(self) -> None:
        self.seen = False
        self.phase = "working"  # then "closing", then (own process) "exiting"

    def __call__(self, signum: int, frame: Any) -> None:
        first, self.seen = not self.seen, True
        if self.phase == "exiting":
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                if first:  # else main() already said so
                    print(TERMINATED_MESSAGE, file=sys.stderr, flush=True)
            os._exit(EXIT_TERMINATED)
        if first and self.phase == "working":
            raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``assay`` console script; returns the exit code.

    Every failure the user can act on ends in one ``assay: error: ...`` line on stderr and
    a non-zero exit: bad input 2 (an unreadable, read-only or full disk included, named
    with its path), a critical expectation 3, Ctrl+C 130, SIGTERM 143 (at any moment, with
    one ``assay: terminated; ...`` line). A closed stdout (``assay info | head -3``) ends
    quietly. On SIGINT and SIGTERM, ``finally`` blocks and ``atexit`` hooks run, so
    temporary files are removed and a local Prefect server stops. ``argv=None`` (the
    console script) keeps the SIGTERM handler until the process ends; with ``argv`` the
    previous handler is restored on return.
    """
    import signal
    import threading

    # first of all, so that a SIGTERM at any moment of the command ends the same way
    termination = _Termination()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, termination)
    try:
        try:
            code = _main(argv)
        finally:
            termination.phase = "closing"
    except KeyboardInterrupt:
        _forget_interrupt()
        code = _interrupted(terminated=termination.seen)
    except BaseException as exc:
        if not (termination.seen or _is_termination(exc)):
            raise
        _forget_interrupt()
        code = _interrupted(terminated=True)
    else:
        if termination.seen:  # landed after the command's own outcome was decided
            code = _interrupted(terminated=True)
    finally:
        if previous is not None:
            if argv is None:
                termination.phase = "exiting"
            else:
                signal.signal(signal.SIGTERM, previous)
    return code


def _forget_interrupt() -> None:
    """Clear CPython's note of a KeyboardInterrupt that left code run from source text.

    CPython notes a KeyboardInterrupt that leaves code it runs from a string (``exec`` of
    source text, as :mod:`dataclasses` and other libraries do while they are imported) and,
    in a process started as ``python -m assay.flows.cli``, ends the process by SIGINT after
    it has exited, whatever exit code it chose (``Py_RunMain``). The SIGTERM handler
    raises KeyboardInterrupt, so a SIGTERM that landed inside such code, while the
    command was still importing, turned the exit code 143 into death by SIGINT. Source
    text that runs to its end clears the note.
    """
    exec("pass")


def _interrupted(*, terminated: bool) -> int:
    print(TERMINATED_MESSAGE if terminated else INTERRUPTED_MESSAGE, file=sys.stderr)
    return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED


def _is_termination(exc: BaseException) -> bool:
    """Whether ``exc`` is Prefect's ``TerminationSignal`` (raised by the SIGTERM handler that
    Prefect installs while a flow runs); Prefect is only looked at when it was imported."""
    prefect_exceptions = sys.modules.get("prefect.exceptions")
    return prefect_exceptions is not None and isinstance(
        exc, prefect_exceptions.TerminationSignal
    )


def _main(argv: Sequence[str] | None) -> int:
    # stage lines are printed once, by assay; Prefect's own console lines (and the
    # tracebacks it logs before assay prints the real message) stay in the Prefect UI
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    import errno

    from assay.pipeline.errors import AssayError, DataError
    from assay.pipeline.io import check_output_location

    start = time.perf_counter()
    try:
        args = build_parser().parse_args(argv)
        warnings.showwarning = _show_warning
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
    if args.command != "run" and code == EXIT_OK and not getattr(args, "quiet", False):
        print(f"done in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
