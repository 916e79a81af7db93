"""Stage caching: code versions, cache keys, cache records, and serving a record's outputs.

Every stage task has a ``cache_key_fn`` (:func:`stage_key`) that hashes, as JSON, only
small things:

- the content hash of the stage's inputs (the dataset, the issues table, the cleaned
  dataset), computed by the stage that produced them (``output_hash`` of its summary);
- the stage's own parameters (folds, seed, device, policy, steps, ...);
- the code version: the assay version plus a SHA-256 of the stage's source files
  (:func:`code_version`).

Arrays are never hashed by Prefect. The run folder is not part of any key, so a cache
entry made by one run folder is found by the next run under the same runs root.

A task returns a small JSON *record* (:func:`make_record`): the key, the run folder that
produced the outputs, the relative paths it wrote with the SHA-256 of every file, and the
stage's summary. Prefect persists that record (JSON serializer, no pickle) in the cache
folder. Before a record is served, :func:`adopt_outputs` checks the hash of every file it
names; outputs of another run folder are *copied* into this one (never hard-linked, so
editing one run's files cannot change another's). A file that is gone or differs from
its hash makes the stage recompute, with a warning.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import lru_cache
from importlib import metadata, util
from pathlib import Path
from typing import Any

from assay.pipeline.atomic import atomic_dir
from assay.pipeline.hashing import file_hash, files_under, tree_hash

#: Bump to invalidate every cached record (e.g. when the record format changes).
CACHE_FORMAT = "2"

#: Where each stage's code starts: its modules and the data packages it reads (suites).
#: The code version hashes these and every assay module they import, directly or not,
#: found by reading the source (:func:`stage_sources`); so a change to the GAN does not
#: invalidate cached detections, and a new helper module is never missed.
STAGE_CODE: dict[str, tuple[str, ...]] = {
    "ingest": ("assay.pipeline.stages.ingest", "assay.pipeline.inject"),
    "validate": ("assay.pipeline.stages.validate", "assay.expectations"),
    "detect": ("assay.pipeline.stages.detect",),
    "clean": ("assay.pipeline.stages.clean",),
    "generate": ("assay.pipeline.stages.generate",),
    "report": ("assay.pipeline.stages.report",),
}

#: Task parameters that never enter a cache key: where outputs go, and objects whose
#: identity is already covered by a hash parameter (``dataset`` by ``data_hash``).
UNKEYED = frozenset({"run_dir", "dataset", "progress", "work_root", "work"})

#: Modules of these packages count as code of a stage.
CODE_PACKAGES = ("assay.pipeline", "assay.models", "assay.expectations")

_DATA_SUFFIXES = (".json", ".html", ".j2", ".jinja", ".css", ".yaml", ".yml", ".toml", ".txt")


def say(message: str) -> None:
    """A warning line on stderr (stdout is left for the result)."""
    print(f"[assay] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- code version
def _module_file(name: str) -> Path | None:
    try:
        spec = util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin in (None, "namespace"):
        return None
    return Path(spec.origin)


#: ``ast.parse`` is not safe in several threads at once on every CPython in use (cache
#: keys of tasks that run side by side are computed in their threads).
_AST_LOCK = threading.Lock()


def _imported_names(path: Path, module: str) -> set[str]:
    """Dotted assay names a module imports (anywhere in it, lazily or not)."""
    try:
        with _AST_LOCK:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError):
        return set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{node.module}" if node.module else parent
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {n for n in names if n.startswith(tuple(f"{p}." for p in CODE_PACKAGES)) or n in
            CODE_PACKAGES}  # fmt: skip


def stage_sources(stage: str) -> list[Path]:
    """Every file whose content makes up ``stage``'s code version, sorted.

    The stage's entry modules, the assay modules they import (the transitive closure,
    read from the source), their parent packages' ``__init__.py``, and the data files
    (templates, suites) inside each package that is reached.
    """
    seen: set[tuple[str, bool]] = set()
    files: set[Path] = set()
    # (module, follow its imports?): a parent package's ``__init__`` is hashed, but what
    # it re-exports is code of the stage only when the stage imports it
    todo = [(name, True) for name in STAGE_CODE[stage]]
    while todo:
        name, follow = todo.pop()
        if (name, follow) in seen or (name, True) in seen:
            continue
        seen.add((name, follow))
        path = _module_file(name)
        if path is None:
            continue
        files.add(path)
        parts = name.split(".")
        todo.extend((".".join(parts[:i]), False) for i in range(2, len(parts)))
        if not follow:
            continue
        if path.name == "__init__.py" and name not in ("assay.pipeline", "assay.models"):
            files.update(
                p
                for p in path.parent.rglob("*")
                if p.suffix in _DATA_SUFFIXES and "__pycache__" not in p.parts
            )
        todo.extend((n, True) for n in _imported_names(path, name))
    return sorted(files)


def assay_version() -> str:
    try:
        return metadata.version("assay")
    except metadata.PackageNotFoundError:  # a source tree that is not installed
        return "0+unknown"


@lru_cache(maxsize=256)
def _digest_files(stamp: tuple[tuple[str, int, int], ...]) -> str:
    """Hash of the files named in ``stamp`` (cached while their mtimes and sizes hold)."""
    h = hashlib.sha256()
    for name, _, _ in stamp:
        path = Path(name)
        h.update("/".join(path.parts[-3:]).encode())
        h.update(b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]


def code_version(stage: str) -> str:
    """``<assay version>+<hash of the stage's source files>``, e.g. ``0.1.0+3f2a9c...``."""
    if stage not in STAGE_CODE:
        raise ValueError(f"`stage` must be one of {sorted(STAGE_CODE)}. Got {stage!r} instead.")
    files = stage_sources(stage)
    stamp = tuple((str(p), st.st_mtime_ns, st.st_size) for p in files for st in (p.stat(),))
    return f"{assay_version()}+{_digest_files(stamp)}"


