"""The Prefect flows: stages, caching, resuming, artifacts, runners, schedules.

Every test runs the real stage functions (:mod:`assay.pipeline.stages`) on small data.
Wiring tests spy on them — each stage function is monkeypatched with a wrapper that counts
its calls (and can fail once) before calling the real one — to pin caching, invalidation,
resuming, run.json and artifacts. All Prefect state lives in a temporary database
(``prefect_test_harness``).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np
import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterParentTaskRunId,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
)
from prefect.testing.utilities import prefect_test_harness

from assay.flows import caching, stages, tasks
from assay.flows.config import STAGES, RunConfig, load_config
from assay.flows.main import ARTIFACT_KEYS, run_pipeline
from assay.flows.resume import resume_config
from assay.flows.runners import RunnerSpec, open_runner, parse_runner
from assay.pipeline import stages as pipeline_stages
from assay.pipeline.errors import CriticalValidationError, DataError

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

REPO = Path(__file__).resolve().parent.parent

#: The stage functions the spies count.
SPIED = ("validate", "detect", "clean", "generate", "report", "fit_fold", "prepare_generate",
         "train_arm", "finish_generate")  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def harness():
    """One temporary Prefect API (SQLite) for the whole module."""
    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="module")
def small_digits(tmp_path_factory) -> str:
    """300 of scikit-learn's digits (30 per class) as an .npz: a quick real data set."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = np.concatenate([np.flatnonzero(digits.target == k)[:30] for k in range(10)])
    path = tmp_path_factory.mktemp("data") / "digits300.npz"
    images = np.round(digits.images[keep] * 255 / 16).astype(np.uint8)
    np.savez(path, images=images, labels=digits.target[keep])
    return str(path)


# --------------------------------------------------------------------------- spies
class Spies:
    """Counts calls of the real stage functions; can make one of them fail once."""

    def __init__(self, mp: pytest.MonkeyPatch) -> None:
        self.counts: dict[str, int] = {}
        self.fail: dict[str, BaseException] = {}
        self.spans: dict[str, list[tuple[float, float]]] = {}
        self.lock = threading.Lock()
        for name in SPIED:
            mp.setattr(pipeline_stages, name, self._wrap(name, getattr(pipeline_stages, name)))

    def _wrap(self, name: str, real: Any) -> Any:
        def spy(*args: Any, **kwargs: Any) -> Any:
            with self.lock:
                self.counts[name] = self.counts.get(name, 0) + 1
                exc = self.fail.pop(name, None)
            if exc is not None:
                raise exc
            t0 = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                with self.lock:
                    self.spans.setdefault(name, []).append((t0, time.perf_counter()))

        return spy

    def __getitem__(self, name: str) -> int:
        return self.counts.get(name, 0)


@pytest.fixture(scope="module")
def spies():
    with pytest.MonkeyPatch.context() as mp:
        yield Spies(mp)


def _config(root: Path, data: str, **kw: Any) -> RunConfig:
    base = {"data": data, "runs_root": root / "runs", "steps": 10, "seeds": 1, "folds": 2,
            "device": "cpu", "progress": False, "data_docs": False}  # fmt: skip
    base.update(kw)
    return RunConfig(**base)


# --------------------------------------------------------------------------- API helpers
def _flow_run_ids(parent: str) -> list[UUID]:
    """The sub-flow (stage) runs of a main flow run, found through their parent task runs."""
    with get_client(sync_client=True) as client:
        wrappers = client.read_task_runs(
            task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[UUID(parent)]))
        )
        subs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_task_run_id=FlowRunFilterParentTaskRunId(any_=[w.id for w in wrappers])
            )
        )
    return [s.id for s in subs]


