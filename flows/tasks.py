"""Prefect tasks: thin wrappers around :mod:`assay.pipeline.stages`, cached by content.

Each task builds the stage's typed parameters from its own (JSON-keyable) arguments,
calls the stage function and returns the cache record of :func:`make_record`. Caching —
keys, code versions, records and their verification — lives in
:mod:`assay.flows.caching`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from assay.flows.caching import (
    make_record,
    make_work_record,
    stage_key,
    work_folder,
)
from assay.flows.progress import stage_progress
from assay.models.device import cpu_thread_limit
from assay.pipeline import stages
from assay.pipeline.runfolder import RunFolder

#: File name of one fold's result in its work folder.
FOLD_FILE = "fold.npz"


def transient_io_error(task_: Any, task_run: Any, state: Any) -> bool:
    """Retry condition: only I/O faults that can pass (not missing files, not bad data,
    not a full or read-only disk)."""
    import errno

    exc = getattr(state, "data", None)
    if not isinstance(exc, OSError):
        return False
    permanent = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)
    if isinstance(exc, permanent):
        return False
    return exc.errno not in (errno.ENOSPC, errno.EROFS, errno.EDQUOT)


def _rel(run_dir: str, part: str) -> str:
    """The relative path of ``part`` (a :class:`RunPaths` name) in the run folder."""
    return RunFolder(run_dir).relative(part)


_CACHED = {"persist_result": True, "result_serializer": "json", "cache_expiration": None}
_RETRY = {"retries": 2, "retry_delay_seconds": 2, "retry_condition_fn": transient_io_error}


# --------------------------------------------------------------------------- ingest
@task(name="load-data", cache_policy=NO_CACHE, **_RETRY)
def load_data(
    data: str,
    *,
    inject: str | None,
    seed: int,
    strict: bool,
    image_size: int | None,
    image_fit: str,
) -> dict[str, Any]:
    """Load the dataset (and inject dirt into it) -> ``{"dataset", "hash", "raw_hash"}``.

    Never cached: loading is how a run learns whether its data changed.
    """
    params = stages.IngestParams(
        data=data,
        inject=inject,
        seed=seed,
        strict=strict,
        image_size=image_size,
        image_fit=image_fit,
    )
    dataset, raw_hash = stages.load_input(params)
    return {"dataset": dataset, "hash": dataset.content_hash(), "raw_hash": raw_hash}


@task(name="snapshot-dataset", cache_key_fn=stage_key("ingest"), **_RETRY, **_CACHED)
def snapshot(dataset: Any, *, data_hash: str, raw_hash: str, run_dir: str) -> dict[str, Any]:
    """Write the dataset into ``run_dir/dataset`` (canonical format, atomic)."""
    summary = stages.ingest(RunFolder(run_dir), dataset, raw_hash=raw_hash)
    return make_record("ingest", run_dir=run_dir, paths=[_rel(run_dir, "dataset")],
                       summary=summary.model_dump(mode="json"))  # fmt: skip


# --------------------------------------------------------------------------- validate
@task(name="run-validation", cache_key_fn=stage_key("validate"), **_CACHED)
def validate_data(
    *,
    data_hash: str,
    suite: str | None,
    suite_hash: str | None,
    reference: str | None,
    reference_hash: str | None,
    data_docs: bool,
    run_dir: str,
) -> dict[str, Any]:
    """Run the expectation suites on the snapshot -> ``run_dir/validation/``."""
    params = stages.ValidateParams(suite=suite, reference=reference, data_docs=data_docs)
    summary = stages.validate(RunFolder(run_dir), params)
    return make_record("validate", run_dir=run_dir, paths=[_rel(run_dir, "validation")],
                       summary=summary.model_dump(mode="json"))  # fmt: skip


# --------------------------------------------------------------------------- detect
@task(name="fit-fold", cache_key_fn=stage_key("detect", part="fold"), **_CACHED)
def fit_fold(
    *, data_hash: str, fold: int, folds: int, seed: int, device: str, run_dir: str,
    work_root: str,
) -> dict[str, Any]:  # fmt: skip
    """Train the classifier of one fold and predict every sample -> a work folder."""
    import time

    start = time.perf_counter()
    params = stages.DetectParams(folds=folds, seed=seed, device=device)
    with work_folder(work_root) as (final, tmp):
        stages.fit_fold(RunFolder(run_dir), params, fold, tmp / FOLD_FILE)
    return make_work_record("detect", part="fold", work=final,
                            summary={"fold": fold, "folds": folds},
                            seconds=time.perf_counter() - start)  # fmt: skip


@task(name="run-detection", cache_key_fn=stage_key("detect"), **_CACHED)
def detect_issues(
    *, data_hash: str, folds: int, seed: int, device: str, run_dir: str,
    progress: bool = False, work: list[str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Run every detector -> ``run_dir/detection/``.

    ``work``, when given, lists the work folders of the :func:`fit_fold` tasks (fold
    order); their predictions are assembled instead of training the folds again.
    """
    params = stages.DetectParams(folds=folds, seed=seed, device=device)
    fold_files = [Path(w) / FOLD_FILE for w in work] if work else None
    with stage_progress(progress):
        summary = stages.detect(RunFolder(run_dir), params, fold_files=fold_files,
                                progress=progress)  # fmt: skip
    return make_record("detect", run_dir=run_dir, paths=[_rel(run_dir, "detection")],
                       summary=summary.model_dump(mode="json"))  # fmt: skip


