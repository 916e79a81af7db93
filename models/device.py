"""Device choice, seeding and CPU thread settings shared by every torch path."""

from __future__ import annotations

import contextlib
import os
import random
import threading
from collections.abc import Iterator
from contextvars import ContextVar

import numpy as np
import torch


def pick_device(requested: str | None = None) -> torch.device:
    """``cuda`` when present (or requested), else ``cpu``.

    ``requested`` may be ``None``/``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. Asking
    for CUDA on a machine without it raises ``ValueError`` with a plain message.
    """
    if requested in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(requested)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} was asked for, but CUDA is not available here.")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]'. Got {requested!r} instead.")
    return dev


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch; return a torch generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


#: Held while torch's global RNG is seeded and used (see :func:`seeded_global_rng`).
_BUILD_LOCK = threading.Lock()


@contextlib.contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """Seed torch's global RNG and use it inside this block, one thread at a time.

    Weight initialisation (and anything else without its own ``torch.Generator``) draws
    from the process-wide RNG; models trained side by side in threads would otherwise
    interleave their draws and lose "same seed, same numbers".
    """
    with _BUILD_LOCK:
        torch.manual_seed(seed)
        yield


#: Per-context cap on torch's CPU threads (see :func:`cpu_thread_limit`).
_THREAD_LIMIT: ContextVar[int | None] = ContextVar("assay_cpu_thread_limit", default=None)


@contextlib.contextmanager
def cpu_thread_limit(n: int | None) -> Iterator[None]:
    """Cap the threads :func:`configure_cpu_threads` gives torch inside this block.

    For models trained side by side in one process (e.g. GAN arms as parallel tasks):
    torch's thread count is process-wide, and several trainings that each ask for every
    core make OpenMP threads spin against each other. ``None`` lifts no cap.
    """
    token = _THREAD_LIMIT.set(n)
    try:
        yield
    finally:
        _THREAD_LIMIT.reset(token)


def configure_cpu_threads() -> int:
    """Use every core the process may use (respecting ``OMP_NUM_THREADS`` and
    :func:`cpu_thread_limit`); return the count."""
    env = os.environ.get("OMP_NUM_THREADS")
    n = int(env) if env and env.isdigit() else len(os.sched_getaffinity(0))
    limit = _THREAD_LIMIT.get()
    if limit is not None:
        n = min(n, limit)
    n = max(1, n)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def autocast(device: torch.device):
    """bf16 autocast on CUDA, a no-op context on CPU."""
    enabled = device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)
