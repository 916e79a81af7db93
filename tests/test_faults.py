"""Faults of whole runs: kill -9 and SIGTERM anywhere, then a resume; runs side by side.

Every case runs the real ``assay run`` command as a subprocess, in a session of its own
(so that the whole process group can be killed), on 200 scikit-learn digits with 10 %
injected label noise and the smallest budgets that still run every stage (2 folds,
5 GAN steps, 1 seed, CPU).

To keep the CPU cost near three full runs, the kill points form one chain on one
run folder: the run is killed at the first point, ``assay run --run-dir DIR`` *alone*
resumes it and is killed at the next point, and so on; the last resume finishes the
run, whose artifacts must then equal those of an uninterrupted run with the same
parameters. Each link checks that the stages the killed process had finished come from
the cache in the next one (a resume keeps what was done), that no process of the killed
run survives it (found by scanning ``/proc`` for this module's unique temporary path in
a process's environment or command line), and, after a SIGTERM, exit 143 with one
``assay:`` line and no temporary file left.

Kills alternate between the main process alone (``kill -9 PID``, as a timeout does: the
run's temporary Prefect server must then stop by itself) and the whole process group;
SIGTERM goes to the main process. The runs killed alone and those sent SIGTERM use
Prefect's temporary server (what a user without a Prefect server gets); the others and
the runs side by side talk to one Prefect test server shared by the module, which saves
a server start per process.

Two identical runs on CPU write byte-identical files, except for wall-clock timings
(``seconds`` and ``images_per_second`` fields in the JSON summaries, a duration at the
end of the VAE detector's summary line, the ``seconds`` column of the GAN losses) and
the run's own paths and timings in ``run.json`` and ``report.html``; those are compared
without them (``report.html`` through the verdict that ``run.json`` records). Corrupted
cached files of every stage are covered in ``test_flows.py``
(``test_changed_cached_file_is_detected_and_recomputed`` and
``test_each_stage_recomputes_a_changed_cached_file``).

The reference is the seed-0 run of the pair started side by side: a concurrent run that
disturbed it would show here as well.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from assay.flows.resume import OPERATIONAL

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

#: The run's parameters: every stage runs, on the least work that exercises it.
RUN_ARGS = ("--inject", "labels-10", "--steps", "5", "--seeds", "1", "--folds", "2",
            "--device", "cpu")  # fmt: skip

#: The output whose appearance marks the end of each stage's work.
OUTPUTS = {"ingest": "dataset", "validate": "validation", "detect": "detection",
           "clean": "cleaned", "generate": "gan", "report": "report.html"}  # fmt: skip
STAGES = tuple(OUTPUTS)

#: JSON files holding wall-clock timings, and the keys that hold them.
TIMED_JSON = ("detection/summary.json", "validation/validation.json", "gan/metrics.json",
              "gan/losses.json")  # fmt: skip
TIMING_KEYS = frozenset({"seconds", "seconds_per_seed", "seconds_total", "images_per_second",
                         "timings"})  # fmt: skip
#: A duration in a summary line ("1.3s").
SECONDS_IN_TEXT = re.compile(r"\b\d+(?:\.\d+)?s\b")
#: run.json hashes of files that hold timings (the GAN metrics, the report).
TIMED_HASHES = frozenset({"gan_metrics", "report"})

WAIT_S = 420  # the longest a step may take on a busy machine


# --------------------------------------------------------------------------- processes
@dataclass
class Env:
    root: Path
    data: Path
    marker: bytes  # in the environment of every process this module starts
    api_url: str
    cwd: Path

    def environ(self, *, api: bool) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        env.update(PREFECT_HOME=str(self.root / "prefect-home"), PYTHONUNBUFFERED="1",
                   PREFECT_SERVER_ANALYTICS_ENABLED="false")  # fmt: skip
        if api:
            env["PREFECT_API_URL"] = self.api_url
        return env


@dataclass
class Proc:
    """One ``assay run`` subprocess, its output in a log file."""

    popen: subprocess.Popen[bytes]
    log: Path
    started: float = field(default_factory=time.monotonic)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def finished_stages(self) -> set[str]:
        """Stages whose end ("done in" / "cached in") this process printed."""
        out = set()
        for line in self.text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "[assay]" and parts[2] in ("done", "cached"):
                out.add(parts[1])
        return out

    def states(self) -> dict[str, str]:
        out = {}
        for line in self.text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "[assay]" and parts[1] in STAGES:
                out[parts[1]] = parts[2]
        return out


def start(env: Env, args: list[str], log: Path, *, api: bool) -> Proc:
    fh = open(log, "wb")  # noqa: SIM115  (closed by the child's exit; the test reads the file)
    popen = subprocess.Popen(
        [sys.executable, "-m", "assay.flows.cli", "run", *args],
        stdout=fh, stderr=subprocess.STDOUT, env=env.environ(api=api), cwd=env.cwd,
        start_new_session=True,
    )  # fmt: skip
    fh.close()
    return Proc(popen, log)


def finish(proc: Proc, timeout: float = WAIT_S) -> int:
    try:
        return proc.popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.popen.pid, signal.SIGKILL)
        proc.popen.wait()
        pytest.fail(f"assay run did not end in {timeout} s:\n{proc.text()[-3000:]}")


def wait_for(proc: Proc, ready: Callable[[], bool], what: str) -> None:
    """Poll until ``ready()``; fail when the run ends first or takes too long."""
    deadline = time.monotonic() + WAIT_S
    while not ready():
        if proc.popen.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.popen.returncode}) before {what}:\n"
                        f"{proc.text()[-3000:]}")  # fmt: skip
        if time.monotonic() > deadline:
            os.killpg(proc.popen.pid, signal.SIGKILL)
            pytest.fail(f"no {what} after {WAIT_S} s:\n{proc.text()[-3000:]}")
        time.sleep(0.02)


def handles_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has installed a SIGTERM handler (``SigCgt`` in /proc)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    except OSError:
        pass
    return False


def processes_with(marker: bytes) -> dict[int, str]:
    """Live processes (not zombies) whose environment or command line holds ``marker``."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                state = fh.read().rsplit(b")", 1)[1].split()[0]
            with open(f"/proc/{entry}/environ", "rb") as fh:
                environ = fh.read()
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except (OSError, IndexError):
            continue
        if state != b"Z" and (marker in environ or marker in cmdline):
            found[int(entry)] = cmdline.replace(b"\0", b" ").decode(errors="replace")[:200]
    return found