def task_states(flow_run_id: str) -> dict[str, list[str]]:
    """Task name -> state names of every task run in the stage flows of a main flow run."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(
                flow_run_id=TaskRunFilterFlowRunId(any_=_flow_run_ids(flow_run_id))
            )
        )
    out: dict[str, list[str]] = {}
    for tr in runs:
        name = tr.name.rsplit("-", 1)[0]
        out.setdefault(name, []).append(tr.state.name if tr.state else "?")
    return out


def artifacts(flow_run_id: str) -> dict[str, Any]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)])
            )
        )
    return {a.key: a for a in found}


# --------------------------------------------------------------------------- wiring
@pytest.fixture(scope="module")
def baseline(spies, small_digits, tmp_path_factory):
    """A full run on small real data, then the identical run again."""
    root = tmp_path_factory.mktemp("baseline")
    first = run_pipeline(_config(root, small_digits, inject="labels-10"))
    counts_after_first = dict(spies.counts)
    second = run_pipeline(_config(root, small_digits, inject="labels-10"))
    return {"root": root, "first": first, "second": second,
            "counts": (counts_after_first, dict(spies.counts))}  # fmt: skip


class TestWiring:
    """The flows around the real stages: caching, invalidation, faults, artifacts."""

    def test_first_run_writes_every_stage_and_run_json(self, baseline):
        summary = baseline["first"]
        run = summary.run_dir
        assert summary.stages == {s: "done" for s in STAGES}
        assert summary.unchanged_since is None
        for rel in ["dataset/images.npy", "dataset/manifest.parquet", "dataset/dataset.json",
                    "validation/validation.json", "detection/issues.parquet",
                    "detection/summary.json", "detection/noise_matrix.npy",
                    "cleaned/images.npy", "cleaned/decisions.parquet", "gan/metrics.json",
                    "report.html", "run.json"]:  # fmt: skip
            assert (run / rel).is_file(), rel
        assert not [p for p in run.rglob(".*")]  # no temp files or folders
        info = json.loads((run / "run.json").read_text())
        assert info["status"] == "complete"
        assert info["parameters"]["inject"] == "labels-10"
        assert info["parameters"]["steps"] == 10
        assert set(info["timings"]) == set(STAGES)
        assert {s: v["state"] for s, v in info["stages"].items()} == {s: "done" for s in STAGES}
        assert info["hashes"]["ingested"] != info["hashes"]["data"]  # dirt was injected
        assert len(info["hashes"]["issues"]) == 64
        assert info["versions"]["prefect"].startswith("3.")
        assert info["code"]["detect"].startswith(caching.assay_version() + "+")
        # one verdict: computed by the report stage, stored in run.json, shown by the report
        assert info["verdict"]["headline"] == summary.verdict
        detected = json.loads((run / "detection/summary.json").read_text())
        points = " ".join(info["verdict"]["points"])
        assert f"{detected['n_dirty']} samples are marked dirty" in points
        assert summary.report == run / "report.html"
        assert summary.verdict in html.unescape(summary.report.read_text())
        assert baseline["counts"][0] == {
            s: 1 for s in ("validate", "detect", "clean", "generate", "report")
        }

    def test_artifacts(self, baseline):
        summary = baseline["first"]
        found = artifacts(summary.flow_run_id)
        assert set(found) == set(ARTIFACT_KEYS.values())
        md = found[ARTIFACT_KEYS["summary"]]
        assert md.type == "markdown" and summary.verdict in md.data
        assert "| detect | done |" in md.data
        table = found[ARTIFACT_KEYS["table"]]
        rows = json.loads(table.data) if isinstance(table.data, str) else table.data
        got = {(r["group"], r["name"]): r["value"] for r in rows}
        detected = json.loads((summary.run_dir / "detection/summary.json").read_text())
        assert got[("issues", "label")] == detected["counts"]["label"]
        decisions = pd.read_parquet(summary.run_dir / "cleaned/decisions.parquet")
        assert got[("decisions", "keep")] == (decisions["decision"] == "keep").sum()
        metrics = json.loads((summary.run_dir / "gan/metrics.json").read_text())
        assert got[("gan dirty", "label_accuracy")] == metrics["arms"]["dirty"]["label_accuracy"]
        # Prefect stores a link artifact as markdown: [text](link)
        link = found[ARTIFACT_KEYS["report"]]
        assert f"({(summary.run_dir / 'report.html').resolve().as_uri()})" in link.data

    def test_identical_rerun_comes_from_cache_into_a_new_folder(self, baseline):
        first, second = baseline["first"], baseline["second"]
        assert second.run_dir != first.run_dir
        assert baseline["counts"][0] == baseline["counts"][1]  # no stage function ran again
        assert second.stages == {s: "cached" for s in STAGES}
        assert second.unchanged_since == first.run_id
        states = task_states(second.flow_run_id)
        stage_tasks = ("snapshot-dataset", "run-validation", "run-detection", "clean-dataset",
                       "compare-gans", "render-report")  # fmt: skip
        assert set(states) == {*stage_tasks, "load-data"}
        for name in stage_tasks:
            assert states[name] == ["Cached"], (name, states)
        assert states["load-data"] == ["Completed"]  # loading is how a change is noticed
        # the new folder is complete on its own: copies, not links to the first run's files
        for rel in ["detection/issues.parquet", "cleaned/decisions.parquet", "report.html"]:
            a, b = first.run_dir / rel, second.run_dir / rel
            assert b.is_file() and a.read_bytes() == b.read_bytes()
            assert a.stat().st_ino != b.stat().st_ino
        info = json.loads((second.run_dir / "run.json").read_text())
        assert info["unchanged_since"] == first.run_id and info["all_cached"] is True
        assert info["stages"]["detect"]["from_run"] == first.run_id
        assert info["stages"]["detect"]["state"] == "cached"
        assert info["verdict"] == json.loads((first.run_dir / "run.json").read_text())["verdict"]

    def test_progress_lines_once_on_stderr(self, spies, small_digits, tmp_path, capsys):
        summary = run_pipeline(_config(tmp_path, small_digits, until="detect", progress=True))
        captured = capsys.readouterr()
        assert "[assay]" not in captured.out and "[detect]" not in captured.out  # for results
        for stage in ("ingest", "validate", "detect"):
            assert captured.err.count(f"[assay] {stage:<9} started") == 1
            assert captured.err.count(f"[assay] {stage:<9} done in ") == 1
        assert "[assay] clean" not in captured.err
        assert f"[assay] run folder: {summary.run_dir}" in captured.err
        # the detect task's own lines reach stderr too (Prefect's console handler is quiet)
        assert re.search(r"\[detect\] cnn epochs (\d+)/\1 \(100%\)", captured.err)
        assert "to go" not in captured.err  # a first run has nothing to estimate from

    def test_time_to_go_comes_from_the_latest_like_run(self, baseline, small_digits, capsys):
        run_pipeline(_config(baseline["root"], small_digits, inject="labels-10", progress=True))
        err = capsys.readouterr().err
        named = set(re.findall(r"to go, as run (\S+) took", err))
        assert len(named) == 1, err  # one earlier run with these parameters, named
        earlier = baseline["root"] / "runs" / named.pop() / "run.json"
        assert json.loads(earlier.read_text())["status"] == "complete"
        assert "[assay] report    cached" in err and "to go" not in err.split("report    ")[-1]

    @pytest.mark.parametrize(
        ("change", "rerun"),
        [
            ({"policy": "drop"}, {"clean", "generate", "report"}),
            pytest.param({"steps": 12}, {"generate", "report"}, marks=pytest.mark.slow),
            # the seed also drives the injection, so the data itself changes
            pytest.param({"seed": 1}, set(STAGES), marks=pytest.mark.slow),
        ],
        ids=["policy", "steps", "seed"],
    )  # fmt: skip
    def test_changed_parameter_reruns_only_downstream(
        self, baseline, spies, small_digits, change, rerun
    ):
        before = dict(spies.counts)
        summary = run_pipeline(_config(baseline["root"], small_digits, inject="labels-10",
                                       **change))  # fmt: skip
        assert {s for s, st in summary.stages.items() if st == "done"} == rerun
        assert {s for s, st in summary.stages.items() if st == "cached"} == set(STAGES) - rerun
        ran = {k for k in spies.counts if spies.counts[k] > before.get(k, 0)}
        assert ran == rerun - {"ingest"}  # ingest is not spied on

    def test_interrupt_then_crash_then_resume(self, spies, small_digits, tmp_path):
        config = _config(tmp_path, small_digits, run_dir=tmp_path / "runs" / "resumable",
                         until="clean", seed=3)  # fmt: skip
        run_json = tmp_path / "runs/resumable/run.json"
        spies.fail["detect"] = KeyboardInterrupt()
        with pytest.raises(KeyboardInterrupt):
            run_pipeline(config)
        info = json.loads(run_json.read_text())
        assert info["status"] == "interrupted"
        assert info["stages"]["validate"]["state"] == "done"
        assert info["stages"]["detect"]["state"] == "interrupted"
        assert not (tmp_path / "runs/resumable/detection").exists()  # no half-written stage

        spies.fail["clean"] = RuntimeError("worker lost")
        with pytest.raises(RuntimeError, match="worker lost"):
            run_pipeline(config)
        info = json.loads(run_json.read_text())
        assert info["status"] == "failed" and info["stages"]["clean"]["state"] == "failed"
        assert [info["stages"][s]["state"] for s in ("validate", "detect")] == ["cached", "done"]
        assert not (tmp_path / "runs/resumable/cleaned").exists()

        before = dict(spies.counts)
        # resuming with the run folder alone reloads the recorded parameters
        resumed = resume_config(RunConfig(run_dir=tmp_path / "runs" / "resumable",
                                          until="clean", progress=False), {})  # fmt: skip
        assert resumed.data == small_digits and resumed.seed == 3 and resumed.steps == 10
        summary = run_pipeline(resumed)
        assert [summary.stages[s] for s in STAGES[:4]] == ["cached", "cached", "cached", "done"]
        assert spies["detect"] == before["detect"] and spies["clean"] == before["clean"] + 1
        assert json.loads(run_json.read_text())["status"] == "complete"
        assert not list((tmp_path / "runs/resumable").rglob(".*"))  # no temp leftovers

    def test_resume_refuses_a_parameter_that_differs_from_the_record(self, baseline):
        run_dir = baseline["first"].run_dir
        config = RunConfig(run_dir=run_dir, steps=99)
        with pytest.raises(DataError, match=r"`steps` 99 differs from the 10 this run recorded"):
            resume_config(config, {"steps": 99})
        with pytest.raises(DataError, match="`data`"):
            resume_config(RunConfig(run_dir=run_dir), {"data": "digits"})
        same = resume_config(RunConfig(run_dir=run_dir, steps=10), {"steps": 10})
        assert same.inject == "labels-10" and same.steps == 10

    def test_resume_names_a_recorded_default(self, baseline, tmp_path):
        """A run recorded without --steps (the budget left to the GAN config) says so."""
        run_dir = tmp_path / "defaulted"
        run_dir.mkdir()
        info = json.loads((Path(baseline["first"].run_dir) / "run.json").read_text())
        info["parameters"]["steps"] = None
        (run_dir / "run.json").write_text(json.dumps(info))
        with pytest.raises(DataError, match=r"`steps` 750 differs from the default this run"):
            resume_config(RunConfig(run_dir=run_dir, steps=750), {"steps": 750})
        assert resume_config(RunConfig(run_dir=run_dir), {}).steps is None

    def test_changed_cached_file_is_detected_and_recomputed(
        self, baseline, spies, small_digits, capsys
    ):
        root = baseline["root"]
        config = _config(root, small_digits, inject="labels-10", until="detect")
        served = run_pipeline(config)  # served from the cache: copies of a producer's files
        info = json.loads((served.run_dir / "run.json").read_text())
        producer = served.run_dir.parent / info["stages"]["detect"]["from_run"]
        # a copy belongs to its run alone: changing it leaves the cache intact
        copy = served.run_dir / "detection/issues.parquet"
        copy.write_bytes(copy.read_bytes()[:-1] + b"\0")
        assert run_pipeline(config).stages["detect"] == "cached"
        issues = producer / "detection/issues.parquet"
        blob = bytearray(issues.read_bytes())
        blob[len(blob) // 2] ^= 0xFF  # same size, different bytes
        issues.write_bytes(bytes(blob))
        before = spies["detect"]
        second = run_pipeline(config)
        assert second.stages["detect"] == "done" and spies["detect"] == before + 1
        assert "detection/issues.parquet" in capsys.readouterr().err  # the warning names it
        pd.read_parquet(second.run_dir / "detection/issues.parquet")  # readable again

    @pytest.mark.slow
    @pytest.mark.parametrize(
        "changed",
        [
            # stages whose outputs are reproduced byte for byte: one run checks them all
            {"ingest": "dataset/images.npy", "validate": "validation/validation.json",
             "clean": "cleaned/decisions.parquet"},
            {"generate": "gan/metrics.json"},
            {"report": "report.html"},
        ],
        ids=["ingest+validate+clean", "generate", "report"],
    )  # fmt: skip
    def test_each_stage_recomputes_a_changed_cached_file(
        self, baseline, small_digits, changed, capsys
    ):
        config = _config(baseline["root"], small_digits, inject="labels-10")
        served = run_pipeline(config)  # the record now points at one producer folder
        info = json.loads((served.run_dir / "run.json").read_text())
        blobs = {}
        for stage, rel in changed.items():
            path = served.run_dir.parent / info["stages"][stage]["from_run"] / rel
            blob = bytearray(path.read_bytes())
            blob[len(blob) // 2] ^= 0xFF
            path.write_bytes(bytes(blob))
            blobs[rel] = bytes(blob)
        again = run_pipeline(config)
        err = capsys.readouterr().err
        for stage, rel in changed.items():
            assert again.stages[stage] == "done", again.stages
            assert rel in err  # the warning names the changed file
            assert (again.run_dir / rel).read_bytes() != blobs[rel]

    @pytest.mark.slow
    def test_deleted_producer_folder_is_recomputed(self, spies, small_digits, tmp_path):
        first = run_pipeline(_config(tmp_path, small_digits, until="detect", seed=21))
        shutil.rmtree(first.run_dir)
        before = spies["detect"]
        second = run_pipeline(_config(tmp_path, small_digits, until="detect", seed=21))
        assert [second.stages[s] for s in STAGES[:3]] == ["done", "done", "done"]
        assert (second.run_dir / "detection/issues.parquet").is_file()
        assert spies["detect"] == before + 1
        assert second.stages["clean"] == "skipped" and second.report is None

    @pytest.mark.slow
    def test_cache_off_recomputes_everything(self, baseline, spies, small_digits):
        before = spies["detect"]
        summary = run_pipeline(_config(baseline["root"], small_digits, inject="labels-10",
                                       cache=False))  # fmt: skip
        assert summary.stages == {s: "done" for s in STAGES}
        assert spies["detect"] == before + 1

    def test_critical_validation_failure_stops_before_detection(
        self, spies, small_digits, tmp_path
    ):
        suite = tmp_path / "strict.json"
        suite.write_text(json.dumps({"name": "strict", "expectations": [{
            "type": "expect_column_values_to_be_between",
            "kwargs": {"column": "pixel_max", "min_value": 0, "max_value": 10},
            "severity": "critical",
            "meta": {"name": "all_dark", "table": "samples", "why": "a test suite"},
        }]}))  # fmt: skip
        with pytest.raises(CriticalValidationError, match="all_dark"):
            run_pipeline(_config(tmp_path, small_digits, run_dir=tmp_path / "runs" / "bad",
                                 suite=str(suite)))  # fmt: skip
        info = json.loads((tmp_path / "runs/bad/run.json").read_text())
        assert info["status"] == "critical"
        assert info["stages"]["validate"]["state"] == "critical"
        assert (tmp_path / "runs/bad/validation/validation.json").is_file()
        assert not (tmp_path / "runs/bad/detection").exists()

    def test_bad_data_is_refused_and_leaves_nothing(self, spies, tmp_path):
        with pytest.raises(DataError, match="nope.npz"):
            run_pipeline(_config(tmp_path, str(tmp_path / "nope.npz")))
        with pytest.raises(DataError, match="`inject` must be a preset"):
            run_pipeline(_config(tmp_path, "digits", inject="mud"))
        assert not (tmp_path / "runs").exists()

    def test_data_that_fails_to_load_leaves_nothing(self, spies, tmp_path):
        """The parameters are recorded before ingest; a load that fails removes them."""
        bad = tmp_path / "junk.npz"
        bad.write_bytes(b"PK\x03\x04 not really a zip")
        with pytest.raises(DataError, match="junk.npz"):
            run_pipeline(_config(tmp_path, str(bad), run_dir=tmp_path / "runs" / "r"))
        assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.npz"]

    @pytest.mark.slow
    def test_two_runs_at_once_on_different_folders(self, spies, small_digits, tmp_path):
        results: dict[str, Any] = {}
        errors: list[BaseException] = []

        def go(name: str, seed: int) -> None:
            cfg = _config(tmp_path, small_digits, run_dir=tmp_path / "runs" / name, seed=seed,
                          inject="labels-10", until="detect")  # fmt: skip
            try:
                results[name] = run_pipeline(cfg)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=go, args=(n, s)) for n, s in (("a", 40), ("b", 43))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not errors and set(results) == {"a", "b"}
        for name, seed in (("a", 40), ("b", 43)):
            manifest = pd.read_parquet(tmp_path / "runs" / name / "dataset/manifest.parquet")
            issues = pd.read_parquet(tmp_path / "runs" / name / "detection/issues.parquet")
            assert issues["sample_id"].tolist() == manifest["sample_id"].tolist()
            info = json.loads((tmp_path / "runs" / name / "run.json").read_text())
            assert info["parameters"]["seed"] == seed and info["status"] == "complete"

    def test_config_file_round_trip_runs(self, spies, small_digits, tmp_path):
        path = tmp_path / "run.yaml"
        path.write_text(f"data: {small_digits}\nfolds: 2\nuntil: validate\n"
                        f"runs_root: {tmp_path}\n")  # fmt: skip
        summary = run_pipeline(load_config(path, overrides={"device": "cpu", "progress": False}))
        assert summary.stages["validate"] == "done" and summary.stages["detect"] == "skipped"
        assert summary.run_dir.parent == tmp_path


class TestParallelParts:
    """Folds and GAN arms as separate cached tasks (as on the process and Dask runners)."""

    def test_folds_and_arms_are_tasks_and_cached(self, spies, small_digits, tmp_path,
                                                 monkeypatch):  # fmt: skip
        monkeypatch.setattr(stages, "use_task_runner", lambda config: True)
        config = _config(tmp_path, small_digits, folds=3, seed=7)
        before = dict(spies.counts)
        first = run_pipeline(config)
        ran = {k: spies[k] - before.get(k, 0) for k in SPIED}
        assert ran["fit_fold"] == 3 and ran["detect"] == 1 and ran["prepare_generate"] == 1
        assert ran["train_arm"] == 3 and ran["finish_generate"] == 1 and ran["generate"] == 0
        states = task_states(first.flow_run_id)
        assert states["fit-fold"] == ["Completed"] * 3
        assert sorted(states["train-arm"]) == ["Completed"] * 3
        assert states["prepare-gans"] == ["Completed"]
        metrics = json.loads((first.run_dir / "gan/metrics.json").read_text())
        assert set(metrics["arms"]) == {"dirty", "clean", "noise_aware"}

        before = dict(spies.counts)
        second = run_pipeline(config)
        assert spies.counts == before  # nothing trained again
        states = task_states(second.flow_run_id)
        for name in ("fit-fold", "train-arm", "prepare-gans", "run-detection", "compare-gans"):
            assert set(states[name]) == {"Cached"}, (name, states)
        assert second.stages == {s: "cached" for s in STAGES}

    @pytest.mark.slow
    def test_missing_work_folder_is_recomputed(self, spies, small_digits, tmp_path,
                                               monkeypatch):  # fmt: skip
        monkeypatch.setattr(stages, "use_task_runner", lambda config: True)
        config = _config(tmp_path, small_digits, folds=2, seed=9, until="detect")
        run_pipeline(config)
        shutil.rmtree(tmp_path / "runs" / ".cache" / "work")
        before = spies["fit_fold"]
        summary = run_pipeline(config)
        # the detection record is still valid (its own outputs exist) ...
        assert summary.stages["detect"] == "cached"
        # ... and fold records whose files are gone were recomputed
        assert spies["fit_fold"] == before + 2


def test_code_version_follows_the_stage_sources(tmp_path, monkeypatch):
    def names(stage: str) -> set[str]:
        return {"/".join(p.parts[-2:]) for p in caching.stage_sources(stage)}

    detect, clean, generate = names("detect"), names("clean"), names("generate")
    assert {"detect/label.py", "detect/oof.py", "models/classifier.py"} <= detect
    assert "models/gan.py" not in detect and "models/gan.py" in generate
    assert "models/classifier.py" not in clean and "pipeline/clean.py" in clean
    assert "expectations/default.json" in names("validate")
    assert "templates/report.html" in names("report")

    source = tmp_path / "module.py"
    source.write_text("A = 1\n")
    monkeypatch.setattr(caching, "stage_sources", lambda stage: [source])
    v1 = caching.code_version("detect")
    assert v1.startswith(caching.assay_version() + "+")
    source.write_text("A = 22\n")
    assert caching.code_version("detect") != v1
    with pytest.raises(ValueError, match="`stage` must be one of"):
        caching.code_version("frobnicate")


def test_cache_key_ignores_where_outputs_go():
    a = caching.cache_key("clean", {"data_hash": "x", "policy": "drop", "run_dir": "/a"})
    b = caching.cache_key("clean", {"data_hash": "x", "policy": "drop", "run_dir": "/b"})
    c = caching.cache_key("clean", {"data_hash": "x", "policy": "relabel", "run_dir": "/a"})
    d = caching.cache_key("clean", {"data_hash": "y", "policy": "drop", "run_dir": "/a"})
    assert a == b and len({a, c, d}) == 3 and a.startswith("clean-")


def test_retry_only_on_transient_io_errors():
    import errno

    def state(exc):
        return types.SimpleNamespace(data=exc)

    assert tasks.transient_io_error(None, None, state(TimeoutError("slow NFS")))
    assert tasks.transient_io_error(None, None, state(OSError(errno.EIO, "EIO")))
    assert not tasks.transient_io_error(None, None, state(OSError(errno.ENOSPC, "full")))
    assert not tasks.transient_io_error(None, None, state(FileNotFoundError("x")))
    assert not tasks.transient_io_error(None, None, state(DataError("bad")))
    assert not tasks.transient_io_error(None, None, state(ValueError("x")))


# --------------------------------------------------------------------------- runners
@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("threads", RunnerSpec("threads")),
        ("processes", RunnerSpec("processes")),
        ("dask", RunnerSpec("dask")),
        ("dask:tcp://10.0.0.5:8786", RunnerSpec("dask", "tcp://10.0.0.5:8786")),
        (" Dask:localhost:8786 ", RunnerSpec("dask", "localhost:8786")),
    ],
)
def test_parse_runner(text, spec):
    assert parse_runner(text) == spec
    assert parse_runner(str(spec)) == spec


@pytest.mark.parametrize("text", ["", "thread", "threads:4", "dask:", "ray"])
def test_parse_runner_refuses(text):
    with pytest.raises(DataError, match="`runner` must be 'threads', 'processes', 'dask'"):
        parse_runner(text)


def test_open_runner_kinds():
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    with open_runner("threads", workers=3) as make:
        runner = make()
        assert isinstance(runner, ThreadPoolTaskRunner) and runner._max_workers == 3
        assert make() is not runner
    with open_runner("processes", workers=2) as make:
        assert isinstance(make(), ProcessPoolTaskRunner)
    with open_runner("dask:tcp://127.0.0.1:8786") as make:
        runner = make()
        assert isinstance(runner, DaskTaskRunner) and runner.address == "tcp://127.0.0.1:8786"


# --------------------------------------------------------------------------- schedules
@pytest.mark.slow
def test_served_deployment_has_the_cron_schedule_and_runs(tmp_path):
    """serve() registers a cron deployment; a triggered run reuses the cache."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL

    config = _config(tmp_path, "digits", until="ingest", progress=True)
    first = run_pipeline(config)
    name = "assay-test-schedule"
    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PYTHONUNBUFFERED": "1",
    }
    script = (
        "import sys, json\n"
        "from assay.flows.config import RunConfig\n"
        "from assay.flows.serve import serve\n"
        "serve(RunConfig.model_validate_json(sys.argv[1]), cron='0 3 * * *', name=sys.argv[2])\n"
    )
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-c", script, config.model_dump_json(), name],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deployment = None
        with get_client(sync_client=True) as client:
            for _ in range(120):
                try:
                    deployment = client.read_deployment_by_name(f"assay/{name}")
                    break
                except Exception:
                    if proc.poll() is not None:
                        break
                    time.sleep(0.5)
            assert deployment is not None, (tmp_path / "serve.log").read_text()
            crons = [s.schedule.cron for s in deployment.schedules]
            assert crons == ["0 3 * * *"]
            assert deployment.parameters["config"]["until"] == "ingest"
        flow_run = run_deployment(f"assay/{name}", timeout=100)
        assert flow_run.state.is_completed(), (tmp_path / "serve.log").read_text()
        runs = sorted(p.name for p in (tmp_path / "runs").iterdir() if p.name != ".cache")
        assert len(runs) == 2 and first.run_id in runs
        scheduled = [r for r in runs if r != first.run_id][0]
        info = json.loads((tmp_path / "runs" / scheduled / "run.json").read_text())
        assert info["unchanged_since"] == first.run_id
        assert info["stages"]["ingest"]["state"] == "cached"
        assert f"unchanged since {first.run_id}" in (tmp_path / "serve.log").read_text()
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        log.close()