# --------------------------------------------------------------------------- cache keys
def cache_key(stage: str, parameters: dict[str, Any], *, part: str = "") -> str:
    """The cache key of ``stage`` (or of one ``part`` of it) for task ``parameters``.

    ``<stage>[-<part>]-<40 hex digits>``: SHA-256 over the JSON of the cache format, the
    stage name, the part, the stage's code version and the keyed parameters (sorted;
    :data:`UNKEYED` ones dropped).
    """
    keyed = {k: v for k, v in parameters.items() if k not in UNKEYED}
    payload = {
        "format": CACHE_FORMAT,
        "stage": stage,
        "part": part,
        "code": code_version(stage),
        "params": keyed,
    }
    blob = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    prefix = f"{stage}-{part}" if part else stage
    return f"{prefix}-{hashlib.sha256(blob.encode()).hexdigest()[:40]}"


def stage_key(stage: str, *, part: str = "") -> Callable[[Any, dict[str, Any]], str]:
    """A Prefect ``cache_key_fn`` for ``stage`` (see :func:`cache_key`)."""

    def key_fn(context: Any, parameters: dict[str, Any]) -> str:
        return cache_key(stage, parameters, part=part)

    key_fn.__name__ = f"{stage}_{part or 'stage'}_cache_key".replace("-", "_")
    key_fn.__qualname__ = key_fn.__name__
    return key_fn


def current_key() -> str | None:
    """The cache key of the running task (``None`` outside a Prefect task run)."""
    from prefect.transactions import get_transaction

    txn = get_transaction()
    return None if txn is None else txn.key


# --------------------------------------------------------------------------- records
def _listing(base: Path, paths: list[str]) -> dict[str, str]:
    """Relative file -> SHA-256 of every file under ``paths`` (relative to ``base``)."""
    files: dict[str, str] = {}
    for rel in paths:
        target = base / rel
        if target.is_file():
            files[rel] = file_hash(target)
        elif target.is_dir():
            for p in files_under(target):
                files[p.relative_to(base).as_posix()] = file_hash(p)
    return files


