"""Jobs side by side in threads (models.threads): results, and prompt stops."""

from __future__ import annotations

import signal
import threading
import time

import numpy as np
import pytest
from sklearn.datasets import load_digits

from assay.models.gan import GANConfig, GANTrainer
from assay.models.threads import Stopped, side_by_side, stop_point


@pytest.fixture(autouse=True)
def _sigint_raises_keyboard_interrupt():
    """Python's own SIGINT handler for each test: a process started with SIGINT ignored
    (a background job of a non-interactive shell, as some CI runners start them) never
    installs it, and the interrupt tests would then wait for jobs that are never stopped."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _interrupt_main_after(seconds: float) -> threading.Timer:
    """SIGINT to the main thread after ``seconds`` (wakes it even inside a blocking wait)."""
    main = threading.main_thread().ident
    timer = threading.Timer(seconds, signal.pthread_kill, args=(main, signal.SIGINT))
    timer.start()
    return timer


def _job_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("assay-job")]


def _spin(started: list[int], i: int, seconds: float = 60.0) -> int:
    """A job that takes ``seconds`` unless stopped, checking like a training loop does."""
    started.append(i)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        stop_point()
        time.sleep(0.01)
    return i


def test_results_in_order_and_jobs_run_at_once():
    barrier = threading.Barrier(3, timeout=10)  # every job waits until all three have begun

    def job(i: int) -> int:
        barrier.wait()
        return i * i

    assert side_by_side([lambda i=i: job(i) for i in range(3)]) == [0, 1, 4]
    assert _job_threads() == []


def test_a_single_job_runs_in_the_calling_thread():
    assert side_by_side([threading.current_thread]) == [threading.current_thread()]
    assert side_by_side([]) == []


def test_stop_point_does_nothing_outside_side_by_side():
    stop_point()  # no stop event here: nothing raised


def test_interrupted_caller_stops_running_jobs_at_once():
    started: list[int] = []
    timer = _interrupt_main_after(1.0)
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            side_by_side([lambda i=i: _spin(started, i) for i in range(2)])
    finally:
        timer.cancel()
    assert time.monotonic() - t0 < 15  # the jobs would run 60 s
    assert sorted(started) == [0, 1]
    assert _job_threads() == []


def test_jobs_not_begun_are_dropped_when_interrupted():
    started: list[int] = []
    timer = _interrupt_main_after(1.0)
    try:
        with pytest.raises(KeyboardInterrupt):
            side_by_side([lambda i=i: _spin(started, i) for i in range(5)], workers=2)
    finally:
        timer.cancel()
    assert sorted(started) == [0, 1]
    assert _job_threads() == []


def test_a_failing_job_stops_the_others_and_its_error_is_raised():
    started: list[int] = []

    def fail() -> int:
        time.sleep(0.5)
        raise ValueError("fold 3 is broken")

    t0 = time.monotonic()
    with pytest.raises(ValueError, match="fold 3 is broken"):
        side_by_side([lambda: _spin(started, 0), fail, lambda: _spin(started, 2)])
    assert time.monotonic() - t0 < 15
    assert sorted(started) == [0, 2]
    assert _job_threads() == []


def test_stopped_jobs_end_with_stopped():
    """The jobs a failure stops end with ``Stopped`` (not with a result)."""
    ended: list[BaseException] = []

    def watched() -> int:
        try:
            return _spin([], 0)
        except BaseException as exc:
            ended.append(exc)
            raise

    def fail() -> int:
        time.sleep(0.3)
        raise ValueError("broken")

    with pytest.raises(ValueError):
        side_by_side([watched, fail])
    assert len(ended) == 1 and isinstance(ended[0], Stopped)


def test_real_gan_training_stops_when_interrupted():
    bunch = load_digits()
    x = np.round(bunch.images * 255.0 / 16.0).astype(np.uint8)
    y = bunch.target.astype(np.int64)
    configs = [
        GANConfig(image_shape=(1, 8, 8), n_classes=10, steps=100_000, seed=s, width=8,
                  z_dim=16, batch_size=32, log_every=1000)  # fmt: skip
        for s in (0, 1)
    ]
    timer = _interrupt_main_after(3.0)
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            side_by_side(
                [lambda c=c: GANTrainer(c, device="cpu", progress=False).fit(x, y) for c in configs]
            )
    finally:
        timer.cancel()
    assert time.monotonic() - t0 < 30  # 100,000 steps would take many minutes
    assert _job_threads() == []