def assert_none_survive(env: Env, timeout: float = 30) -> None:
    """No process of a killed run is left (its Prefect server stops with its parent)."""
    deadline = time.monotonic() + timeout
    while (alive := processes_with(env.marker)) and time.monotonic() < deadline:
        time.sleep(0.25)
    for pid in alive:  # do not leave them to the next test
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not alive, f"processes of the killed run survived it: {alive}"


def leftovers(root: Path) -> list[str]:
    """Temporary files and folders (``.<name>.<pid>.*.tmp``, ``.work*``, ``.old-``)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.name.endswith(".tmp") or p.name.startswith(".work")
                  or ".old-" in p.name)  # fmt: skip


# --------------------------------------------------------------------------- artifacts
def _without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    if isinstance(value, str):  # a one-line summary that ends "..., 1.3s)"
        return SECONDS_IN_TEXT.sub("<t>s", value)
    return value


def results_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    """The recorded parameters that decide a run's results (not where it runs)."""
    return {k: v for k, v in parameters.items() if k not in OPERATIONAL}


def reference_parameters(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "run.json").read_text())["parameters"]


def _run_record(info: dict[str, Any]) -> dict[str, Any]:
    """What run.json says about results: parameters, data hashes, stage states, verdict."""
    return {
        "status": info["status"],
        "parameters": results_parameters(info["parameters"]),
        "hashes": {k: v for k, v in info["hashes"].items() if k not in TIMED_HASHES},
        "stages": {s: info["stages"][s]["state"] in ("done", "cached") for s in STAGES},
        "verdict": info["verdict"],
    }


def file_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


