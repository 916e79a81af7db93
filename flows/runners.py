"""``--runner threads|processes|dask[:ADDRESS]`` -> a Prefect task runner.

- ``threads``: :class:`prefect.task_runners.ThreadPoolTaskRunner`. The default; torch and
  numpy release the GIL, so the folds and GAN arms still overlap.
- ``processes``: :class:`prefect.task_runners.ProcessPoolTaskRunner` (Prefect >= 3.4), one
  spawned Python process per worker; task inputs and results travel by cloudpickle.
- ``dask``: :class:`prefect_dask.DaskTaskRunner` on a local ``distributed.LocalCluster``
  that is started once for the whole run (not once per stage) and closed at the end.
- ``dask:ADDRESS``: the same, on an existing Dask scheduler (``tcp://host:8786``). Every
  worker must see the run folder and the cache folder at the same paths (a shared file
  system), and have assay installed.

Worker processes (``processes`` and the local ``dask`` cluster) each get
``cores // workers`` torch/BLAS threads (at least one), so that workers x threads <=
cores, and passive OpenMP waiting (:func:`assay.models.device.init_worker`): several
workers that each used every core would make their OpenMP threads spin against each
other. The folds and GAN arms train with one thread each on every runner, so the same
seed gives the same numbers whichever runner runs them.

The stage flows each enter a fresh task runner from the factory that :func:`open_runner`
yields; on Dask they all connect to the same cluster.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from assay.models.device import THREADS_ENV, init_worker, threads_per_worker, usable_cpus
from assay.pipeline.errors import DataError

RUNNER_KINDS: tuple[str, ...] = ("threads", "processes", "dask")

TaskRunnerFactory = Callable[[], Any]


@dataclass(frozen=True)
class RunnerSpec:
    """A parsed ``--runner`` value."""

    kind: str
    address: str | None = None

    def __str__(self) -> str:
        return self.kind if self.address is None else f"{self.kind}:{self.address}"


def parse_runner(text: str) -> RunnerSpec:
    """Parse ``threads``, ``processes``, ``dask`` or ``dask:ADDRESS``.

    Raises
    ------
    pipeline.errors.DataError
        For anything else, naming the accepted forms.
    """
    raw = str(text).strip()
    kind, sep, address = raw.partition(":")
    kind = kind.lower()
    if kind not in RUNNER_KINDS or (sep and kind != "dask") or (sep and not address.strip()):
        raise DataError(
            "`runner` must be 'threads', 'processes', 'dask' or 'dask:ADDRESS' "
            f"(e.g. dask:tcp://10.0.0.5:8786). Got {raw!r} instead."
        )
    return RunnerSpec(kind=kind, address=address.strip() or None)


def _process_pool_runner(workers: int | None) -> Any:
    try:
        from prefect.task_runners import ProcessPoolTaskRunner
    except ImportError:  # pragma: no cover - Prefect < 3.4
        import prefect

        raise DataError(
            f"runner 'processes' needs Prefect's ProcessPoolTaskRunner (Prefect >= 3.4); "
            f"this is Prefect {prefect.__version__}. Use 'threads' or 'dask' instead "
            "(a local Dask cluster also runs tasks in separate processes)."
        ) from None
    n = workers or usable_cpus()
    return ProcessPoolTaskRunner(
        max_workers=n, initializer=init_worker, initargs=(threads_per_worker(n),)
    )


@contextlib.contextmanager
def open_runner(
    spec: RunnerSpec | str,
    *,
    workers: int | None = None,
    echo: Callable[[str], None] | None = None,
) -> Iterator[TaskRunnerFactory]:
    """Yield a factory of task runners for the stage flows of one run.

    Parameters
    ----------
    spec : RunnerSpec or str
        The runner (see :func:`parse_runner`).
    workers : int, optional
        Threads, processes or local Dask workers. Defaults: the usable CPU count for
        threads and processes; 2 local Dask workers.
    echo : callable, optional
        Receives one line when a local Dask cluster starts (its dashboard address).

    Yields
    ------
    callable
        ``factory() -> TaskRunner``: a new, unentered task runner per call, for
        ``flow.with_options(task_runner=factory())``.
    """
    if isinstance(spec, str):
        spec = parse_runner(spec)
    if spec.kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        n = workers or usable_cpus()
        yield lambda: ThreadPoolTaskRunner(max_workers=n)
        return
    if spec.kind == "processes":
        _process_pool_runner(workers)  # fail early, before any stage starts
        yield lambda: _process_pool_runner(workers)
        return

    from prefect_dask import DaskTaskRunner

    if spec.address is not None:
        address = spec.address
        yield lambda: DaskTaskRunner(address=address)
        return

    import dask
    from distributed import LocalCluster

    n_workers = workers or 2
    threads = threads_per_worker(n_workers)
    # The nanny sets these before it spawns a worker, so OpenMP reads them at start-up;
    # the worker's process-pool twin is init_worker.
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", THREADS_ENV)
    spawn_env: dict[str, Any] = {
        f"distributed.nanny.pre-spawn-environ.{name}": threads for name in names
    }
    spawn_env["distributed.nanny.pre-spawn-environ.OMP_WAIT_POLICY"] = os.environ.get(
        "OMP_WAIT_POLICY", "PASSIVE"
    )
    saved = {name: os.environ.get(name) for name in (*names, "OMP_WAIT_POLICY")}
    try:
        with dask.config.set(spawn_env):
            cluster = LocalCluster(
                n_workers=n_workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
            )
    finally:  # the nannies set these in this process too; put them back
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    try:
        if echo is not None:
            echo(
                f"started a local Dask cluster: {n_workers} workers at "
                f"{cluster.scheduler_address}"
            )
        address = cluster.scheduler_address
        yield lambda: DaskTaskRunner(address=address)
    finally:
        cluster.close()
