"""``--runner threads|processes|dask[:ADDRESS]`` -> a Prefect task runner.

- ``threads``: :class:`prefect.task_runners.ThreadPoolTaskRunner`. The default; torch and
  numpy release the GIL, so the folds and GAN arms still overlap.
- ``processes``: :class:`prefect.task_runners.ProcessPoolTaskRunner` (Prefect >= 3.4), one
  spawned Python process per worker; task inputs and results travel by cloudpickle.
- ``dask``: :class:`prefect_dask.DaskTaskRunner` on a local ``distributed.LocalCluster``
  that is started once for the whole run (not once per stage) and closed at the end. Its
  workers use as many torch/BLAS threads as a local run (not Dask's default of one), so
  the same seed gives the same numbers as with ``threads``.
- ``dask:ADDRESS``: the same, on an existing Dask scheduler (``tcp://host:8786``). Every
  worker must see the run folder and the cache folder at the same paths (a shared file
  system), and have assay installed.

The stage flows each enter a fresh task runner from the factory that :func:`open_runner`
yields; on Dask they all connect to the same cluster.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

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


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _torch_threads() -> int:
    """Threads a local torch run uses (``OMP_NUM_THREADS``, else the usable CPU count)."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else _cpu_count()


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
    return ProcessPoolTaskRunner(max_workers=workers or _cpu_count())


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

        n = workers or _cpu_count()
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
    threads = _torch_threads()
    # Dask pins worker processes to one BLAS/OpenMP thread by default. Give them the thread
    # count a local (threads) run uses instead: floating-point reductions depend on it, and
    # the same seed must give the same numbers on every runner.
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    spawn_env = {f"distributed.nanny.pre-spawn-environ.{name}": threads for name in names}
    saved = {name: os.environ.get(name) for name in names}
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