def test_serve_refuses_a_bad_cron(tmp_path):
    from assay.flows.serve import serve

    with pytest.raises(DataError, match="cron"):
        serve(_config(tmp_path, "digits"), cron="every day at three", name="x")


def test_deployment_config_makes_paths_absolute(tmp_path, monkeypatch):
    from assay.flows.serve import deployment_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "suite.json").write_text("{}")
    config = deployment_config(RunConfig(runs_root=Path("r"), suite="suite.json"))
    assert config.runs_root == tmp_path / "r" and config.suite == str(tmp_path / "suite.json")
    assert config.run_dir is None  # every scheduled run gets a new folder
    assert config.data == "digits"  # a built-in spec stays as it is


@pytest.mark.parametrize("cron", ["0 3 * * *", "*/15 * * * 1-5"])
def test_check_cron_accepts(cron):
    from assay.flows.serve import check_cron

    assert check_cron(cron) == cron


@pytest.mark.slow
def test_local_server_starts_says_so_and_stops(tmp_path, monkeypatch, capsys):
    import httpx

    from assay.flows.serve import local_server

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    with local_server(port=_free_port()) as api:
        assert api.startswith("http://127.0.0.1:") and api.endswith("/api")
        assert os.environ["PREFECT_API_URL"] == api
        assert httpx.get(f"{api}/health", timeout=10).status_code == 200
    out = capsys.readouterr().out
    assert "PREFECT_API_URL is not set" in out and "loopback only" in out
    assert os.environ.get("PREFECT_API_URL") != api
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{api}/health", timeout=2)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_prefect_yaml_describes_the_same_flow():
    import yaml
    from prefect.utilities.importtools import import_object

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    (deployment,) = spec["deployments"]
    module, name = deployment["entrypoint"].split(":")  # a module path: works installed
    flow_ = import_object(f"{module}.{name}")
    assert flow_.name == "assay"
    flow_.validate_parameters(deployment["parameters"])  # every key is a RunConfig field
    from assay.flows.serve import check_cron

    assert all(check_cron(s["cron"]) for s in deployment["schedules"])


