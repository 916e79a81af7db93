"""Atomic writes: a reader sees the old file, or the whole new one, never half of one.

Files are written next to their destination and renamed over it (``os.replace`` is atomic
on POSIX within one file system); folders are built in a sibling temporary folder and
renamed into place.

Temporary siblings are named ``.<name>.<pid>.<random>.tmp``. They are removed when the
write fails or is interrupted (an exception, including the ``KeyboardInterrupt`` or
``SystemExit`` that the command raises on SIGINT/SIGTERM); those of a process that died
without cleaning up (``kill -9``, power loss) are removed by the next write of the same
name. Written files and folders get the modes that ``open``/``mkdir`` would give them under
the process umask (0644 and 0755 under the usual umask 022), not the private 0600/0700 of
:mod:`tempfile`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: the classic read-and-restore
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _temp_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"^\.{re.escape(name)}\.(?:old-)?(\d+)(?:\.[^/]*)?(?:\.tmp)?$")


def remove_stale_temps(parent: str | os.PathLike, name: str) -> list[Path]:
    """Remove temporary siblings of ``parent/name`` left by processes that no longer run.

    Matches ``.<name>.<pid>[.<anything>].tmp`` and ``.<name>.old-<pid>`` whose ``<pid>``
    is not a running process; those of running processes (a concurrent writer) are kept.

    Returns
    -------
    list of Path
        What was removed.
    """
    parent = Path(parent)
    pattern = _temp_pattern(name)
    removed = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None or _pid_alive(int(match[1])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
        removed.append(entry)
    return removed


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Give an OSError without a file name (a full disk on write) the destination's name."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def _make_parents(folder: Path) -> list[Path]:
    """``mkdir -p folder``; return the folders it created, deepest first."""
    created = []
    for parent in (folder, *folder.parents):
        if parent.exists():
            break
        created.append(parent)
    folder.mkdir(parents=True, exist_ok=True)
    return created


def _remove_empty(folders: list[Path]) -> None:
    """Undo :func:`_make_parents` where nothing else was written meanwhile."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


@contextlib.contextmanager
def _parents_undone_on_error(folder: Path) -> Iterator[None]:
    """Create ``folder``'s missing parents; remove them again if the block fails."""
    created = _make_parents(folder)
    try:
        yield
    except BaseException:
        _remove_empty(created)
        raise


def _new_temp_file(path: Path) -> str:
    remove_stale_temps(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~current_umask())
    return tmp


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path that replaces ``path`` when the block exits cleanly.

    The block writes the temporary file (by name, so libraries that take a path can write
    it); on an exception it is removed and ``path`` is left as it was.
    """
    path = Path(path)
    with _parents_undone_on_error(path.parent):
        with _naming(path):
            tmp = _new_temp_file(path)
        try:
            with _naming(path):
                yield Path(tmp)
                os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    path = Path(path)
    with atomic_file(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")


def to_json(obj: Any) -> str:
    """Serialise ``obj`` (numpy scalars and arrays included) to indented JSON."""
    return json.dumps(obj, indent=2, default=_json_default, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically."""
    return write_text(path, to_json(_clean_nans(obj)))


def _clean_nans(obj: Any) -> Any:
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean_nans(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean_nans(v) for v in obj]
    return obj


def write_parquet(path: str | os.PathLike, frame: pd.DataFrame) -> Path:
    """Write ``frame`` to ``path`` as Parquet, atomically."""
    path = Path(path)
    with atomic_file(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return path


def _new_temp_dir(path: Path) -> Path:
    remove_stale_temps(path.parent, path.name)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~current_umask())
    return tmp


@contextlib.contextmanager
def work_dir(parent: str | os.PathLike, name: str = "work") -> Iterator[Path]:
    """Yield a scratch folder ``parent/.<name>.<pid>.<random>.tmp``, removed on exit.

    Removed whether the block succeeds or fails; one left by a killed process is removed
    by the next :func:`work_dir` of the same ``name`` in ``parent``.
    """
    Path(parent).mkdir(parents=True, exist_ok=True)
    tmp = _new_temp_dir(Path(parent) / name)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``path`` when the block exits cleanly.

    On an exception the temporary folder is removed and ``path`` is left as it was.
    With ``overwrite`` an existing ``path`` is replaced (the old one is moved aside
    first and deleted only after the new one is in place).
    """
    path = Path(path)
    with _parents_undone_on_error(path.parent):
        with _naming(path):
            tmp = _new_temp_dir(path)
        try:
            with _naming(path):
                yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        old = None
        try:
            if path.exists():
                if not overwrite:
                    raise FileExistsError(f"{path} already exists")
                old = path.with_name(f".{path.name}.old-{os.getpid()}")
                os.replace(path, old)
            os.replace(tmp, path)
        except BaseException:
            if old is not None and not path.exists():
                os.replace(old, path)  # put the previous folder back
                old = None
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
