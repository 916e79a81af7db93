"""Progress lines of long work, and where they go.

A stage that works for a while says what it is doing in plain lines (progress *bars* are
drawn only on a terminal). :func:`say` writes a line to stderr, leaving stdout for
results (``--json``), unless the caller has routed the lines elsewhere with :func:`to`:
the flow sends them to the Prefect run logger as well, so they show in the UI. The route
is a context variable, so it follows a call into the threads that copy its context.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_ROUTE: ContextVar[Callable[[str], None] | None] = ContextVar("assay_progress", default=None)


def say(line: str) -> None:
    """Write one progress line (to stderr, or to the route set with :func:`to`)."""
    route = _ROUTE.get()
    if route is None:
        print(line, file=sys.stderr, flush=True)
    else:
        route(line)


@contextmanager
def to(route: Callable[[str], None]) -> Iterator[None]:
    """Send the progress lines of the enclosed calls to ``route`` instead of stderr."""
    token = _ROUTE.set(route)
    try:
        yield
    finally:
        _ROUTE.reset(token)


def time_left(done: float, total: float, seconds: float) -> str:
    """``"~12 s left"`` from the rate so far; ``""`` before there is a rate.

    Examples
    --------
    >>> time_left(25, 100, 10.0)
    '~30 s left'
    >>> time_left(0, 100, 3.0)
    ''
    """
    if done <= 0 or seconds <= 0 or total <= done:
        return ""
    return f"~{format_seconds(seconds * (total - done) / done)} left"


def format_seconds(seconds: float) -> str:
    """Seconds for people: ``"42 s"``, ``"3 min 20 s"``, ``"1 h 05 min"``.

    Examples
    --------
    >>> format_seconds(41.6), format_seconds(200), format_seconds(3900)
    ('42 s', '3 min 20 s', '1 h 05 min')
    """
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Stopwatch:
    """Time since creation, for "k/N done, ~X left" lines."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def left(self, done: float, total: float) -> str:
        return time_left(done, total, self.seconds)


class Ticker:
    """Counts units of work done, from any thread, and says ``"<what> k/N (p%), ~X left"``
    at most every ``every`` seconds, and once when all are done.

    A line is said through :func:`say` with the route of the thread that made the
    ticker, so lines from worker threads reach the same place; or through ``out``
    when given.
    """

    def __init__(
        self,
        what: str,
        total: int,
        *,
        every: float = 15.0,
        enabled: bool = True,
        out: Callable[[str], None] | None = None,
    ):
        import threading
        from contextvars import copy_context

        self.what, self.total, self.every, self.enabled = what, int(total), every, enabled
        self.done = 0
        self._watch = Stopwatch()
        self._last = 0.0
        self._lock = threading.Lock()
        self._context = copy_context()
        self._out = out

    def tick(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            now = self._watch.seconds
            due = now - self._last >= self.every or self.done >= self.total
            if not (self.enabled and due):
                return
            self._last = now
            left = time_left(self.done, self.total, now)
            pct = 100.0 * self.done / max(self.total, 1)
            line = f"{self.what} {self.done}/{self.total} ({pct:.0f}%), {format_seconds(now)}"
            self._context.run(self._out or say, line + (f", {left}" if left else ""))
