"""One Prefect flow per stage: ingest, validate, detect, clean, generate, report.

Each flow only wires tasks from :mod:`flows.tasks` (which wrap the ``pipeline`` functions)
and returns an outcome dict::

    {"stage": "detect", "record": {...}, "cached": True, "recomputed": False}

``record`` is the task's cache record (see :func:`flows.tasks.make_record`); ``cached``
says whether Prefect served it from the cache. The main flow (:mod:`flows.main`) composes
them and passes each stage the hashes it depends on, so a changed parameter re-runs only
the stages downstream of it.
"""

# No `from __future__ import annotations`: Prefect builds the flows' parameter models from
# these annotations.
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow

from assay.flows import caching, tasks
from assay.flows.config import RunConfig
from assay.flows.runners import parse_runner
from assay.pipeline.errors import CriticalValidationError
from assay.pipeline.hashing import path_fingerprint

Check = Callable[[dict[str, Any], Path], bool]


def run_cached(
    task_: Any,
    config: RunConfig,
    *,
    submit: bool | None = None,
    check: Check = caching.adopt_outputs,
    **params: Any,
) -> dict[str, Any]:
    """Run one cached task; make sure its outputs exist (see :func:`run_cached_many`)."""
    return run_cached_many(task_, config, [params], submit=submit, check=check)[0]


def run_cached_many(
    task_: Any,
    config: RunConfig,
    param_sets: list[dict[str, Any]],
    *,
    submit: bool | None = None,
    check: Check = caching.adopt_outputs,
) -> list[dict[str, Any]]:
    """Run a cached task once per parameter set; return one outcome per set, in order.

    The task is pointed at the run's cache folder; with ``config.cache`` false it
    recomputes and overwrites the cache entries. With ``submit`` every run is submitted to
    the flow's task runner before any result is awaited (folds and GAN arms side by side
    on process and Dask runners); otherwise they run one after the other in this thread.
    ``None`` submits on process and Dask runners only (:func:`use_task_runner`).

    ``check(record, run_dir)`` makes a record's outputs present (by default it links them
    into this run folder); when it returns false (the files are gone) that run is repeated
    with ``refresh_cache=True``.

    Returns
    -------
    list of dict
        ``{"stage", "record", "cached", "recomputed"}`` per parameter set.
    """
    run_dir = Path(str(config.run_dir))
    storage = Path(str(config.cache_dir)) / "results"
    options: dict[str, Any] = {"result_storage": storage}
    if not config.cache:
        options["refresh_cache"] = True
    configured = task_.with_options(**options)
    if submit is None:
        submit = use_task_runner(config)
    results = _call_many(configured, param_sets, submit=submit)
    outcomes = []
    for params, (record, cached) in zip(param_sets, results, strict=True):
        recomputed = False
        if not check(record, run_dir):
            refreshed = task_.with_options(result_storage=storage, refresh_cache=True)
            record, cached = _call_many(refreshed, [params], submit=submit)[0]
            recomputed = True
            if not check(record, run_dir):  # pragma: no cover - defensive
                raise RuntimeError(f"stage {record['stage']!r} wrote no complete outputs.")
        outcomes.append(
            {"stage": record["stage"], "record": record, "cached": cached, "recomputed": recomputed}
        )
    return outcomes


def _call_many(
    task_: Any, param_sets: list[dict[str, Any]], *, submit: bool
) -> list[tuple[dict[str, Any], bool]]:
    if submit:
        futures = [task_.submit(**params) for params in param_sets]
        return [(f.result(), f.state.name == "Cached") for f in futures]
    out = []
    for params in param_sets:
        state = task_(**params, return_state=True)
        out.append((state.result(), state.name == "Cached"))
    return out


def use_task_runner(config: RunConfig) -> bool:
    """Submit tasks to the task runner (process and Dask runners), or run them in the
    flow's own thread (``threads``)?

    With threads the stage tasks, folds and GAN arms run one after the other in the flow's
    thread: torch already uses every core for one model, two models training at once in
    one process would share the global random state, and Ctrl+C then stops the run at
    once instead of after the task that a pool thread is running.
    """
    return parse_runner(config.runner).kind in ("processes", "dask")


def _common(config: RunConfig) -> dict[str, Any]:
    return {"run_dir": str(config.run_dir)}


