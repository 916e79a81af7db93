"""CPU thread settings shared by the torch paths."""

from __future__ import annotations

import threading

import torch

from assay.models.device import configure_cpu_threads, cpu_thread_limit


def test_thread_limit_caps_configure_cpu_threads_in_its_context(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    before = torch.get_num_threads()
    try:
        assert configure_cpu_threads() == 2
        with cpu_thread_limit(1):
            assert configure_cpu_threads() == 1 and torch.get_num_threads() == 1
            seen = []
            # another thread started here does not inherit the cap (contexts are per thread)
            worker = threading.Thread(target=lambda: seen.append(configure_cpu_threads()))
            worker.start()
            worker.join()
            assert seen == [2]
        assert configure_cpu_threads() == 2
        with cpu_thread_limit(None):
            assert configure_cpu_threads() == 2
    finally:
        torch.set_num_threads(before)
