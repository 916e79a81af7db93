"""Device choice, seeding and CPU thread settings shared by every torch path.

CPU threads: a process uses every core it may use unless told otherwise, in this order:
``ASSAY_CPU_THREADS`` (set in worker processes by :func:`init_worker`), then
``OMP_NUM_THREADS``, then the usable CPU count; :func:`cpu_thread_limit` caps it further
for one block. Worker pools size their workers with :func:`threads_per_worker` so that
workers x threads <= cores. The OpenMP wait policy is set when :mod:`assay.models` is
imported (see its docstring).
"""

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


#: Environment variable that fixes the torch thread count of a process (worker processes).
THREADS_ENV = "ASSAY_CPU_THREADS"


def usable_cpus() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def threads_per_worker(workers: int, *, cores: int | None = None) -> int:
    """Threads each of ``workers`` processes may use so that workers x threads <= cores.

    At least 1 (more workers than cores then oversubscribe, one thread each).
    """
    if int(workers) < 1:
        raise ValueError(f"`workers` must be >= 1. Got {workers!r} instead.")
    return max(1, (usable_cpus() if cores is None else int(cores)) // int(workers))


def init_worker(threads: int) -> None:
    """Set up a worker process: ``threads`` torch/BLAS threads, passive OpenMP waiting.

    For a process pool's ``initializer`` (or a Dask nanny's environment). Sets
    ``ASSAY_CPU_THREADS`` so :func:`configure_cpu_threads` keeps the count, and the usual
    BLAS variables for libraries started later in the process.
    """
    n = max(1, int(threads))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ[THREADS_ENV] = str(n)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(n)
    torch.set_num_threads(n)


def default_cpu_threads() -> int:
    """The process's torch thread count before any :func:`cpu_thread_limit`:
    ``ASSAY_CPU_THREADS``, else ``OMP_NUM_THREADS``, else :func:`usable_cpus`."""
    for name in (THREADS_ENV, "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return usable_cpus()


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
    """Give torch :func:`default_cpu_threads`, capped by :func:`cpu_thread_limit`;
    return the count."""
    n = default_cpu_threads()
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