@flow(name="ingest", validate_parameters=False)
def ingest_flow(config: RunConfig) -> dict[str, Any]:
    """Load (and inject), then snapshot the dataset into ``run_dir/dataset``.

    The load always runs (it is how a run learns whether the data changed); the snapshot
    is cached on the dataset's content hash. The outcome adds ``raw_hash`` (data as
    loaded) and ``hash`` (data the run works on).
    """
    loaded = tasks.load_data(
        config.data,
        inject=config.inject,
        seed=config.seed,
        strict=config.strict,
        image_size=config.image_size,
        image_fit=config.image_fit,
    )
    outcome = run_cached(
        tasks.snapshot,
        config,
        submit=False,
        dataset=loaded["dataset"],
        data_hash=loaded["hash"],
        raw_hash=loaded["raw_hash"],
        **_common(config),
    )
    outcome["raw_hash"] = loaded["raw_hash"]
    outcome["hash"] = loaded["hash"]
    return outcome


@flow(name="validate", validate_parameters=False)
def validate_flow(config: RunConfig, data_hash: str) -> dict[str, Any]:
    """Run the expectation suites; stop the run when a critical expectation fails.

    Raises
    ------
    pipeline.errors.CriticalValidationError
        With the validation module's message naming the failed expectations.
    """
    outcome = run_cached(
        tasks.validate_data,
        config,
        data_hash=data_hash,
        suite=config.suite,
        suite_hash=path_fingerprint(config.suite),
        reference=config.reference,
        reference_hash=path_fingerprint(config.reference),
        data_docs=config.data_docs,
        **_common(config),
    )
    summary = outcome["record"]["summary"]
    if not summary.get("success_critical", True):
        raise CriticalValidationError(
            summary.get("critical_message") or "a critical expectation failed."
        )
    return outcome


@flow(name="detect", validate_parameters=False)
def detect_flow(config: RunConfig, data_hash: str, device: str) -> dict[str, Any]:
    """Find label issues, outliers, duplicates and image-property issues.

    On process and Dask runners the K folds of the out-of-fold classifier are separate
    cached tasks submitted side by side, and the detectors reuse their predictions. With
    threads the detection runs as one task (its folds still train two at a time, one
    torch thread each, inside it).
    """
    common = {"data_hash": data_hash, "folds": config.folds, "seed": config.seed,
              "device": device, **_common(config)}  # fmt: skip
    work = None
    if use_task_runner(config):
        work_root = str(Path(str(config.cache_dir)) / "work")
        folds = run_cached_many(
            tasks.fit_fold,
            config,
            [{**common, "fold": f, "work_root": work_root} for f in range(config.folds)],
            check=caching.work_present,
        )
        work = [o["record"]["work"] for o in folds]
    outcome = run_cached(
        tasks.detect_issues, config, progress=config.progress, work=work, **common
    )
    return outcome


@flow(name="clean", validate_parameters=False)
def clean_flow(
    config: RunConfig, data_hash: str, issues_hash: str, validation_hash: str | None = None
) -> dict[str, Any]:
    """Turn the detections into decisions and write the cleaned dataset."""
    return run_cached(
        tasks.clean_data,
        config,
        data_hash=data_hash,
        issues_hash=issues_hash,
        validation_hash=validation_hash,
        policy=config.policy,
        decisions=config.decisions,
        decisions_hash=path_fingerprint(config.decisions),
        **_common(config),
    )


@flow(name="generate", validate_parameters=False)
def generate_flow(
    config: RunConfig, data_hash: str, issues_hash: str, cleaned_hash: str, device: str
) -> dict[str, Any]:
    """Train the same conditional GAN on dirty and cleaned data and compare the arms.

    On process and Dask runners the judge is trained once and every arm is a separate
    cached task, submitted side by side; the comparison then only gathers them. With
    threads the arms train one after the other in one task, each on every core.
    """
    common = {"data_hash": data_hash, "issues_hash": issues_hash,
              "cleaned_hash": cleaned_hash, "steps": config.steps, "seeds": config.seeds,
              "seed": config.seed,
              "device": device, **_common(config)}  # fmt: skip
    work = None
    if use_task_runner(config):
        work_root = str(Path(str(config.cache_dir)) / "work")
        plan = run_cached(
            tasks.gan_prepare,
            config,
            check=caching.work_present,
            work_root=work_root,
            progress=config.progress,
            **common,
        )["record"]
        arm_params = [
            {**common, "arm": arm, "plan_hash": plan["hash"], "work": plan["work"],
             "work_root": work_root}  # fmt: skip
            for arm in plan["summary"]["arms"]
        ]
        arms = run_cached_many(
            tasks.gan_arm,
            config,
            arm_params,
            check=caching.work_present,
        )
        work = {
            "plan": plan["work"],
            "arms": {o["record"]["summary"]["arm"]: o["record"]["work"] for o in arms},
        }
    return run_cached(
        tasks.generate_compare, config, progress=config.progress, work=work, **common
    )


@flow(name="report", validate_parameters=False)
def report_flow(config: RunConfig, inputs: dict[str, str]) -> dict[str, Any]:
    """Render the self-contained ``report.html``."""
    return run_cached(tasks.render, config, inputs=inputs, **_common(config))
