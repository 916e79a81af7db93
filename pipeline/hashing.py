"""Content hashes of files and folders (SHA-256), for cache keys and cache verification."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path


def file_hash(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def files_under(path: str | Path) -> list[Path]:
    """Every regular file below ``path`` (sorted), leaving out temporary and hidden entries."""
    path = Path(path)
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )


def tree_hash(path: str | Path, *, only: Iterable[str] | None = None) -> str:
    """SHA-256 (hex) over the relative names and contents of the files under ``path``.

    ``only`` restricts it to those relative names (the ones that exist), e.g. the files a
    later stage reads, leaving out logs and timings that differ between identical runs.
    A file hashes as :func:`file_hash`.
    """
    path = Path(path)
    if path.is_file():
        return file_hash(path)
    if only is not None:
        candidates = [path / rel for rel in sorted(only)]
    else:
        candidates = files_under(path)
    h = hashlib.sha256()
    for p in candidates:
        if p.is_file():
            h.update(p.relative_to(path).as_posix().encode() + b"\0")
            h.update(bytes.fromhex(file_hash(p)))
    return h.hexdigest()


def path_fingerprint(spec: str | None) -> str | None:
    """A cheap fingerprint of a file or folder named by ``spec`` (names, sizes, mtimes).

    Specs that are not paths (``digits``) fingerprint as themselves.
    """
    if spec is None:
        return None
    path = Path(spec).expanduser()
    if not path.exists():
        return spec
    if path.is_file():
        return file_hash(path)
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(path).as_posix()}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()
