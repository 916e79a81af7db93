"""The main flow: ingest -> validate -> detect -> clean -> generate -> report.

:func:`run_pipeline` is what ``assay run`` calls. It runs :func:`assay_flow` in Prefect's
ephemeral mode (no server to start by hand) unless ``PREFECT_API_URL`` points at a server,
prints one line per stage start and end, and returns a :class:`RunSummary`.

Each stage is a sub-flow (:mod:`flows.stages`) whose cached tasks are keyed on content
hashes, parameters and code (:mod:`flows.tasks`), so an identical re-run is served from
the cache, a run resumed after a crash or Ctrl+C skips the stages that finished, and a
changed parameter re-runs only the stages downstream of it. Progress, timings, hashes,
stage states and the verdict go to ``run.json`` as the run goes.
"""

# No `from __future__ import annotations`: Prefect builds the flows' parameter models from
# these annotations, also in flow-run processes where string annotations cannot be resolved.
import contextlib
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.context import FlowRunContext
from prefect.exceptions import TerminationSignal

from assay.flows import stages
from assay.flows.caching import code_version
from assay.flows.config import STAGES, RunConfig
from assay.flows.progress import say
from assay.flows.resume import like_run_timings
from assay.flows.runners import open_runner
from assay.flows.server_guard import guard_ephemeral_server
from assay.pipeline.errors import CriticalValidationError, DataError
from assay.pipeline.progress import format_seconds
from assay.pipeline.runfolder import RunFolder, now_iso, versions

#: Artifact keys (lowercase letters, digits and dashes, as Prefect requires).
ARTIFACT_KEYS = {
    "summary": "assay-summary",
    "table": "assay-issues-and-metrics",
    "report": "assay-report",
}


#: GAN metrics shown in the table artifact (when the comparison reports them).
GAN_METRICS = ("label_accuracy", "fid", "kid", "precision", "recall", "cas", "vae_flag_rate")


@dataclass(frozen=True)
class RunSummary:
    """What one pipeline run did, for the command line.

    Attributes
    ----------
    run_id, run_dir : str, Path
        The run folder.
    report : Path or None
        ``report.html`` when the report stage ran.
    verdict : str
        One line: how dirty, what was done, did it help.
    stages : dict
        Stage -> ``"done"``, ``"cached"`` or ``"skipped"``.
    timings : dict
        Stage -> wall seconds in this run.
    seconds : float
        Wall seconds of the whole run.
    unchanged_since : str or None
        Run id of the run that first ingested the same data, when this run's data is
        unchanged since then.
    flow_run_id : str or None
        Prefect flow run id.
    exit_code : int
        0 (failures raise instead).
    """

    run_id: str
    run_dir: Path
    report: Path | None
    verdict: str
    stages: dict[str, str]
    timings: dict[str, float]
    seconds: float
    unchanged_since: str | None = None
    flow_run_id: str | None = None
    hashes: dict[str, str] = field(default_factory=dict)
    exit_code: int = 0


# --------------------------------------------------------------------------- progress
def _stage_settings() -> Callable[[], Any]:
    """A context factory for stage sub-flows: the current settings, minus heartbeats.

    Stage flows run inside the main flow's process, whose heartbeat already tells the
    server that the run is alive; a sub-flow's own heartbeat thread only adds up to a
    second of shutdown wait to every stage. The settings are built once per run (building
    them is slow) and entered per stage.
    """
    import prefect.context
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY

    current = prefect.context.get_settings_context()
    settings = current.settings.copy_with_update(
        updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
    )
    return lambda: prefect.context.SettingsContext(profile=current.profile, settings=settings)


def _resolve_device(requested: str) -> str:
    from assay.models.device import pick_device

    try:
        return str(pick_device(requested))
    except ValueError as exc:
        raise DataError(f"`device`: {exc}") from None


# --------------------------------------------------------------------------- verdict
def issue_counts(detect_summary: dict[str, Any]) -> dict[str, int]:
    """Per-type issue counts from the detection stage's summary."""
    return {str(k): int(v) for k, v in detect_summary.get("counts", {}).items()}