def make_record(
    stage: str, *, run_dir: str | Path, paths: list[str], summary: dict[str, Any]
) -> dict[str, Any]:
    """The JSON record a stage task returns and Prefect persists in the cache.

    Keys: ``stage``, ``key``, ``code``, ``run_id`` and ``run_dir`` (the producer),
    ``paths`` (relative outputs), ``files`` (relative file -> SHA-256), ``hash`` (the
    stage's output hash), ``summary`` (the stage's summary, JSON), ``seconds``.
    """
    run_dir = Path(run_dir)
    return {
        "stage": stage,
        "key": current_key(),
        "code": code_version(stage),
        "run_id": run_dir.name,
        "run_dir": str(run_dir),
        "paths": list(paths),
        "files": _listing(run_dir, paths),
        "hash": summary["output_hash"],
        "summary": summary,
        "seconds": summary.get("seconds", 0.0),
    }


@contextlib.contextmanager
def work_folder(work_root: str | Path) -> Iterator[tuple[Path, Path]]:
    """Yield ``(final, tmp)``: a work folder named by the running task's cache key.

    Parts of a stage that run as parallel tasks (one fold, one GAN arm) write their
    intermediate files here, in the shared cache folder, so a later run that gets their
    cached record finds the files without copying them into its run folder. ``tmp``
    becomes ``final`` atomically when the block exits cleanly.
    """
    key = current_key() or f"uncached-{os.getpid()}-{time.time_ns()}"
    final = Path(work_root) / key
    with atomic_dir(final) as tmp:
        yield final, tmp


def make_work_record(
    stage: str, *, part: str, work: Path, summary: dict[str, Any], seconds: float
) -> dict[str, Any]:
    """The record of a stage part: like :func:`make_record`, outputs in ``work``."""
    work = Path(work)
    return {
        "stage": stage,
        "part": part,
        "key": current_key(),
        "code": code_version(stage),
        "work": str(work),
        "files": _listing(work, [p.name for p in sorted(work.iterdir())]),
        "hash": tree_hash(work),
        "summary": summary,
        "seconds": round(seconds, 3),
    }


def _intact(base: Path, files: dict[str, str]) -> str | None:
    """The first recorded file under ``base`` that is gone or differs from its hash."""
    for rel, digest in files.items():
        path = base / rel
        if not path.is_file() or file_hash(path) != digest:
            return rel
    return None


def work_present(record: dict[str, Any], run_dir: Path | None = None) -> bool:
    """Whether every file of a work record is still there, with its recorded content."""
    bad = _intact(Path(record["work"]), record.get("files", {}))
    if bad is not None:
        say(f"cached {record['stage']} {record.get('part', '')} file {bad} is gone or "
            "changed; recomputing")  # fmt: skip
    return bad is None


def adopt_outputs(record: dict[str, Any], run_dir: Path) -> bool:
    """Make the outputs named by ``record`` present in ``run_dir``, verified.

    Every recorded file is checked against its SHA-256, at the producer; outputs of
    another run folder are then copied into ``run_dir``, each folder atomically.

    Returns
    -------
    bool
        ``False`` when a recorded file is missing or changed (the stage must be
        recomputed; a warning line says which file); ``True`` when ``run_dir`` holds the
        outputs.
    """
    run_dir = Path(run_dir)
    src_root = Path(record["run_dir"])
    bad = _intact(src_root, record.get("files", {}))
    if bad is not None:
        where = "this run" if src_root.resolve() == run_dir.resolve() else record["run_id"]
        say(f"cached {record['stage']} output {bad} of {where} is gone or changed; "
            "recomputing")  # fmt: skip
        return False
    if src_root.resolve() == run_dir.resolve():
        return True
    for rel in record["paths"]:
        src, dst = src_root / rel, run_dir / rel
        if src.is_dir():
            with atomic_dir(dst) as tmp:
                shutil.copytree(src, tmp, dirs_exist_ok=True)
        elif src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
            try:
                shutil.copy2(src, tmp)
                os.replace(tmp, dst)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
    return _intact(run_dir, record.get("files", {})) is None
