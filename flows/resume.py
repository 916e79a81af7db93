"""Resuming a run folder with the parameters it recorded.

``assay run --run-dir DIR`` on a folder that holds a run reloads the parameters recorded
in its ``run.json``; finished stages then come from the cache. A parameter given again
(on the command line or in ``--config``) must equal the recorded one: a different value
would mix two runs in one folder, so it is refused with exit 2 and a message that says
how to start a new run instead. Operational settings (runner, workers, cache, progress,
until, where runs and caches live) do not change results and may differ.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from assay.flows.config import RunConfig
from assay.pipeline.errors import DataError
from assay.pipeline.runfolder import RunFolder

#: Parameters that do not change a run's results; a resume may set them anew.
OPERATIONAL = frozenset(
    {"runner", "workers", "progress", "cache", "cache_dir", "until", "run_dir", "runs_root"}
)


def recorded_parameters(run_dir: Path) -> dict[str, Any] | None:
    """The parameters ``run_dir/run.json`` recorded, or ``None`` when it holds no run."""
    params = RunFolder(run_dir).read_run_json().parameters
    return dict(params) if params else None


def resume_config(config: RunConfig, given: Mapping[str, Any]) -> RunConfig:
    """``config`` with the recorded parameters of its run folder, when it holds a run.

    Parameters
    ----------
    config : RunConfig
        The configuration built from defaults, ``--config`` and the command line.
    given : mapping
        The keys the user set explicitly (``--config`` file and command line).

    Raises
    ------
    pipeline.errors.DataError
        A given parameter differs from the recorded one.
    """
    if config.run_dir is None:
        return config
    run_dir = Path(config.run_dir).expanduser().resolve()
    recorded = recorded_parameters(run_dir)
    if recorded is None:
        return config
    known = {k: v for k, v in recorded.items() if k in RunConfig.model_fields}
    results = {k: v for k, v in known.items() if k not in OPERATIONAL}
    operational = {k: getattr(config, k) for k in OPERATIONAL}
    merged = RunConfig.model_validate({**results, **operational}).resolved()
    asked = RunConfig.model_validate(
        {**results, **{k: v for k, v in given.items() if k in RunConfig.model_fields},
         **operational}  # fmt: skip
    ).resolved()
    for key in sorted(given):
        if key in OPERATIONAL or key not in RunConfig.model_fields:
            continue
        was, now = getattr(merged, key), getattr(asked, key)
        if was != now:
            recorded_value = "default" if was is None else repr(was)
            raise DataError(
                f"{run_dir}: `{key}` {now!r} differs from the {recorded_value} this run "
                "recorded. "
                "Resume without it, or start a new run (leave out --run-dir, or name a new "
                "one)."
            )
    return merged


def like_run_timings(config: RunConfig) -> tuple[str, dict[str, float]] | None:
    """What the stages took in the latest finished run beside ``config.run_dir`` that had
    the same result parameters: ``(run_id, {stage: seconds of compute})``, or ``None``.

    A scheduled flow repeats one set of parameters, so its earlier runs say how long the
    stages still to come will take; a first run has no such estimate.
    """
    if config.run_dir is None:
        return None
    here = Path(config.run_dir).expanduser().resolve()
    want = {k: v for k, v in config.parameters().items() if k not in OPERATIONAL}
    found: list[tuple[str, str, dict[str, float]]] = []
    for other in here.parent.glob("*/run.json"):
        if other.parent == here:
            continue
        try:
            record = RunFolder(other.parent).read_run_json()
        except (DataError, OSError, ValueError):
            continue
        params = {k: v for k, v in record.parameters.items() if k not in OPERATIONAL}
        if record.status != "complete" or params != want or not record.finished_at:
            continue
        seconds = {
            stage: float(entry.compute_seconds or entry.seconds or 0.0)
            for stage, entry in record.stages.items()
        }
        found.append((record.finished_at, str(record.run_id or other.parent.name), seconds))
    if not found:
        return None
    _, run_id, seconds = max(found)
    return run_id, seconds
