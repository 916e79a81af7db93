"""The Prefect flows: stages, caching, resuming, artifacts, runners, schedules.

Two layers:

- wiring tests run the real flows on ``digits`` with small stand-in stage functions
  (monkeypatched in as ``pipeline.validate``, ``pipeline.detect``, ...) that write the
  agreed files and count their calls. They pin caching, invalidation, resuming, run.json
  and artifacts exactly, in seconds;
- end-to-end tests run the real stages (``digits`` with injected dirt) and are skipped
  with the reason when a stage module is not importable.

All Prefect state lives in a temporary database (``prefect_test_harness``).
"""

from __future__ import annotations

import json
import os
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

pytest.importorskip("prefect")

from prefect.client.orchestration import get_client  # noqa: E402
from prefect.client.schemas.filters import (  # noqa: E402
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterParentTaskRunId,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
)
from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from assay.flows import stages, tasks  # noqa: E402
from assay.flows.config import STAGES, RunConfig, load_config  # noqa: E402
from assay.flows.main import ARTIFACT_KEYS, run_pipeline  # noqa: E402
from assay.flows.runners import RunnerSpec, open_runner, parse_runner  # noqa: E402
from assay.pipeline.errors import CriticalValidationError, DataError  # noqa: E402

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", autouse=True)
def harness():
    """One temporary Prefect API (SQLite) for the whole module."""
    with prefect_test_harness(server_startup_timeout=180):
        yield


