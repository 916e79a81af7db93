"""Scheduled runs: serve the main flow on a cron schedule, and a local Prefect server.

Every server started here dies with the process that started it (see
:mod:`flows.server_guard`), also after a ``kill -9``.

Schedules need a Prefect server: Prefect's ephemeral mode (what ``assay run`` uses) only
lives as long as one process. :func:`serve` therefore uses the server named by
``PREFECT_API_URL`` when it is set, and otherwise starts a local one first (SQLite in
``PREFECT_HOME``, listening on the loopback interface only) and says so.
:func:`start_server` (``assay server``) starts such a server in the foreground, for users
who want to keep one running and point ``PREFECT_API_URL`` at it.

Every scheduled run writes a new run folder under the configured runs root and shares
its cache, so a run whose data did not change finishes from the cache and says
``unchanged since <run>``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from assay.flows.config import RunConfig
from assay.flows.server_guard import popen_guarded
from assay.pipeline.errors import DataError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4200


def _echo(message: str) -> None:
    print(f"[assay] {message}", flush=True)


def configured_api_url() -> str | None:
    """The Prefect API URL from the environment or the active Prefect profile."""
    from prefect.settings import PREFECT_API_URL

    value = PREFECT_API_URL.value()
    return str(value) if value else None


def check_cron(cron: str) -> str:
    """Validate a cron string (five fields, e.g. ``0 3 * * *``).

    Raises
    ------
    pipeline.errors.DataError
        Naming the string and the expected form.
    """
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron)
    except Exception:
        raise DataError(
            f"`cron` must be a cron schedule of five fields (minute hour day month weekday), "
            f"e.g. '0 3 * * *'. Got {cron!r} instead."
        ) from None
    return cron


def _server_command(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)]


def _server_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    return env


def _database_note() -> str:
    from prefect.settings import PREFECT_HOME

    return f"SQLite database in {Path(str(PREFECT_HOME.value())).expanduser()}"


def _healthy(url: str, *, timeout: float = 2.0) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def start_server(*, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> int:
    """Run a local Prefect server in the foreground until Ctrl+C (``assay server``).

    Parameters
    ----------
    host : str
        Interface to listen on; the loopback interface by default.
    port : int
        Port of the API and UI.

    Returns
    -------
    int
        The server's exit status (0 after Ctrl+C).
    """
    url = f"http://{host}:{port}"
    if _healthy(f"{url}/api"):
        _echo(f"a Prefect server is already running at {url}; nothing to start.")
        return 0
    if not _port_free(host, port):
        raise DataError(f"port {port} on {host} is in use by something else; choose --port.")
    _echo(f"starting a local Prefect server at {url} ({_database_note()}).")
    _echo(f"in other shells: export PREFECT_API_URL={url}/api  (then `assay serve ...`)")
    proc = popen_guarded(_server_command(host, port), env=_server_env())
    try:
        return proc.wait()
    except KeyboardInterrupt:
        _interrupt(proc)
        return 0
    except SystemExit:  # SIGTERM, turned into SystemExit by the command
        _interrupt(proc)
        raise


def _interrupt(proc: subprocess.Popen[Any]) -> None:
    """Stop a foreground server the way Ctrl+C does; kill it if it does not stop."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def local_server(
    *, host: str = DEFAULT_HOST, port: int | None = None, timeout: float = 180.0
) -> Iterator[str]:
    """Start a local Prefect server for the duration of the block; yield its API URL.

    An already running local server on the default port is reused. While the block runs,
    ``PREFECT_API_URL`` points at the server (for this process and the flow-run processes
    it starts).
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    port = port or DEFAULT_PORT
    api = f"http://{host}:{port}/api"
    proc: subprocess.Popen[bytes] | None = None
    if _healthy(api):
        _echo(f"using the Prefect server already running at {api}.")
    else:
        if not _port_free(host, port):
            port = _free_port(host)
            api = f"http://{host}:{port}/api"
        _echo(
            "PREFECT_API_URL is not set and schedules need a Prefect server: starting a "
            f"local one at http://{host}:{port} (loopback only; {_database_note()}). "
            "Set PREFECT_API_URL to use your own server instead."
        )
        proc = popen_guarded(
            _server_command(host, port),
            env=_server_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not _healthy(api):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the local Prefect server exited with status {proc.returncode}."
                )
            if time.monotonic() > deadline:
                _stop(proc)
                raise RuntimeError(f"the local Prefect server did not answer within {timeout} s.")
            time.sleep(0.5)
        _echo(f"Prefect server ready: UI at http://{host}:{port}")
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = api
    try:
        with temporary_settings(updates={PREFECT_API_URL: api}):
            yield api
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous
        if proc is not None:
            _stop(proc)


def _stop(proc: subprocess.Popen[Any]) -> None:
    """Stop the server process group this module started."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def deployment_config(config: RunConfig) -> RunConfig:
    """The config a deployment stores: paths absolute, so runs do not depend on a cwd.

    A ``run_dir`` is kept when given (every run then resumes that folder); normally it is
    unset, and each scheduled run makes a new folder under ``runs_root``.
    """
    updates: dict[str, Any] = {"runs_root": config.runs_root.expanduser().resolve()}
    if config.cache_dir is not None:
        updates["cache_dir"] = config.cache_dir.expanduser().resolve()
    if config.run_dir is not None:
        updates["run_dir"] = config.run_dir.expanduser().resolve()
    for key in ("data", "suite", "reference", "inject"):
        value = getattr(config, key)
        if value and Path(value).expanduser().exists():
            updates[key] = str(Path(value).expanduser().resolve())
    return config.model_copy(update=updates)


def serve(
    config: RunConfig,
    *,
    cron: str,
    name: str = "assay-scheduled",
    limit: int | None = 1,
) -> None:
    """Serve the main flow as deployment ``assay/<name>`` on a cron schedule; block.

    Parameters
    ----------
    config : RunConfig
        Parameters of every scheduled run (stored with the deployment).
    cron : str
        Cron schedule, e.g. ``"0 3 * * *"`` (03:00 every day, server time zone UTC).
    name : str
        Deployment name.
    limit : int or None
        Most runs at once from this process (1: a slow run delays the next).

    Raises
    ------
    pipeline.errors.DataError
        A bad cron string or bad input in ``config``.
    """
    from assay.flows.main import assay_flow, prefect_defaults, preflight

    check_cron(cron)
    preflight(config)
    config = deployment_config(config)
    url = configured_api_url()
    with prefect_defaults():
        if url is not None:
            _echo(f"serving on the Prefect server at {url}")
            _serve(assay_flow, config, cron=cron, name=name, limit=limit)
            return
        with local_server():
            _serve(assay_flow, config, cron=cron, name=name, limit=limit)


def _serve(flow_: Any, config: RunConfig, *, cron: str, name: str, limit: int | None) -> None:
    from prefect.types.entrypoint import EntrypointType

    _echo(f"deployment assay/{name}: cron {cron!r}, data {config.data}, runs in {config.runs_root}")
    flow_.serve(
        name=name,
        cron=cron,
        parameters={"config": config.model_dump(mode="json")},
        limit=limit,
        pause_on_shutdown=False,
        entrypoint_type=EntrypointType.MODULE_PATH,
        description="assay: validate, detect, clean, compare GANs, report.",
        tags=["assay"],
    )
