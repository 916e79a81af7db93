"""Local Prefect servers die with the process that started them.

Without ``PREFECT_API_URL``, Prefect 3 starts a temporary API server in a subprocess
(``prefect.server.api.server.SubprocessASGIServer``: ``python -m uvicorn ...``) and stops it
from an ``atexit`` hook. A ``kill -9`` (or a SIGTERM, whose default action skips
``atexit``) of ``assay run`` would leave that server running with parent PID 1, and
scheduled runs killed by a timeout would pile them up.

Here every server subprocess assay starts, Prefect's temporary one included, asks the
kernel to send it SIGTERM when its parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``); a
child whose parent is already gone by the time it starts exits at once. Where ``prctl``
does not exist (macOS) the servers still stop on a normal exit, on SIGINT and on SIGTERM
(the command turns both into exceptions, so ``atexit`` and ``finally`` blocks run).

:func:`guard_ephemeral_server` must be called in the main thread before the first flow
runs: the kernel sends the signal when the *thread* that started the child ends, so the
server has to be started from the thread that lives as long as the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

PR_SET_PDEATHSIG = 1


def _load_prctl() -> Any | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


# Loaded in the parent: a child between fork and exec must not import or load anything.
_PRCTL = _load_prctl()


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` for :class:`subprocess.Popen` that ties the child to this process.

    Returns ``None`` where the OS offers no parent-death signal.
    """
    if _PRCTL is None:
        return None
    parent = os.getpid()
    prctl = _PRCTL

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def popen_guarded(args: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """:class:`subprocess.Popen` whose child gets SIGTERM when this process dies."""
    preexec = die_with_parent()
    if preexec is not None:
        kwargs["preexec_fn"] = preexec
    return subprocess.Popen(args, **kwargs)


def _guarded_server_class() -> type:
    from prefect.server.api.server import SubprocessASGIServer

    class GuardedASGIServer(SubprocessASGIServer):
        """Prefect's temporary API server, started so that it dies with its parent."""

        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            import prefect
            from prefect.settings import get_current_settings

            # The command and environment of SubprocessASGIServer._run_uvicorn_command
            # (Prefect 3), started through popen_guarded.
            server_env = {
                "PREFECT_UI_ENABLED": "0",
                "PREFECT__SERVER_EPHEMERAL": "1",
                "PREFECT__SERVER_FINAL": "1",
            }
            return popen_guarded(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--app-dir",
                    str(prefect.__module_path__.parent),
                    "--factory",
                    "prefect.server.api.server:create_app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "error",
                    "--lifespan",
                    "on",
                ],
                env={
                    **os.environ,
                    **server_env,
                    **get_current_settings().to_environment_variables(exclude_unset=True),
                },
            )

    return GuardedASGIServer


def guard_ephemeral_server() -> Any | None:
    """Make Prefect's temporary API server (when one will be used) die with this process.

    Registers the guarded server as the instance Prefect's clients use and starts it now,
    from the calling (main) thread. Does nothing when ``PREFECT_API_URL`` names a server.

    Returns
    -------
    The started server object, or ``None`` when none was needed.
    """
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return None
    guarded = _guarded_server_class()
    current = SubprocessASGIServer._instances.get(None)
    if current is not None and current.running:
        return current  # already started (earlier in this process)
    SubprocessASGIServer._instances.pop(None, None)
    server = guarded()  # registers itself as the default instance (port None)
    server.start()
    return server