# --------------------------------------------------------------------------- end to end
E2E = {"data": "digits", "inject": "mixed-mild", "steps": 60, "seeds": 2, "folds": 3,
       "device": "cpu", "progress": False}  # fmt: skip

#: Every file a complete run folder holds (data docs are checked separately).
RUN_FILES = [
    "dataset/images.npy", "dataset/manifest.parquet", "dataset/dataset.json",
    "validation/validation.json", "validation/profile.parquet",
    "validation/sample_flags.parquet",
    "detection/issues.parquet", "detection/summary.json", "detection/noise_matrix.npy",
    "detection/vae.pt", "detection/vae.json",
    "cleaned/images.npy", "cleaned/manifest.parquet", "cleaned/dataset.json",
    "cleaned/decisions.parquet",
    "gan/metrics.json", "gan/comparison.png", "gan/loss_curves.png", "gan/losses.csv",
    "gan/judge.pt",
    "report.html", "run.json",
]  # fmt: skip


@pytest.fixture(scope="module")
def e2e_runs(tmp_path_factory):
    """The real pipeline on digits with injected dirt, run twice (second from cache)."""
    root = tmp_path_factory.mktemp("e2e")
    config = RunConfig(runs_root=root / "runs", **E2E)
    t0 = time.perf_counter()
    first = run_pipeline(config)
    t1 = time.perf_counter()
    second = run_pipeline(config)
    t2 = time.perf_counter()
    return {"first": first, "second": second, "seconds": (t1 - t0, t2 - t1), "root": root}


