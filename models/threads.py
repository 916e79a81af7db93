"""Jobs side by side in threads, and a way to stop them when their caller stops.

Models trained at once in one process (the GAN's training seeds, the out-of-fold folds)
run in Python threads: torch releases the GIL inside its kernels, and one intra-op thread
per job scales with the cores without OpenMP barriers (see :mod:`assay.models.device`).

A Python thread cannot be interrupted from outside. Ctrl+C and SIGTERM reach only the
main thread, and a :class:`~concurrent.futures.ThreadPoolExecutor` waits for its running
jobs before the exception can unwind, so an interrupted command would go on training
for as long as a job has left (tens of minutes at 64 px on a CPU). :func:`side_by_side`
therefore gives its jobs a stop event, and the training loops call :func:`stop_point`
once per step: when the caller is interrupted, or one job fails, the other jobs end at
their next step with :class:`Stopped`, and the caller's exception propagates.
:func:`stop_point` does nothing outside :func:`side_by_side`, where the caller's own
thread receives the interrupt directly.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import TypeVar

from assay.models.device import cpu_thread_limit

__all__ = ["Stopped", "side_by_side", "stop_point"]

T = TypeVar("T")

#: The stop event of the :func:`side_by_side` call that runs the current job.
_STOP: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "assay_stop_event", default=None
)


class Stopped(Exception):
    """A job ended early because its caller stopped or another job failed."""


def stop_point() -> None:
    """Raise :class:`Stopped` when the :func:`side_by_side` call of this job is stopping.

    Call it once per training step; outside :func:`side_by_side` it does nothing."""
    event = _STOP.get()
    if event is not None and event.is_set():
        raise Stopped("stopped: the caller was interrupted or another job failed")


def side_by_side(
    jobs: Sequence[Callable[[], T]], *, workers: int | None = None, threads: int = 1
) -> list[T]:
    """Run ``jobs`` at once in threads; their results, in order.

    Parameters
    ----------
    jobs : sequence of callables
        Each is called with no argument, in a copy of the caller's context (context
        variables such as :func:`~assay.models.device.cpu_thread_limit` carry over).
    workers : int, optional
        At most this many jobs at once (default: all of them). The others start as
        running ones finish.
    threads : int
        Each job's cap on torch's CPU threads (:func:`cpu_thread_limit`).

    A single job, or every job when ``workers <= 1``, runs in the calling thread, as it
    is (one after another). When the caller is interrupted
    (``KeyboardInterrupt``, a termination signal) or a job raises, the jobs not yet begun
    are dropped, the running ones stop at their next :func:`stop_point`, and the
    interrupt, or the first job's exception, propagates once they have ended.
    """
    jobs = list(jobs)
    if not jobs:
        return []
    if len(jobs) == 1 or (workers is not None and workers <= 1):
        return [job() for job in jobs]
    stop = threading.Event()

    def run(job: Callable[[], T]) -> T:
        _STOP.set(stop)
        stop_point()  # not begun before the stop: dropped
        with cpu_thread_limit(threads):
            return job()

    pool = ThreadPoolExecutor(max_workers=workers or len(jobs), thread_name_prefix="assay-job")
    try:
        futures = [pool.submit(contextvars.copy_context().run, run, job) for job in jobs]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in futures if f in done and f.exception() is not None]
        if failed:
            stop.set()
            raise failed[0].exception()
        return [f.result() for f in futures]
    except BaseException:
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