def snapshot(run_dir: Path) -> dict[str, Any]:
    """Every file of a run folder: its SHA-256, or its content without timings."""
    out: dict[str, Any] = {}
    for path in sorted(run_dir.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(run_dir).as_posix()
        if rel in TIMED_JSON:
            out[rel] = _without_timings(json.loads(path.read_text()))
        elif rel == "gan/losses.csv":
            out[rel] = pd.read_csv(path).drop(columns="seconds").to_dict("list")
        elif rel == "run.json":
            out[rel] = _run_record(json.loads(path.read_text()))
        elif rel == "report.html":
            out[rel] = "present"  # its paths and timings are the run's own
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def assert_same_artifacts(run_dir: Path, reference: Path) -> None:
    got, want = snapshot(run_dir), snapshot(reference)
    for rel in ("dataset/images.npy", "validation/sample_flags.parquet",
                "detection/issues.parquet", "detection/noise_matrix.npy",
                "cleaned/decisions.parquet", "cleaned/manifest.parquet",
                "gan/checkpoints/clean.pt", "gan/samples_clean.png", "gan/metrics.json"):
        assert rel in want, f"the reference run has no {rel}"  # fmt: skip
    assert sorted(got) == sorted(want), "the run folders hold different files"
    differ = [rel for rel in want if got[rel] != want[rel]]
    assert not differ, f"these artifacts differ from the uninterrupted run's: {differ}"


def expected_dataset_hash(data: Path, seed: int) -> str:
    """The content hash of the dataset a run with ``seed`` works on, computed here."""
    from assay.pipeline.stages import IngestParams, load_input

    dataset, _ = load_input(IngestParams(data=str(data), inject="labels-10", seed=seed))
    return dataset.content_hash()


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    """A unique scratch folder, 200 digits as an .npz and one Prefect test server."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("faults")
    digits = load_digits()
    keep = np.concatenate([np.flatnonzero(digits.target == k)[:20] for k in range(10)])
    images = np.round(digits.images[keep] * 255 / 16).astype(np.uint8)
    np.savez(root / "digits200.npz", images=images, labels=digits.target[keep])
    (root / "cwd").mkdir()
    with prefect_test_harness(server_startup_timeout=180):
        yield Env(root=root, data=root / "digits200.npz", marker=str(root).encode(),
                  api_url=str(PREFECT_API_URL.value()), cwd=root / "cwd")  # fmt: skip
    assert_none_survive(Env(root, root, str(root).encode(), "", root), timeout=10)


@pytest.fixture(scope="module")
def pair(env: Env) -> dict[int, Path]:
    """Two runs started at the same moment on one runs root (one cache), seeds 0 and 1."""
    root = env.root / "pair"
    procs = {
        seed: start(env, ["--data", str(env.data), *RUN_ARGS, "--seed", str(seed),
                          "--runs-root", str(root), "--run-dir", str(root / f"seed{seed}")],
                    env.root / f"pair-{seed}.log", api=True)
        for seed in (0, 1)
    }  # fmt: skip
    for seed, proc in procs.items():
        code = finish(proc)
        assert code == 0, f"run with seed {seed} exited {code}:\n{proc.text()[-3000:]}"
    return {seed: root / f"seed{seed}" for seed in procs}


# --------------------------------------------------------------------------- concurrency
def test_two_runs_at_once_on_one_runs_root(env: Env, pair: dict[int, Path]) -> None:
    infos = {s: json.loads((d / "run.json").read_text()) for s, d in pair.items()}
    issues = {s: pd.read_parquet(d / "detection/issues.parquet") for s, d in pair.items()}
    for seed, run_dir in pair.items():
        info = infos[seed]
        assert info["status"] == "complete" and info["parameters"]["seed"] == seed
        # every stage computed by this run itself, from its own data
        assert {s: info["stages"][s]["from_run"] for s in STAGES} == dict.fromkeys(
            STAGES, run_dir.name)
        assert info["hashes"]["ingested"] == expected_dataset_hash(env.data, seed)
        manifest = pd.read_parquet(run_dir / "dataset/manifest.parquet")
        assert issues[seed]["sample_id"].tolist() == manifest["sample_id"].tolist()
        decisions = pd.read_parquet(run_dir / "cleaned/decisions.parquet")
        assert decisions["sample_id"].tolist() == manifest["sample_id"].tolist()
        assert json.loads((run_dir / "gan/metrics.json").read_text())["seed"] == seed
    assert infos[0]["hashes"]["ingested"] != infos[1]["hashes"]["ingested"]
    assert not issues[0]["given_label"].equals(issues[1]["given_label"])  # own noise each
    assert leftovers(env.root / "pair") == []
    assert_none_survive(env)


# --------------------------------------------------------------------------- kill chain
@dataclass(frozen=True)
class Fault:
    """One link of the chain: where the process is stopped, and how."""

    stage: str
    where: str  # "boundary": its output just appeared; "inside": while it works; "start"
    how: str  # "kill-main": SIGKILL the main process; "kill-group"; "term": SIGTERM

    @property
    def id(self) -> str:
        return f"{self.how}-{self.where}-{self.stage}"


CHAIN = [
    Fault("ingest", "boundary", "kill-main"),
    Fault("ingest", "start", "term"),  # while the command starts (imports, arguments)
    Fault("validate", "boundary", "kill-group"),
    Fault("detect", "inside", "term"),
    Fault("detect", "inside", "kill-group"),
    Fault("detect", "boundary", "kill-main"),
    Fault("generate", "inside", "kill-main"),
    Fault("generate", "boundary", "kill-group"),
    Fault("report", "boundary", "term"),  # report.html written, run.json not yet complete
]


@dataclass
class Chain:
    run_dir: Path
    step: int = 0
    finished: set[str] = field(default_factory=set)  # stages a killed process finished
    broken: str | None = None


@pytest.fixture(scope="module")
def chain(env: Env) -> Chain:
    return Chain(run_dir=env.root / "chain" / "run")


@pytest.mark.parametrize("fault", CHAIN, ids=[f.id for f in CHAIN])
def test_killed_run_resumes_with_the_run_dir_alone(
    env: Env, pair: dict[int, Path], chain: Chain, fault: Fault
) -> None:
    if chain.broken:
        pytest.skip(f"the chain broke at {chain.broken}")
    chain.broken = fault.id  # cleared when this link passes
    run_dir = chain.run_dir
    if chain.step == 0:  # the first run names everything; every later one only the folder
        args = ["--data", str(env.data), *RUN_ARGS, "--seed", "0",
                "--runs-root", str(run_dir.parent), "--run-dir", str(run_dir)]  # fmt: skip
    else:
        args = ["--run-dir", str(run_dir)]
    api = fault.how == "kill-group"
    proc = start(env, args, env.root / f"chain-{chain.step}-{fault.id}.log", api=api)
    chain.step += 1
    output = run_dir / OUTPUTS[fault.stage]

    if fault.where == "start":
        wait_for(proc, lambda: handles_sigterm(proc.popen.pid), "a SIGTERM handler")
        before = file_hashes(run_dir)
    elif fault.where == "boundary":
        wait_for(proc, output.exists, f"{output.name}/")
    else:
        started = f"[assay] {fault.stage:<9} started"
        wait_for(proc, lambda: started in proc.text(), f"the {fault.stage} stage")
        reference = json.loads((pair[0] / "run.json").read_text())
        spent = reference["stages"][fault.stage]["compute_seconds"]
        # early enough to land inside the stage also when this machine got much faster
        time.sleep(random.Random(chain.step).uniform(0.1, 0.3) * spent)
        assert not output.exists(), f"{fault.stage} ended before the kill (machine too fast?)"

    if fault.how == "kill-main":
        os.kill(proc.popen.pid, signal.SIGKILL)
    elif fault.how == "kill-group":
        os.killpg(proc.popen.pid, signal.SIGKILL)
    else:
        os.kill(proc.popen.pid, signal.SIGTERM)
    code = finish(proc, timeout=180)
    assert_none_survive(env)
    # the parameters were recorded before any output, and a resume keeps them
    recorded = json.loads((run_dir / "run.json").read_text())["parameters"]
    assert results_parameters(recorded) == results_parameters(reference_parameters(pair[0]))
    # what the processes before this one finished came from the cache here
    states = proc.states()
    if fault.where != "start":
        before_kill = {s for s in chain.finished if STAGES.index(s) < STAGES.index(fault.stage)}
        assert before_kill <= set(states), (before_kill, states)
    reached = {s: states[s] for s in chain.finished if s in states}
    assert reached == dict.fromkeys(reached, "cached"), reached
    text = proc.text()
    if fault.how == "term":
        assert code == 143, f"exit {code}:\n{text[-3000:]}"
        assert "Traceback" not in text, text[-3000:]
        lines = [line for line in text.splitlines() if line.startswith("assay:")]
        assert lines == ["assay: terminated; finished stages are kept and a re-run resumes."]
        assert leftovers(run_dir.parent) == []
        if fault.where == "start":
            assert file_hashes(run_dir) == before  # nothing started, nothing changed
        else:
            info = json.loads((run_dir / "run.json").read_text())
            # at the report's boundary the run may just have completed before the signal
            done = fault.stage == "report" and info["status"] == "complete"
            assert info["status"] == "interrupted" or done, info["status"]
    else:
        assert code == -signal.SIGKILL
    chain.finished |= proc.finished_stages()
    chain.broken = None


def test_resume_after_every_fault_equals_an_uninterrupted_run(
    env: Env, pair: dict[int, Path], chain: Chain
) -> None:
    if chain.broken or chain.step != len(CHAIN):
        pytest.skip(f"the chain did not run to its end ({chain.broken or chain.step})")
    proc = start(env, ["--run-dir", str(chain.run_dir)], env.root / "chain-last.log", api=True)
    code = finish(proc)
    assert code == 0, proc.text()[-3000:]
    states = proc.states()
    assert {s: states.get(s) for s in chain.finished} == dict.fromkeys(chain.finished, "cached")
    assert set(states) == set(STAGES)
    assert_same_artifacts(chain.run_dir, pair[0])
    assert leftovers(chain.run_dir.parent) == []
    assert list(env.cwd.iterdir()) == []  # resuming wrote nothing where it was started
    assert_none_survive(env)