@pytest.mark.slow
def test_end_to_end_on_digits_with_injected_dirt(e2e_runs):
    import re

    first = e2e_runs["first"]
    run = first.run_dir
    assert first.stages == {s: "done" for s in STAGES}
    for rel in RUN_FILES:
        assert (run / rel).is_file() and (run / rel).stat().st_size > 0, rel
    assert not (run / "validation/data_docs").exists()  # off by default (they need a CDN)
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]  # no temp folders

    manifest = pd.read_parquet(run / "dataset/manifest.parquet")
    assert len(manifest) >= 1797 and (manifest["injected"] != "clean").sum() > 0
    issues = pd.read_parquet(run / "detection/issues.parquet")
    assert issues["sample_id"].tolist() == manifest["sample_id"].tolist()
    for col in ("is_label_issue", "label_score", "suggested_label", "is_outlier",
                "is_exact_duplicate", "is_dirty", "reasons"):  # fmt: skip
        assert col in issues.columns, col
    # the injected dirt is found far above chance
    dirty_truth = manifest["injected"].to_numpy() != "clean"
    flagged = issues["is_dirty"].to_numpy()
    assert flagged[dirty_truth].mean() > 2 * flagged[~dirty_truth].mean()

    decisions = pd.read_parquet(run / "cleaned/decisions.parquet")
    assert set(decisions["decision"]) <= {"keep", "drop", "relabel", "review"}
    assert len(decisions) == len(manifest)
    # the cleaned manifest carries the validation flags and the decisions per sample
    cleaned = pd.read_parquet(run / "cleaned/manifest.parquet").set_index("sample_id")
    flags = pd.read_parquet(run / "validation/sample_flags.parquet").set_index("sample_id")
    fails = [c for c in flags.columns if c.startswith("fails_")]
    assert fails and set(fails) <= set(cleaned.columns)
    assert cleaned[fails].equals(flags.loc[cleaned.index, fails])
    by_id = decisions.set_index("sample_id").loc[cleaned.index]
    assert cleaned["decision"].tolist() == by_id["decision"].tolist()
    metrics = json.loads((run / "gan/metrics.json").read_text())
    for arm in metrics["arms"]:
        assert (run / f"gan/samples_{arm}.png").is_file()
        assert 0.0 <= metrics["arms"][arm]["label_accuracy"] <= 1.0

    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "complete" and info["verdict"]["headline"] == first.verdict
    assert set(info["timings"]) == set(STAGES) and info["device"] == "cpu"
    assert (
        info["hashes"]["ingested"]
        == json.loads((run / "dataset/dataset.json").read_text())["content_hash"]
    )

    html = (run / "report.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html")
    remote = re.findall(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, flags=re.I)
    assert not remote
    assert run.joinpath("report.html").stat().st_size <= 5 * 1024 * 1024

    found = artifacts(first.flow_run_id)
    assert set(found) == set(ARTIFACT_KEYS.values())
    assert first.verdict in found[ARTIFACT_KEYS["summary"]].data
    rows = found[ARTIFACT_KEYS["table"]].data
    rows = json.loads(rows) if isinstance(rows, str) else rows
    names = {(r["group"], r["name"]) for r in rows}
    assert ("issues", "label") in names and ("gan dirty", "label_accuracy") in names
    assert (run / "report.html").resolve().as_uri() in found[ARTIFACT_KEYS["report"]].data


