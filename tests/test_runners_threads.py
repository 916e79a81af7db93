"""Thread settings of worker processes: workers x threads <= cores, passive OpenMP waits.

Each test starts real worker processes through :func:`assay.flows.runners.open_runner`
and reads the settings back from inside them.
"""

from __future__ import annotations

import os

import pytest

from assay.flows.runners import open_runner
from assay.models.device import (
    THREADS_ENV,
    configure_cpu_threads,
    default_cpu_threads,
    threads_per_worker,
    usable_cpus,
)


def _probe() -> dict[str, object]:
    """What a task sees in its worker process."""
    import torch

    return {
        "pid": os.getpid(),
        "wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "assay_threads": os.environ.get(THREADS_ENV),
        "configured": configure_cpu_threads(),
        "torch_threads": torch.get_num_threads(),
    }


def test_threads_per_worker_keeps_workers_times_threads_within_cores():
    assert threads_per_worker(1, cores=8) == 8
    assert threads_per_worker(2, cores=8) == 4
    assert threads_per_worker(3, cores=8) == 2
    assert threads_per_worker(2, cores=2) == 1
    assert threads_per_worker(4, cores=2) == 1  # never zero
    with pytest.raises(ValueError, match="`workers` must be >= 1. Got 0 instead."):
        threads_per_worker(0)


def test_default_cpu_threads_prefers_the_worker_setting(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert default_cpu_threads() == 3
    monkeypatch.setenv(THREADS_ENV, "1")
    assert default_cpu_threads() == 1
    monkeypatch.delenv(THREADS_ENV)
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert default_cpu_threads() == usable_cpus()


def test_importing_assay_sets_passive_openmp_waits():
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = "import os, assay.pipeline; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"  # a user's own choice stays
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "ACTIVE"


@pytest.mark.slow
def test_local_dask_workers_get_their_share_of_the_cores():
    pytest.importorskip("prefect_dask")
    from distributed import Client

    with open_runner("dask", workers=2) as make:
        with Client(make().address) as client:
            seen = client.run(_probe)
    want = threads_per_worker(2)
    assert len(seen) == 2
    for info in seen.values():
        assert info["wait_policy"] == "PASSIVE"
        assert info["assay_threads"] == str(want)
        assert info["configured"] == info["torch_threads"] == want


@pytest.mark.slow
def test_process_pool_workers_get_their_share_of_the_cores(monkeypatch):
    from prefect import flow, task
    from prefect.testing.utilities import prefect_test_harness

    # a user's OMP_NUM_THREADS travels to every task; the worker setting still wins
    monkeypatch.setenv("OMP_NUM_THREADS", str(usable_cpus()))
    probe = task(_probe)

    with open_runner("processes", workers=2) as make:

        @flow(task_runner=make())
        def probe_workers() -> list[dict[str, object]]:
            return [f.result() for f in [probe.submit() for _ in range(4)]]

        with prefect_test_harness(server_startup_timeout=180):
            seen = probe_workers()
    want = threads_per_worker(2)
    assert {info["pid"] for info in seen} != {os.getpid()}
    for info in seen:
        assert info["pid"] != os.getpid()
        assert info["wait_policy"] == "PASSIVE"
        assert info["assay_threads"] == str(want)
        assert info["configured"] == info["torch_threads"] == want