# --------------------------------------------------------------------------- clean
@task(name="clean-dataset", cache_key_fn=stage_key("clean"), **_CACHED)
def clean_data(
    *, data_hash: str, issues_hash: str, validation_hash: str | None, policy: str,
    decisions: str | None = None, decisions_hash: str | None = None, run_dir: str,
) -> dict[str, Any]:  # fmt: skip
    """Turn issues into decisions -> ``run_dir/cleaned/`` (dataset + decisions).

    ``decisions`` (keyed by its content, ``decisions_hash``): a person's edited review file.
    """
    params = stages.CleanParams(policy=policy, decisions=decisions)
    summary = stages.clean(RunFolder(run_dir), params)
    return make_record("clean", run_dir=run_dir, paths=[_rel(run_dir, "cleaned")],
                       summary=summary.model_dump(mode="json"))  # fmt: skip


# --------------------------------------------------------------------------- generate
@task(name="compare-gans", cache_key_fn=stage_key("generate"), **_CACHED)
def generate_compare(
    *, data_hash: str, issues_hash: str, cleaned_hash: str, steps: int | None, seeds: int,
    seed: int, device: str, run_dir: str, progress: bool = False,
    work: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Train the GAN arms on dirty and cleaned data and score them -> ``run_dir/gan/``.

    ``work``, when given (``{"plan": folder, "arms": {arm: folder}}``), holds the results
    of :func:`gan_prepare` and the :func:`gan_arm` tasks, which are only gathered here.
    """
    run = RunFolder(run_dir)
    if work:
        arm_dirs = {arm: Path(folder) for arm, folder in work["arms"].items()}
        summary = stages.finish_generate(run, Path(work["plan"]), arm_dirs)
    else:
        params = stages.GenerateParams(steps=steps, seed=seed, device=device, seeds=seeds)
        with stage_progress(progress):
            summary = stages.generate(run, params, progress=progress)
    return make_record("generate", run_dir=run_dir, paths=[_rel(run_dir, "gan")],
                       summary=summary.model_dump(mode="json"))  # fmt: skip


@task(name="prepare-gans", cache_key_fn=stage_key("generate", part="prepare"), **_CACHED)
def gan_prepare(
    *, data_hash: str, issues_hash: str, cleaned_hash: str, steps: int | None, seeds: int,
    seed: int, device: str, run_dir: str, work_root: str, progress: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Split off the trusted slice, train the judge, plan the arms -> a work folder.

    The record's summary holds ``arms``, the arms to train.
    """
    import time

    start = time.perf_counter()
    params = stages.GenerateParams(steps=steps, seed=seed, device=device, seeds=seeds)
    with work_folder(work_root) as (final, tmp):
        with stage_progress(progress):
            arms = stages.prepare_generate(RunFolder(run_dir), params, tmp, progress=progress)
    return make_work_record("generate", part="prepare", work=final, summary={"arms": arms},
                            seconds=time.perf_counter() - start)  # fmt: skip


@task(name="train-arm", cache_key_fn=stage_key("generate", part="arm"), **_CACHED)
def gan_arm(
    *, arm: str, data_hash: str, issues_hash: str, cleaned_hash: str, plan_hash: str,
    steps: int | None, seeds: int, seed: int, device: str, run_dir: str, work_root: str,
    work: str,
    progress: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Train and score one GAN arm (``work`` is the plan's folder) -> a work folder."""
    import time

    start = time.perf_counter()
    params = stages.GenerateParams(steps=steps, seed=seed, device=device, seeds=seeds)
    # the arms train side by side: one torch thread each, so they do not spin on each other
    with work_folder(work_root) as (final, tmp), cpu_thread_limit(1), stage_progress(progress):
        metrics = stages.train_arm(RunFolder(run_dir), params, arm, plan_dir=Path(work),
                                   out_dir=tmp, progress=progress)  # fmt: skip
    scalars = {k: v for k, v in metrics.items() if v is None or isinstance(v, int | float | str)}
    return make_work_record("generate", part=f"arm-{arm}", work=final,
                            summary={"arm": arm, "metrics": scalars},
                            seconds=time.perf_counter() - start)  # fmt: skip


# --------------------------------------------------------------------------- report
@task(name="render-report", cache_key_fn=stage_key("report"), **_CACHED)
def render(*, inputs: dict[str, str], run_dir: str) -> dict[str, Any]:
    """Compute the verdict and render ``run_dir/report.html``.

    ``inputs`` maps each upstream stage to the hash of its output, so the report is
    re-rendered whenever any of them changed.
    """
    summary = stages.report(RunFolder(run_dir))
    paths = [_rel(run_dir, "report"), _rel(run_dir, "issues_csv")]  # the CSV beside it
    return make_record("report", run_dir=run_dir, paths=paths,
                       summary=summary.model_dump(mode="json"))  # fmt: skip
