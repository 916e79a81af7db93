"""Where the run's progress lines go: once to stderr, and to the Prefect run logger.

stdout is left for results (``--json``). Prefect's own console handler is quiet (the CLI
sets it to CRITICAL, so bad data prints one message, not tracebacks), so the lines a
stage prints are routed here explicitly rather than through ``log_prints``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from prefect import get_run_logger

from assay.pipeline import progress


def say(message: str, *, echo: bool = True) -> None:
    """One ``[assay]`` line of the run: to the run logger (the UI) and, with ``echo``, once
    to stderr."""
    if echo:
        print(f"[assay] {message}", file=sys.stderr, flush=True)
    _to_run_log(message)


def stage_line(line: str) -> None:
    """A progress line of a stage (``[detect] …``, ``[gan] …``): stderr and the run log."""
    print(line, file=sys.stderr, flush=True)
    _to_run_log(line)


def _to_run_log(message: str) -> None:
    try:
        get_run_logger().info(message)
    except Exception:  # no run context (e.g. called outside a flow or task)
        pass


@contextmanager
def stage_progress(enabled: bool) -> Iterator[Any]:
    """Route the enclosed stage's progress lines to :func:`stage_line` when ``enabled``."""
    with progress.to(stage_line) if enabled else nullcontext():
        yield