# --------------------------------------------------------------------------- stand-ins
class Calls:
    """Counts calls of the stand-in stage functions; can make one of them fail once."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.fail: dict[str, BaseException] = {}
        self.critical = False
        self.lock = threading.Lock()
        self.spans: list[tuple[float, float]] = []

    def hit(self, name: str) -> None:
        with self.lock:
            self.counts[name] = self.counts.get(name, 0) + 1
            exc = self.fail.pop(name, None)
        if exc is not None:
            raise exc

    def __getitem__(self, name: str) -> int:
        return self.counts.get(name, 0)


def _fake_modules(calls: Calls) -> dict[str, types.ModuleType]:
    from assay.pipeline import io
    from assay.pipeline.atomic import write_json, write_parquet, write_text

    validate = types.ModuleType("assay.pipeline.validate")

    class Result:
        def __init__(self, dataset: Any) -> None:
            self.success_critical = not calls.critical
            self.results = [
                {"expectation": "labels_in_set", "severity": "critical",
                 "success": not calls.critical, "column": "label"},
                {"expectation": "ink_fraction", "severity": "warning", "success": False,
                 "column": "ink"},
            ]  # fmt: skip
            self.sample_flags = pd.DataFrame(
                {"sample_id": dataset.sample_ids, "ink": dataset.sample_ids % 50 == 0}
            )

        def to_json(self) -> dict[str, Any]:
            return {"success_critical": self.success_critical, "results": self.results}

    def fake_validate(dataset, *, suite_path=None, reference=None, out_dir=None, data_docs=True):
        calls.hit("validate")
        result = Result(dataset)
        write_json(Path(out_dir) / "validation.json", result.to_json())
        if data_docs:
            write_text(Path(out_dir) / "data_docs" / "index.html", "<html>docs</html>")
        return result

    validate.validate = fake_validate
    validate.critical_failures_message = lambda r: "critical expectation failed: labels_in_set"

    detect = types.ModuleType("assay.pipeline.detect")

    def fake_detect(dataset, *, out_dir, seed=0, device="auto", folds=5, progress=True):
        calls.hit("detect")
        flag = (dataset.sample_ids + seed) % 10 == 0
        issues = pd.DataFrame(
            {
                "sample_id": dataset.sample_ids,
                "given_label": dataset.labels,
                "is_label_issue": flag,
                "label_score": np.where(flag, 0.1, 0.9),
                "is_dirty": flag,
                "reasons": np.where(flag, "label issue", ""),
            }
        )
        summary = {"counts": {"label": int(flag.sum()), "dirty": int(flag.sum())},
                   "n_dirty": int(flag.sum()), "folds": folds}  # fmt: skip
        write_parquet(Path(out_dir) / "issues.parquet", issues)
        write_json(Path(out_dir) / "summary.json", summary)
        k = dataset.n_classes
        np.save(Path(out_dir) / "noise_matrix.npy", np.eye(k), allow_pickle=False)
        return types.SimpleNamespace(issues=issues, summary=summary)

    detect.run_detection = fake_detect

    clean = types.ModuleType("assay.pipeline.clean")

    def fake_clean(dataset, issues, *, policy="relabel"):
        calls.hit("clean")
        dirty = issues["is_dirty"].to_numpy()
        decisions = pd.DataFrame(
            {
                "sample_id": dataset.sample_ids,
                "decision": np.where(dirty, "drop" if policy == "drop" else "review", "keep"),
                "reason": np.where(dirty, "label issue", ""),
                "old_label": dataset.labels,
                "new_label": dataset.labels,
            }
        )
        return (dataset.subset(~dirty) if policy == "drop" else dataset), decisions

    def fake_write_cleaned(cleaned, decisions, out_dir):
        io.save(cleaned, out_dir)
        write_parquet(Path(out_dir) / "decisions.parquet", decisions)
        return Path(out_dir)

    clean.clean = fake_clean
    clean.write_cleaned = fake_write_cleaned

    generate = types.ModuleType("assay.pipeline.generate")

    def fake_compare(dirty, cleaned, issues, *, noise_matrix, out_dir, steps, device="auto",
                     seed=0, vae_dir=None, progress=True):  # fmt: skip
        calls.hit("generate")
        assert Path(vae_dir, "issues.parquet").exists()
        metrics = {
            "steps": steps,
            "arms": {
                "dirty": {"fid": 20.0, "label_accuracy": 0.5},
                "cleaned": {"fid": 10.0 + len(cleaned) / 1e4, "label_accuracy": 0.8},
            },
        }
        write_json(Path(out_dir) / "metrics.json", metrics)
        Path(out_dir, "samples_dirty.png").write_bytes(b"\x89PNG fake")
        return metrics

    generate.compare_gans = fake_compare

    report = types.ModuleType("assay.pipeline.report")

    def fake_render(run_dir):
        calls.hit("report")
        run = json.loads(Path(run_dir, "run.json").read_text())
        return write_text(Path(run_dir) / "report.html", f"<p>{run['verdict']['text']}</p>")

    report.render_report = fake_render
    return {
        "assay.pipeline.validate": validate,
        "assay.pipeline.detect": detect,
        "assay.pipeline.detect.oof": types.ModuleType(
            "assay.pipeline.detect.oof"
        ),  # no per-fold API
        "assay.pipeline.clean": clean,
        "assay.pipeline.generate": generate,
        "assay.pipeline.report": report,
    }


def _fake_parallel_modules(calls: Calls) -> dict[str, types.ModuleType]:
    """Stand-ins that also expose per-fold and per-arm training (the parallel paths)."""
    from assay.pipeline.atomic import write_json

    modules = _fake_modules(calls)
    oof = types.ModuleType("assay.pipeline.detect.oof")

    class FoldResult:
        def __init__(self, fold: int, probs: np.ndarray) -> None:
            self.fold, self.probs = fold, probs

        def save(self, path: Path) -> None:
            np.savez(path, fold=self.fold, probs=self.probs)

        @classmethod
        def load(cls, path: Path) -> FoldResult:
            with np.load(path, allow_pickle=False) as z:
                return cls(int(z["fold"]), z["probs"])

    def fit_fold(dataset, fold, *, n_folds=5, seed=0, device="auto", progress=False):
        t0 = time.perf_counter()
        calls.hit("fold")
        time.sleep(0.5)
        with calls.lock:
            calls.spans.append((t0, time.perf_counter()))
        rows = np.flatnonzero(np.arange(len(dataset)) % n_folds == fold)
        probs = np.zeros((len(dataset), dataset.n_classes))
        probs[rows, (dataset.labels[rows] + (rows % 7 == 0)) % dataset.n_classes] = 1.0
        return FoldResult(fold, probs)

    def assemble_oof(dataset, fold_results, *, seed=0):
        calls.hit("assemble")
        assert [r.fold for r in fold_results] == list(range(len(fold_results)))
        return types.SimpleNamespace(pred_probs=sum(r.probs for r in fold_results))

    oof.FoldResult, oof.fit_fold, oof.assemble_oof = FoldResult, fit_fold, assemble_oof
    modules["assay.pipeline.detect.oof"] = oof

    detect = modules["assay.pipeline.detect"]
    plain_detect = detect.run_detection

    def detect_with_oof(dataset, *, out_dir, seed=0, device="auto", folds=5, progress=True,
                        oof=None):  # fmt: skip
        assert oof is not None, "the flow must pass the assembled folds"
        result = plain_detect(dataset, out_dir=out_dir, seed=seed, device=device, folds=folds)
        flags = oof.pred_probs.argmax(axis=1) != dataset.labels
        result.issues["is_label_issue"] = flags
        from assay.pipeline.atomic import write_parquet

        write_parquet(Path(out_dir) / "issues.parquet", result.issues)
        return result

    detect.run_detection = detect_with_oof

    generate = modules["assay.pipeline.generate"]

    def prepare(dirty, cleaned, issues, *, noise_matrix, out_dir, steps, device="auto", seed=0,
                vae_dir=None, progress=False):  # fmt: skip
        calls.hit("prepare")
        plan = {"arms": ["dirty", "clean"], "steps": steps}
        write_json(Path(out_dir) / "plan.json", plan)
        return plan

    def train_arm(arm, dirty, cleaned, *, plan_dir, out_dir, steps, device="auto", seed=0,
                  progress=False):  # fmt: skip
        t0 = time.perf_counter()
        calls.hit(f"arm-{arm}")
        assert json.loads(Path(plan_dir, "plan.json").read_text())["steps"] == steps
        time.sleep(0.5)
        with calls.lock:
            calls.spans.append((t0, time.perf_counter()))
        Path(out_dir, f"samples_{arm}.png").write_bytes(b"\x89PNG " + arm.encode())
        return {"fid": 10.0 if arm == "clean" else 20.0, "label_accuracy": 0.7}

    def finish(plan_dir, arm_dirs, *, out_dir):
        calls.hit("finish")
        for arm, folder in arm_dirs.items():
            name = f"samples_{arm}.png"
            Path(out_dir, name).write_bytes(Path(folder, name).read_bytes())
        metrics = {"arms": {arm: {"fid": 10.0 if arm == "clean" else 20.0} for arm in arm_dirs}}
        write_json(Path(out_dir) / "metrics.json", metrics)
        return metrics

    generate.prepare_comparison, generate.train_arm = prepare, train_arm
    generate.finish_comparison = finish
    return modules


@pytest.fixture(scope="class")
def fakes():
    """Stand-in stage modules for one test class (ingest stays real: scikit-learn digits)."""
    calls = Calls()
    with pytest.MonkeyPatch.context() as mp:
        for name, module in _fake_modules(calls).items():
            mp.setitem(sys.modules, name, module)
        yield calls


def _config(tmp_path: Path, **kw: Any) -> RunConfig:
    base = {"data": "digits", "runs_root": tmp_path / "runs", "steps": 5, "folds": 2,
            "device": "cpu", "progress": False, "data_docs": True}  # fmt: skip
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
@pytest.fixture(scope="class")
def baseline(fakes, tmp_path_factory):
    """A full run with stand-in stages, then the identical run again."""
    root = tmp_path_factory.mktemp("baseline")
    first = run_pipeline(_config(root, inject="labels-10"))
    counts_after_first = dict(fakes.counts)
    second = run_pipeline(_config(root, inject="labels-10"))
    return {"root": root, "first": first, "second": second,
            "counts": (counts_after_first, dict(fakes.counts))}  # fmt: skip


class TestWiring:
    """The flows with stand-in stage functions: caching, invalidation, faults, artifacts."""

    def test_first_run_writes_every_stage_and_run_json(self, baseline):
        summary = baseline["first"]
        run = summary.run_dir
        assert summary.stages == {s: "done" for s in STAGES}
        assert summary.unchanged_since is None
        for rel in ["dataset/images.npy", "dataset/manifest.parquet", "dataset/dataset.json",
                    "validation/validation.json", "validation/data_docs/index.html",
                    "detection/issues.parquet", "detection/summary.json",
                    "detection/noise_matrix.npy", "cleaned/images.npy",
                    "cleaned/decisions.parquet", "gan/metrics.json", "gan/samples_dirty.png",
                    "report.html", "run.json"]:  # fmt: skip
            assert (run / rel).is_file(), rel
        assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temp folders
        info = json.loads((run / "run.json").read_text())
        assert info["status"] == "complete"
        assert info["parameters"]["inject"] == "labels-10"
        assert info["parameters"]["steps"] == 5
        assert set(info["timings"]) == set(STAGES)
        assert {s: v["state"] for s, v in info["stages"].items()} == {s: "done" for s in STAGES}
        assert info["hashes"]["ingested"] != info["hashes"]["data"]  # dirt was injected
        assert len(info["hashes"]["issues"]) == 64
        assert info["versions"]["prefect"].startswith("3.")
        assert info["code"]["detect"].startswith(tasks.assay_version() + "+")
        assert info["verdict"]["text"] == summary.verdict
        assert "180 of 1797 samples (10.0%) look dirty" in summary.verdict
        assert "GAN label accuracy: dirty 0.5, cleaned 0.8" in summary.verdict
        assert summary.report == run / "report.html"
        assert summary.verdict in summary.report.read_text()
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
        n_label = json.loads((summary.run_dir / "detection/summary.json").read_text())
        assert got[("issues", "label")] == n_label["counts"]["label"] == 180
        assert got[("decisions", "review")] == 180
        assert got[("gan cleaned", "label_accuracy")] == 0.8
        assert got[("gan dirty", "fid")] == 20.0
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
        # the new folder is complete on its own (hard links to the first run's outputs)
        for rel in ["detection/issues.parquet", "cleaned/decisions.parquet", "report.html",
                    "validation/data_docs/index.html"]:  # fmt: skip
            a, b = first.run_dir / rel, second.run_dir / rel
            assert b.is_file() and a.read_bytes() == b.read_bytes()
        info = json.loads((second.run_dir / "run.json").read_text())
        assert info["unchanged_since"] == first.run_id and info["all_cached"] is True
        assert info["stages"]["detect"]["from_run"] == first.run_id
        assert info["stages"]["detect"]["state"] == "cached"

    def test_progress_lines(self, fakes, tmp_path, capsys):
        summary = run_pipeline(_config(tmp_path, until="validate"))
        out = capsys.readouterr().out
        for stage in ("ingest", "validate"):
            assert f"[assay] {stage:<9} started" in out
            assert f"[assay] {stage:<9} done in " in out
        assert "[assay] detect" not in out
        assert f"[assay] run folder: {summary.run_dir}" in out

    @pytest.mark.parametrize(
        ("change", "rerun"),
        [
            ({"policy": "drop"}, {"clean", "generate", "report"}),
            pytest.param({"steps": 7}, {"generate", "report"}, marks=pytest.mark.slow),
            # the seed also drives the injection, so the data itself changes
            pytest.param({"seed": 1}, set(STAGES), marks=pytest.mark.slow),
            pytest.param({"data_docs": False}, {"validate", "report"}, marks=pytest.mark.slow),
        ],
        ids=["policy", "steps", "seed", "data_docs"],
    )  # fmt: skip
    def test_changed_parameter_reruns_only_downstream(self, baseline, fakes, change, rerun):
        before = dict(fakes.counts)
        summary = run_pipeline(_config(baseline["root"], inject="labels-10", **change))
        assert {s for s, st in summary.stages.items() if st == "done"} == rerun
        assert {s for s, st in summary.stages.items() if st == "cached"} == set(STAGES) - rerun
        ran = {k for k in fakes.counts if fakes.counts[k] > before.get(k, 0)}
        assert ran == rerun - {"ingest"}  # ingest is the real one, not a counted stand-in

    def test_interrupt_then_crash_then_resume(self, fakes, tmp_path):
        config = _config(tmp_path, run_dir=tmp_path / "runs" / "resumable", until="clean")
        run_json = tmp_path / "runs/resumable/run.json"
        fakes.fail["detect"] = KeyboardInterrupt()
        with pytest.raises(KeyboardInterrupt):
            run_pipeline(config)
        info = json.loads(run_json.read_text())
        assert info["status"] == "interrupted"
        assert info["stages"]["validate"]["state"] == "done"
        assert info["stages"]["detect"]["state"] == "interrupted"
        assert not (tmp_path / "runs/resumable/detection").exists()  # no half-written stage

        fakes.fail["clean"] = RuntimeError("worker lost")
        with pytest.raises(RuntimeError, match="worker lost"):
            run_pipeline(config)
        info = json.loads(run_json.read_text())
        assert info["status"] == "failed" and info["stages"]["clean"]["state"] == "failed"
        assert [info["stages"][s]["state"] for s in ("validate", "detect")] == ["cached", "done"]
        assert not (tmp_path / "runs/resumable/cleaned").exists()

        before = dict(fakes.counts)
        summary = run_pipeline(config)
        assert [summary.stages[s] for s in STAGES[:4]] == ["cached", "cached", "cached", "done"]
        assert fakes["detect"] == before["detect"] and fakes["clean"] == before["clean"] + 1
        assert json.loads(run_json.read_text())["status"] == "complete"

    @pytest.mark.slow
    def test_deleted_producer_folder_is_recomputed(self, fakes, tmp_path):
        import shutil

        first = run_pipeline(_config(tmp_path, until="detect", seed=21))
        shutil.rmtree(first.run_dir)
        before = fakes["detect"]
        second = run_pipeline(_config(tmp_path, until="detect", seed=21))
        assert [second.stages[s] for s in STAGES[:3]] == ["done", "done", "done"]
        assert (second.run_dir / "detection/issues.parquet").is_file()
        assert fakes["detect"] == before + 1
        assert second.stages["clean"] == "skipped" and second.report is None

    @pytest.mark.slow
    def test_cache_off_recomputes_everything(self, baseline, fakes):
        before = fakes["detect"]
        summary = run_pipeline(_config(baseline["root"], inject="labels-10", cache=False))
        assert summary.stages == {s: "done" for s in STAGES}
        assert fakes["detect"] == before + 1

    def test_critical_validation_failure_stops_before_detection(self, fakes, tmp_path):
        fakes.critical = True
        try:
            with pytest.raises(CriticalValidationError, match="labels_in_set"):
                run_pipeline(_config(tmp_path, run_dir=tmp_path / "runs" / "bad", seed=33))
        finally:
            fakes.critical = False
        info = json.loads((tmp_path / "runs/bad/run.json").read_text())
        assert info["status"] == "critical"
        assert info["stages"]["validate"]["state"] == "critical"
        assert (tmp_path / "runs/bad/validation/validation.json").is_file()
        assert not (tmp_path / "runs/bad/detection").exists()

    def test_bad_data_is_refused_and_leaves_nothing(self, fakes, tmp_path):
        with pytest.raises(DataError, match="nope.npz"):
            run_pipeline(_config(tmp_path, data=str(tmp_path / "nope.npz")))
        with pytest.raises(DataError, match="`inject` must be a preset"):
            run_pipeline(_config(tmp_path, inject="mud"))
        assert not (tmp_path / "runs").exists()

    @pytest.mark.slow
    def test_two_runs_at_once_on_different_folders(self, fakes, tmp_path):
        results: dict[str, Any] = {}
        errors: list[BaseException] = []

        def go(name: str, seed: int) -> None:
            cfg = _config(tmp_path, run_dir=tmp_path / "runs" / name, seed=seed, until="clean")
            try:
                results[name] = run_pipeline(cfg)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=go, args=(n, s)) for n, s in (("a", 40), ("b", 43))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors and set(results) == {"a", "b"}
        for name, seed in (("a", 40), ("b", 43)):
            issues = pd.read_parquet(tmp_path / "runs" / name / "detection/issues.parquet")
            assert ((issues["sample_id"] + seed) % 10 == 0).equals(issues["is_label_issue"])
            info = json.loads((tmp_path / "runs" / name / "run.json").read_text())
            assert info["parameters"]["seed"] == seed and info["status"] == "complete"

    def test_config_file_round_trip_runs(self, fakes, tmp_path):
        path = tmp_path / "run.yaml"
        path.write_text(f"data: digits\nfolds: 2\nuntil: validate\nruns_root: {tmp_path}\n")
        summary = run_pipeline(load_config(path, overrides={"device": "cpu", "progress": False}))
        assert summary.stages["validate"] == "done" and summary.stages["detect"] == "skipped"
        assert summary.run_dir.parent == tmp_path


@pytest.fixture(scope="class")
def parallel_fakes():
    """Stand-ins exposing per-fold and per-arm training, for one test class."""
    calls = Calls()
    with pytest.MonkeyPatch.context() as mp:
        for name, module in _fake_parallel_modules(calls).items():
            mp.setitem(sys.modules, name, module)
        yield calls


class TestParallelParts:
    """Folds and GAN arms as separate cached tasks (when the stage modules expose them)."""

    def test_folds_and_arms_are_tasks_and_cached(self, parallel_fakes, tmp_path, monkeypatch):
        monkeypatch.setattr(stages, "use_task_runner", lambda config: True)
        calls = parallel_fakes
        config = _config(tmp_path, folds=3)
        first = run_pipeline(config)
        assert calls["fold"] == 3 and calls["assemble"] == 1 and calls["prepare"] == 1
        assert calls["arm-dirty"] == 1 and calls["arm-clean"] == 1 and calls["finish"] == 1
        states = task_states(first.flow_run_id)
        assert states["fit-fold"] == ["Completed"] * 3
        assert sorted(states["train-arm"]) == ["Completed"] * 2
        assert states["prepare-gans"] == ["Completed"]
        gan = first.run_dir / "gan"
        assert {p.name for p in gan.iterdir()} == {"metrics.json", "samples_dirty.png",
                                                   "samples_clean.png"}  # fmt: skip
        issues = pd.read_parquet(first.run_dir / "detection/issues.parquet")
        assert issues["is_label_issue"].sum() == (np.arange(1797) % 7 == 0).sum()

        before = dict(calls.counts)
        second = run_pipeline(config)
        assert calls.counts == before  # nothing trained again
        states = task_states(second.flow_run_id)
        for name in ("fit-fold", "train-arm", "prepare-gans", "run-detection", "compare-gans"):
            assert set(states[name]) == {"Cached"}, (name, states)
        assert len(states["fit-fold"]) == 3 and len(states["train-arm"]) == 2
        assert second.stages == {s: "cached" for s in STAGES}

    def test_parallel_runner_submits_folds_side_by_side(self, parallel_fakes, tmp_path,
                                                        monkeypatch):  # fmt: skip
        monkeypatch.setattr(stages, "use_task_runner", lambda config: True)
        calls = parallel_fakes
        calls.spans.clear()
        summary = run_pipeline(_config(tmp_path, folds=2, seed=5, until="detect", workers=2))
        spans = sorted(calls.spans)
        assert len(spans) == 2 and spans[1][0] < spans[0][1]  # the two folds overlapped
        assert summary.stages["detect"] == "done"

    @pytest.mark.slow
    def test_missing_work_folder_is_recomputed(self, parallel_fakes, tmp_path, monkeypatch):
        import shutil

        monkeypatch.setattr(stages, "use_task_runner", lambda config: True)

        calls = parallel_fakes
        config = _config(tmp_path, folds=2, seed=9, until="detect")
        run_pipeline(config)
        shutil.rmtree(tmp_path / "runs" / ".cache" / "work")
        before = calls["fold"]
        summary = run_pipeline(config.model_copy(update={"cache": True}))
        # the detection record is still valid (its own outputs exist) ...
        assert summary.stages["detect"] == "cached"
        # ... and fold records whose files are gone were recomputed
        assert calls["fold"] == before + 2


def test_code_version_follows_the_stage_sources(tmp_path):
    root = tmp_path / "src"
    files = {
        "pipeline/__init__.py": "",
        "pipeline/io.py": "from pipeline.dataset import Dataset\n",
        "pipeline/dataset.py": "D = 1\n",
        "pipeline/clean.py": "from pipeline import io\n",
        "pipeline/detect/__init__.py": (
            "from pipeline.detect import label\n"
            "for m in ('assay.pipeline.detect.extra',):\n    __import__(m)\n"
        ),
        "pipeline/detect/label.py": "def f():\n    from models.net import Net\n",
        "pipeline/detect/extra.py": "E = 1\n",
        "models/__init__.py": "",
        "models/net.py": "Net = 1\n",
        "models/gan.py": "G = 1\n",
        "expectations/default.json": "{}",
        "pipeline/validate.py": "from . import io\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    names = {p.relative_to(root).as_posix() for p in tasks.stage_sources("detect", root=root)}
    assert names == {"pipeline/__init__.py", "pipeline/io.py", "pipeline/dataset.py",
                     "pipeline/detect/__init__.py", "pipeline/detect/label.py",
                     "pipeline/detect/extra.py", "models/__init__.py", "models/net.py"}  # fmt: skip
    validate = {p.relative_to(root).as_posix() for p in tasks.stage_sources("validate", root=root)}
    assert {"expectations/default.json", "pipeline/io.py"} <= validate  # relative import too

    def versions() -> dict[str, str]:
        return {s: tasks.code_version(s, root=root) for s in ("detect", "clean")}

    v1 = versions()
    assert v1["clean"].startswith(tasks.assay_version() + "+")
    (root / "models/gan.py").write_text("G = 22\n")  # imported by no stage here
    assert versions() == v1
    (root / "models/net.py").write_text("Net = 22\n")  # imported lazily by a detector
    v2 = versions()
    assert v2["detect"] != v1["detect"] and v2["clean"] == v1["clean"]
    (root / "pipeline/dataset.py").write_text("D = 22\n")  # shared by every stage
    v3 = versions()
    assert v3["detect"] != v2["detect"] and v3["clean"] != v2["clean"]
    with pytest.raises(ValueError, match="`stage` must be one of"):
        tasks.code_version("frobnicate")


def test_cache_key_ignores_where_outputs_go():
    a = tasks.cache_key("clean", {"data_hash": "x", "policy": "drop", "run_dir": "/a"})
    b = tasks.cache_key("clean", {"data_hash": "x", "policy": "drop", "run_dir": "/b"})
    c = tasks.cache_key("clean", {"data_hash": "x", "policy": "relabel", "run_dir": "/a"})
    d = tasks.cache_key("clean", {"data_hash": "y", "policy": "drop", "run_dir": "/a"})
    assert a == b and len({a, c, d}) == 3 and a.startswith("clean-")


def test_retry_only_on_transient_io_errors():
    def state(exc):
        return types.SimpleNamespace(data=exc)

    assert tasks.transient_io_error(None, None, state(TimeoutError("slow NFS")))
    assert tasks.transient_io_error(None, None, state(OSError(5, "EIO")))
    assert not tasks.transient_io_error(None, None, state(FileNotFoundError("x")))
    assert not tasks.transient_io_error(None, None, state(DataError("bad")))
    assert not tasks.transient_io_error(None, None, state(ValueError("x")))


def test_missing_stage_module_gives_a_plain_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "assay.pipeline.nonexistent", None)
    with pytest.raises(Exception, match="assay.pipeline.nonexistent"):
        tasks.stage_module("assay.pipeline.nonexistent")
    with pytest.raises(Exception, match="has no frobnicate"):
        tasks.stage_function("assay.pipeline.atomic", "frobnicate")


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

    config = _config(tmp_path, until="ingest")
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
        "from flows.config import RunConfig\n"
        "from flows.serve import serve\n"
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
        serve(_config(tmp_path), cron="every day at three", name="x")


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
    path, name = deployment["entrypoint"].split(":")
    module = ".".join(Path(path).with_suffix("").parts)
    flow_ = import_object(f"{module}.{name}")
    assert flow_.name == "assay"
    flow_.validate_parameters(deployment["parameters"])  # every key is a RunConfig field
    from assay.flows.serve import check_cron

    assert all(check_cron(s["cron"]) for s in deployment["schedules"])


# --------------------------------------------------------------------------- end to end
def _real_stages_missing() -> str | None:
    import importlib

    needed = {
        "assay.pipeline.io": "load", "assay.pipeline.inject": "inject",
        "assay.pipeline.validate": "validate",
        "assay.pipeline.detect": "run_detection", "assay.pipeline.clean": "clean",
        "assay.pipeline.generate": "compare_gans", "assay.pipeline.report": "render_report",
    }  # fmt: skip
    for module, fn in needed.items():
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            return f"{module} is not importable yet ({exc})"
        if not hasattr(mod, fn):
            return f"{module}.{fn} does not exist yet"
    return None


requires_stages = pytest.mark.skipif(
    _real_stages_missing() is not None, reason=str(_real_stages_missing())
)

E2E = {"data": "digits", "inject": "mixed-mild", "steps": 60, "folds": 3, "device": "cpu",
       "progress": False}  # fmt: skip

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
    if _real_stages_missing():
        pytest.skip(str(_real_stages_missing()))
    root = tmp_path_factory.mktemp("e2e")
    config = RunConfig(runs_root=root / "runs", **E2E)
    t0 = time.perf_counter()
    first = run_pipeline(config)
    t1 = time.perf_counter()
    second = run_pipeline(config)
    t2 = time.perf_counter()
    return {"first": first, "second": second, "seconds": (t1 - t0, t2 - t1), "root": root}


@requires_stages
@pytest.mark.slow
def test_end_to_end_on_digits_with_injected_dirt(e2e_runs):
    import re

    first = e2e_runs["first"]
    run = first.run_dir
    assert first.stages == {s: "done" for s in STAGES}
    for rel in RUN_FILES:
        assert (run / rel).is_file() and (run / rel).stat().st_size > 0, rel
    assert (run / "validation/data_docs").is_dir()
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
    assert info["status"] == "complete" and info["verdict"]["text"] == first.verdict
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


@requires_stages
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
            assert (second.run_dir / rel).stat().st_size == (first.run_dir / rel).stat().st_size
    # The time of a cached re-run against the first is a benchmark figure (benchmarks/flow.py).


@pytest.fixture(scope="module")
def small_digits(tmp_path_factory) -> str:
    """The first 400 of scikit-learn's digits as an .npz (a quick data set for runners)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    path = tmp_path_factory.mktemp("data") / "digits400.npz"
    images = np.round(digits.images[:400] * 255 / 16).astype(np.uint8)
    np.savez(path, images=images, labels=digits.target[:400])
    return str(path)


@requires_stages
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
    if tasks.parallel_detection_available():  # the folds ran as separate tasks on Dask
        assert task_states(dask.flow_run_id)["fit-fold"] == ["Completed"] * 2