@pytest.mark.slow
def test_end_to_end_rerun_does_no_training(e2e_runs):
    first, second = e2e_runs["first"], e2e_runs["second"]
    assert second.stages == {s: "cached" for s in STAGES}
    assert second.unchanged_since == first.run_id
    states = task_states(second.flow_run_id)
    computed = {k: v for k, v in states.items() if k != "load-data"}
    assert computed and all(set(v) == {"Cached"} for v in computed.values()), states
    for rel in RUN_FILES:
        if rel != "run.json":
            a, b = first.run_dir / rel, second.run_dir / rel
            assert a.read_bytes() == b.read_bytes(), rel
            assert a.stat().st_ino != b.stat().st_ino, rel  # a copy, not a shared hard link
    # The time of a cached re-run against the first is a benchmark figure (benchmarks/flow.py).


@pytest.mark.slow
def test_dask_cluster_gives_the_same_issues_as_threads(tmp_path, small_digits):
    common = {"data": small_digits, "inject": "labels-10", "folds": 2, "device": "cpu",
              "progress": False, "until": "detect"}  # fmt: skip
    threads = run_pipeline(RunConfig(runs_root=tmp_path / "threads", runner="threads", **common))
    dask = run_pipeline(RunConfig(runs_root=tmp_path / "dask", runner="dask", workers=2, **common))
    assert threads.stages["detect"] == dask.stages["detect"] == "done"
    a = pd.read_parquet(threads.run_dir / "detection/issues.parquet")
    b = pd.read_parquet(dask.run_dir / "detection/issues.parquet")
    assert a["is_dirty"].any()
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-5, atol=1e-6)
    # the folds ran as separate tasks on Dask
    assert task_states(dask.flow_run_id)["fit-fold"] == ["Completed"] * 2