# --------------------------------------------------------------------------- artifacts
def _table_rows(outcomes: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if "detect" in outcomes:
        for name, value in issue_counts(outcomes["detect"]["record"]["summary"]).items():
            rows.append({"group": "issues", "name": name, "value": value})
    if "clean" in outcomes:
        for name, value in outcomes["clean"]["record"]["summary"].get("decisions", {}).items():
            rows.append({"group": "decisions", "name": name, "value": value})
    if "generate" in outcomes:
        arms = outcomes["generate"]["record"]["summary"].get("arms", {})
        for arm, vals in arms.items():
            headline = [m for m in GAN_METRICS if m in vals] or list(vals)
            for metric in headline:
                value = vals[metric]
                if isinstance(value, int | float) and not isinstance(value, bool):
                    rows.append({"group": f"gan {arm}", "name": metric, "value": value})
    return rows


def _markdown(
    run_id: str,
    verdict: str,
    rows: list[dict[str, Any]],
    stage_rows: list[tuple[str, str, float]],
    unchanged_since: str | None,
) -> str:
    lines = [f"# assay run `{run_id}`", "", f"**Verdict:** {verdict}", ""]
    if unchanged_since:
        lines += [f"Data unchanged since run `{unchanged_since}`.", ""]
    lines += ["| stage | state | seconds |", "|---|---|---:|"]
    lines += [f"| {s} | {state} | {sec:.1f} |" for s, state, sec in stage_rows]
    if rows:
        lines += ["", "| group | name | value |", "|---|---|---:|"]
        lines += [f"| {r['group']} | {r['name']} | {_fmt(r['value'])} |" for r in rows]
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _publish_artifacts(
    run: RunFolder,
    run_id: str,
    verdict: str,
    outcomes: dict[str, dict[str, Any]],
    stage_rows: list[tuple[str, str, float]],
    unchanged_since: str | None,
) -> None:
    rows = _table_rows(outcomes)
    create_markdown_artifact(
        _markdown(run_id, verdict, rows, stage_rows, unchanged_since),
        key=ARTIFACT_KEYS["summary"],
        description=f"assay run {run_id}: verdict and stage states",
    )
    if rows:
        create_table_artifact(
            rows,
            key=ARTIFACT_KEYS["table"],
            description=f"assay run {run_id}: issue counts per type, decisions, GAN metrics",
        )
    if "report" in outcomes and run.paths.report.exists():
        create_link_artifact(
            run.paths.report.resolve().as_uri(),
            link_text=f"report.html of run {run_id}",
            key=ARTIFACT_KEYS["report"],
            description=f"assay run {run_id}: the self-contained HTML report",
        )


def _first_missing(folder: Path) -> Path | None:
    """The outermost of ``folder`` and its parents that does not exist yet, if any."""
    missing = None
    for path in (folder, *folder.parents):
        if path.exists():
            break
        missing = path
    return missing


# --------------------------------------------------------------------------- the flow
@flow(name="assay", log_prints=False)
def assay_flow(config: RunConfig) -> dict[str, Any]:
    """Run every stage of the pipeline (up to ``config.until``) into one run folder.

    Returns
    -------
    dict
        The fields of :class:`RunSummary`.
    """
    started = time.perf_counter()
    config = config.resolved()
    run = RunFolder(Path(str(config.run_dir)))
    run_id = run.root.name
    ctx = FlowRunContext.get()
    flow_run_id = str(ctx.flow_run.id) if ctx and ctx.flow_run else None
    device = _resolve_device(config.device)
    stage_settings = _stage_settings()

    def note(message: str) -> None:
        say(message, echo=config.progress)

    outcomes: dict[str, dict[str, Any]] = {}
    states: dict[str, str] = {}
    timings: dict[str, float] = {}
    stage_rows: list[tuple[str, str, float]] = []
    hashes: dict[str, str] = {}
    unchanged_since: str | None = None
    like_run = like_run_timings(config)

    def _clock(elapsed: float, stage: str) -> str:
        """``"62 s elapsed, about 2 min 30 s to go (as in run R)"``; the estimate comes
        from the latest finished run with the same parameters, when there is one."""
        text = f"{format_seconds(elapsed)} elapsed"
        if like_run is None:
            return text
        later = [s for s in STAGES if config.stage_enabled(s) and s not in timings]
        if not later:
            return text
        left = sum(like_run[1].get(s, 0.0) for s in later)
        return f"{text}; about {format_seconds(left)} to go, as run {like_run[0]} took"

    def begin(stage: str) -> float:
        note(f"{stage:<9} started")
        if run.paths.run_json.exists():
            run.update_run_json(stages={stage: {"state": "running", "started_at": now_iso()}})
        return time.perf_counter()

    def end(stage: str, t0: float, outcome: dict[str, Any]) -> None:
        seconds = time.perf_counter() - t0
        record = outcome["record"]
        state = "cached" if outcome["cached"] else "done"
        outcomes[stage] = outcome
        states[stage] = state
        timings[stage] = round(seconds, 3)
        stage_rows.append((stage, state, seconds))
        detail = ""
        if outcome["cached"]:
            detail = f" (computed by run {record['run_id']} in {record['seconds']:.1f} s)"
        elapsed = time.perf_counter() - started
        note(f"{stage:<9} {state} in {seconds:.1f} s{detail} ({_clock(elapsed, stage)})")
        run.update_run_json(
            stages={
                stage: {
                    "state": state,
                    "seconds": round(seconds, 3),
                    "compute_seconds": record["seconds"],
                    "key": record["key"],
                    "code": record["code"],
                    "from_run": record["run_id"],
                    "finished_at": now_iso(),
                }
            },
            timings={stage: round(seconds, 3)},
        )

    def failed(stage: str, exc: BaseException) -> None:
        if run.paths.run_json.exists():
            state = "critical" if isinstance(exc, CriticalValidationError) else "failed"
            if isinstance(exc, KeyboardInterrupt | TerminationSignal):
                state = "interrupted"
            run.update_run_json(
                status=state,
                stages={stage: {"state": state, "error": str(exc)[:2000]}},
                finished_at=now_iso(),
            )
        if isinstance(exc, KeyboardInterrupt | TerminationSignal):
            note(f"{stage:<9} interrupted")
        else:
            note(f"{stage:<9} failed: {type(exc).__name__}: {str(exc)[:300]}")

    with open_runner(config.runner, workers=config.workers, echo=note) as make_runner:

        def run_stage(stage: str, stage_flow: Any, *args: Any) -> dict[str, Any]:
            t0 = begin(stage)
            try:
                with stage_settings():
                    outcome = stage_flow.with_options(task_runner=make_runner())(*args)
            except BaseException as exc:
                failed(stage, exc)
                raise
            end(stage, t0, outcome)
            return outcome

        # The parameters are recorded before any stage writes, so that a run killed at any
        # moment resumes with them (``--run-dir DIR`` alone). Bad input still leaves
        # nothing: a failed ingest removes the folder again when this run made it.
        made = _first_missing(run.root)
        run.update_run_json(run_id=run_id, status="running", started_at=now_iso(),
                            finished_at=None, flow_run_id=flow_run_id,
                            parameters=config.parameters())  # fmt: skip
        t0 = time.perf_counter()
        note(f"{'ingest':<9} started")
        try:
            with stage_settings():
                ingest = stages.ingest_flow.with_options(task_runner=make_runner())(config)
        except BaseException as exc:
            if made is not None and not isinstance(exc, KeyboardInterrupt | TerminationSignal):
                shutil.rmtree(made, ignore_errors=True)
            failed("ingest", exc)
            raise
        hashes.update(data=ingest["raw_hash"], ingested=ingest["hash"])
        run.update_run_json(
            run_id=run_id,
            status="running",
            started_at=now_iso(),
            finished_at=None,
            flow_run_id=flow_run_id,
            parameters=config.parameters(),
            device=device,
            versions=versions(),
            code={stage: code_version(stage) for stage in STAGES},
            hashes=hashes,
            stages={s: {"state": "pending"} for s in STAGES if config.stage_enabled(s)},
        )
        end("ingest", t0, ingest)
        if ingest["cached"] and ingest["record"]["run_id"] != run_id:
            unchanged_since = ingest["record"]["run_id"]
            note(f"data unchanged since {unchanged_since}")

        data_hash = ingest["hash"]
        if config.stage_enabled("validate"):
            validated = run_stage("validate", stages.validate_flow, config, data_hash)
            flags_hash = validated["record"]["summary"].get("flags_hash")
            if flags_hash:
                hashes["validation_flags"] = flags_hash
        if config.stage_enabled("detect"):
            detect = run_stage("detect", stages.detect_flow, config, data_hash, device)
            hashes["issues"] = detect["record"]["hash"]
        if config.stage_enabled("clean"):
            clean = run_stage(
                "clean", stages.clean_flow, config, data_hash, hashes["issues"],
                hashes.get("validation_flags"),
            )  # fmt: skip
            hashes["cleaned"] = clean["record"]["hash"]
        if config.stage_enabled("generate"):
            gen = run_stage(
                "generate",
                stages.generate_flow,
                config,
                data_hash,
                hashes["issues"],
                hashes["cleaned"],
                device,
            )
            hashes["gan_metrics"] = gen["record"]["hash"]

        run.update_run_json(hashes=hashes)
        verdict = "no verdict: the report stage did not run"
        if config.stage_enabled("report"):
            inputs = {s: o["record"]["hash"] for s, o in outcomes.items()}
            report = run_stage("report", stages.report_flow, config, inputs)
            hashes["report"] = report["record"]["hash"]
            # the verdict the report stage computed (also when it came from the cache)
            found = report["record"]["summary"]["verdict"]
            run.update_run_json(verdict=found)
            verdict = found["headline"]

    skipped = [s for s in STAGES if not config.stage_enabled(s)]
    for stage in skipped:
        states[stage] = "skipped"
    seconds = time.perf_counter() - started
    all_cached = all(o["cached"] for o in outcomes.values())
    run.update_run_json(
        status="complete",
        finished_at=now_iso(),
        seconds=round(seconds, 3),
        hashes=hashes,
        unchanged_since=unchanged_since,
        all_cached=all_cached,
        stages={s: {"state": "skipped"} for s in skipped},
    )
    _publish_artifacts(run, run_id, verdict, outcomes, stage_rows, unchanged_since)
    report_path = run.paths.report if "report" in outcomes else None
    if unchanged_since and all_cached:
        note(f"unchanged since {unchanged_since}: every stage came from the cache")
    say(f"verdict: {verdict}", echo=False)
    note(f"run folder: {run.root} ({seconds:.1f} s)")
    return {
        "run_id": run_id,
        "run_dir": str(run.root),
        "report": None if report_path is None else str(report_path),
        "verdict": verdict,
        "stages": {s: states.get(s, "skipped") for s in STAGES},
        "timings": timings,
        "seconds": round(seconds, 3),
        "unchanged_since": unchanged_since,
        "flow_run_id": flow_run_id,
        "hashes": hashes,
    }


# --------------------------------------------------------------------------- entry point
@contextlib.contextmanager
def prefect_defaults() -> Iterator[None]:
    """Prefect settings for a small, offline machine, where the user has not set them.

    A longer start-up timeout for the ephemeral API server (its first start migrates a
    SQLite database, slow on two busy cores) and no anonymous usage telemetry.
    """
    from prefect.settings import (
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    updates: dict[Any, Any] = {}
    if "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" not in os.environ:
        updates[PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS] = 180
    if "PREFECT_SERVER_ANALYTICS_ENABLED" not in os.environ:
        updates[PREFECT_SERVER_ANALYTICS_ENABLED] = False
    with temporary_settings(updates=updates):
        yield


def preflight(config: RunConfig) -> None:
    """Refuse bad input before any flow starts (cheap checks only; nothing is read).

    Raises
    ------
    pipeline.errors.DataError
        The data spec names nothing loadable, the injection preset is unknown, the
        suite file is missing or the device is unavailable.
    """
    from assay.pipeline.inject import PRESETS
    from assay.pipeline.io import check_output_location, detect_format

    detect_format(config.data)
    # also for values from a config file or a resumed run.json, not only the command line
    inputs = [config.data, config.reference]
    check_output_location(config.runs_root, inputs, option="runs_root")
    if config.run_dir is not None:
        check_output_location(config.run_dir, inputs, option="run_dir")
    if config.inject and not Path(config.inject).expanduser().exists():
        if config.inject not in PRESETS:
            raise DataError(
                f"`inject` must be a preset ({', '.join(sorted(PRESETS))}) or an injection "
                f"config file. Got {config.inject!r} instead."
            )
    if config.suite and not Path(config.suite).expanduser().is_file():
        raise DataError(f"{config.suite}: suite file not found; expected a GX suite JSON.")
    _resolve_device(config.device)


def run_pipeline(config: RunConfig) -> RunSummary:
    """Run the whole pipeline once and return what it did.

    Parameters
    ----------
    config : RunConfig
        All run parameters (see :func:`flows.config.load_config`). A ``run_dir`` that
        already holds a run is resumed: finished stages come from the cache.

    Returns
    -------
    RunSummary

    Raises
    ------
    pipeline.errors.DataError
        Bad input (the command exits 2).
    pipeline.errors.CriticalValidationError
        A critical expectation failed (the command exits 3).
    KeyboardInterrupt
        Interrupted; ``run.json`` says so and a re-run resumes.
    """
    preflight(config)
    config = config.resolved()
    with prefect_defaults():
        guard_ephemeral_server()  # a local Prefect server dies with this process
        result = assay_flow(config)
    out = dict(result)
    out["run_dir"] = Path(out["run_dir"])
    out["report"] = Path(out["report"]) if out["report"] else None
    return RunSummary(**out)


def summary_dict(summary: RunSummary) -> dict[str, Any]:
    """:class:`RunSummary` as JSON-ready data."""
    data = asdict(summary)
    data["run_dir"] = str(summary.run_dir)
    data["report"] = None if summary.report is None else str(summary.report)
    return data


if __name__ == "__main__":  # pragma: no cover
    from assay.flows.config import load_config

    run_pipeline(load_config(sys.argv[1] if len(sys.argv) > 1 else None))
