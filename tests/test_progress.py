"""Progress lines: where they go (stderr, or a route that follows into threads), and the
"~X left" estimates."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context

from assay.pipeline import progress


def test_lines_go_to_stderr_unless_routed(capsys):
    progress.say("one")
    routed: list[str] = []
    with progress.to(routed.append):
        progress.say("two")
    progress.say("three")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "one\nthree\n"
    assert routed == ["two"]


def test_route_follows_a_copied_context_into_threads():
    routed: list[str] = []
    with progress.to(routed.append), ThreadPoolExecutor(2) as pool:
        pool.submit(copy_context().run, progress.say, "from a thread").result()
    assert routed == ["from a thread"]


def test_ticker_counts_from_threads_and_says_the_end_once():
    routed: list[str] = []
    with progress.to(routed.append):
        ticker = progress.Ticker("[x] epochs", 40, every=3600)
    # a plain thread does not copy the context: the ticker keeps the route it was made in
    workers = [threading.Thread(target=lambda: [ticker.tick() for _ in range(10)])
               for _ in range(4)]  # fmt: skip
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert ticker.done == 40
    assert len(routed) == 1 and routed[0].startswith("[x] epochs 40/40 (100%), ")
    assert "left" not in routed[0]


def test_ticker_says_time_left_between_lines():
    routed: list[str] = []
    with progress.to(routed.append):
        ticker = progress.Ticker("[x] steps", 4, every=0.0)
        time.sleep(0.05)
        ticker.tick()
    assert routed and routed[0].startswith("[x] steps 1/4 (25%), ") and routed[0].endswith(
        "s left"
    )


def test_disabled_ticker_says_nothing():
    routed: list[str] = []
    with progress.to(routed.append):
        ticker = progress.Ticker("[x]", 2, enabled=False)
        ticker.tick(2)
    assert routed == [] and ticker.done == 2


def test_time_left_and_format_seconds():
    assert progress.time_left(25, 100, 10.0) == "~30 s left"
    assert progress.time_left(0, 100, 5.0) == "" and progress.time_left(100, 100, 5.0) == ""
    assert progress.format_seconds(41.6) == "42 s"
    assert progress.format_seconds(200) == "3 min 20 s"
    assert progress.format_seconds(3900) == "1 h 05 min"
