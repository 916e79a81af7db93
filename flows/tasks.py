"""Prefect tasks: thin wrappers around the pipeline's stage functions, with explicit caching.

Caching
-------
Every stage task that computes something has a ``cache_key_fn`` (see :func:`stage_key`)
that hashes, as JSON, only small things:

- the content hash of the stage's input dataset (and of upstream outputs: the issues
  table, the cleaned dataset), computed once by the stage that produced them;
- the stage's own parameters (folds, seed, device, policy, steps, ...);
- the code version: the assay version plus a SHA-256 of the stage's source files
  (:func:`code_version`).

Arrays are never hashed by Prefect. The run folder and run id are not part of any key, so
a cache entry made by one run folder is found by the next run under the same runs root.

A task returns a small JSON *record* (:func:`make_record`): the key, the run folder that
produced the outputs, the relative paths it wrote (with file sizes), a hash of its main
output and a summary. Prefect persists that record (JSON serializer, no pickle) in the
cache folder, by default ``<runs root>/.cache/``; the outputs themselves stay in the run
folder that made them. When a later run gets a cached record produced by another run
folder, :func:`adopt_outputs` hard-links (or copies) those outputs into the new run folder,
so every run folder is complete on its own. When the producer's files are gone, the stage
flow recomputes with ``refresh_cache=True``.

Stage outputs are written into a temporary sibling folder and renamed into place at the
end (:func:`pipeline.atomic.atomic_dir`), and a record is persisted only after that; a run
killed mid-stage leaves either the previous complete folder or none, never half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from assay.pipeline.atomic import atomic_dir
from assay.pipeline.errors import AssayError

#: Bump to invalidate every cached record (e.g. when the record format changes).
CACHE_FORMAT = "1"

#: Where each stage's code starts: its modules, plus data folders it reads (suites). The
#: code version hashes these and every ``pipeline``/``models`` module they import,
#: directly or not, found by reading the source (:func:`stage_sources`); so a change to
#: the GAN does not invalidate cached detections, and a new helper module is never missed.
STAGE_CODE: dict[str, tuple[str, ...]] = {
    "ingest": ("assay.pipeline.io", "assay.pipeline.ingest", "assay.pipeline.inject"),
    "validate": ("assay.pipeline.io", "assay.pipeline.validate", "assay.expectations"),
    "detect": ("assay.pipeline.io", "assay.pipeline.detect"),
    "clean": ("assay.pipeline.io", "assay.pipeline.clean"),
    "generate": ("assay.pipeline.io", "assay.pipeline.generate"),
    "report": ("assay.pipeline.io", "assay.pipeline.report"),
}

#: Task parameters that never enter a cache key: where outputs go, and objects whose
#: identity is already covered by a hash parameter (``dataset`` by ``data_hash``).
UNKEYED = frozenset({"run_dir", "run_id", "dataset", "progress", "work_root", "work"})

#: Top-level packages whose modules count as code of a stage.
CODE_PACKAGES = ("assay.pipeline", "assay.models")

_DATA_SUFFIXES = (".json", ".html", ".j2", ".jinja", ".css", ".yaml", ".yml", ".toml", ".txt")


def source_root() -> Path:
    """The folder holding the ``pipeline`` folder (the repository root in a checkout)."""
    import assay.pipeline

    return Path(assay.pipeline.__file__).resolve().parent.parent


def _module_file(name: str, root: Path) -> Path | None:
    base = root / Path(*name.split(".")[1:])
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _imported_names(path: Path, module: str) -> set[str]:
    """Dotted names a module imports (anywhere in it, lazily or not), or names in strings.

    ``from a import b`` yields ``a`` and ``a.b`` (``b`` may be a module); strings such as
    ``"assay.pipeline.detect.vae"`` count too (modules imported by name).
    """
    import ast

    try:
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
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value.startswith(tuple(f"{p}." for p in CODE_PACKAGES)):
                names.add(node.value)
    return {n for n in names if n.startswith(tuple(f"{p}." for p in CODE_PACKAGES))}


def stage_sources(stage: str, *, root: Path | None = None) -> list[Path]:
    """Every file whose content makes up ``stage``'s code version, sorted.

    The stage's entry modules, the ``pipeline``/``models`` modules they import (the
    transitive closure, read from the source), the parent packages' ``__init__.py``, data
    files inside those packages (templates), and data folders named in
    :data:`STAGE_CODE` (``expectations``).
    """
    root = (root or source_root()).resolve()
    seen: set[str] = set()
    files: set[Path] = set()
    todo = list(STAGE_CODE[stage])
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(name, root)
        if path is None:
            folder = root / Path(*name.split(".")[1:])
            if not name.startswith(CODE_PACKAGES) and folder.is_dir():  # a data folder
                files.update(p for p in folder.rglob("*") if p.suffix in _DATA_SUFFIXES)
            continue
        files.add(path)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(2, len(parts)))  # parent packages
        if path.name == "__init__.py" and (
            len(parts) > 2 or not name.startswith(CODE_PACKAGES)
        ):  # a sub-package's own data files
            files.update(
                p
                for p in path.parent.rglob("*")
                if p.suffix in _DATA_SUFFIXES and "__pycache__" not in p.parts
            )
        todo.extend(_imported_names(path, name))
    return sorted(files)


def assay_version() -> str:
    try:
        return metadata.version("assay")
    except metadata.PackageNotFoundError:  # a source tree that is not installed
        return "0+unknown"


def _code_digest(stage: str, root: Path) -> str:
    files = stage_sources(stage, root=root)
    stamp = tuple((str(p), st.st_mtime_ns, st.st_size) for p in files for st in (p.stat(),))
    return _digest_files(str(root), stamp)


@lru_cache(maxsize=256)
def _digest_files(root: str, stamp: tuple[tuple[str, int, int], ...]) -> str:
    """Hash of the files named in ``stamp`` (cached while their mtimes and sizes hold)."""
    h = hashlib.sha256()
    base = Path(root)
    for name, _, _ in stamp:
        path = Path(name)
        h.update(path.relative_to(base).as_posix().encode())
        h.update(b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]


def code_version(stage: str, *, root: Path | None = None) -> str:
    """``<assay version>+<hash of the stage's source files>``, e.g. ``0.1.0+3f2a9c...``.

    Parameters
    ----------
    stage : str
        One of :data:`STAGE_CODE`.
    root : Path, optional
        Folder holding ``pipeline/``, ``models/`` and ``expectations/``; default
        :func:`source_root`. The files are those of :func:`stage_sources`.
    """
    if stage not in STAGE_CODE:
        raise ValueError(f"`stage` must be one of {sorted(STAGE_CODE)}. Got {stage!r} instead.")
    root = (root or source_root()).resolve()
    return f"{assay_version()}+{_code_digest(stage, root)}"


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


# --------------------------------------------------------------------------- helpers
def stage_module(name: str) -> ModuleType:
    """Import a pipeline module lazily, with a plain error when it is not there."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise AssayError(
                f"the stage module {name!r} is not available in this installation "
                f"({exc}); install or update assay."
            ) from exc
        raise


def stage_function(module: str, name: str) -> Callable[..., Any]:
    """``module.name``, with a plain error naming both when it is missing."""
    mod = stage_module(module)
    fn = getattr(mod, name, None)
    if fn is None:
        raise AssayError(f"{module} has no {name}(); this assay installation is incomplete.")
    return fn


def file_hash(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tree_hash(path: Path, *, only: Iterable[str] | None = None) -> str:
    """SHA-256 (hex) over the relative names and contents of the files under ``path``.

    ``only`` restricts it to those relative names (the ones that exist), e.g. the files a
    later stage reads, leaving out logs and timings that differ between identical runs.
    """
    path = Path(path)
    if path.is_file():
        return file_hash(path)
    h = hashlib.sha256()
    if only is not None:
        candidates = [path / rel for rel in sorted(only)]
    else:
        candidates = sorted(path.rglob("*"))
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


def _listing(run_dir: Path, paths: Iterable[str]) -> dict[str, int]:
    files: dict[str, int] = {}
    for rel in paths:
        target = run_dir / rel
        if target.is_file():
            files[rel] = target.stat().st_size
        elif target.is_dir():
            for p in sorted(target.rglob("*")):
                if p.is_file():
                    files[p.relative_to(run_dir).as_posix()] = p.stat().st_size
    return files


def current_key() -> str | None:
    """The cache key of the running task (``None`` outside a Prefect task run)."""
    from prefect.transactions import get_transaction

    txn = get_transaction()
    return None if txn is None else txn.key


def make_record(
    stage: str,
    *,
    run_dir: str | Path,
    run_id: str,
    paths: list[str],
    output_hash: str,
    summary: dict[str, Any],
    seconds: float,
) -> dict[str, Any]:
    """The JSON record a stage task returns and Prefect persists in the cache.

    Keys: ``stage``, ``key``, ``code``, ``run_id`` and ``run_dir`` (the producer),
    ``paths`` (relative outputs), ``files`` (relative file -> size), ``hash`` (of the main
    output), ``summary`` (small, JSON), ``seconds`` (compute time of the producer).
    """
    run_dir = Path(run_dir)
    return {
        "stage": stage,
        "key": current_key(),
        "code": code_version(stage),
        "run_id": run_id,
        "run_dir": str(run_dir),
        "paths": list(paths),
        "files": _listing(run_dir, paths),
        "hash": output_hash,
        "summary": summary,
        "seconds": round(seconds, 3),
    }


@contextlib.contextmanager
def work_folder(work_root: str | Path) -> Any:
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
    stage: str,
    *,
    part: str,
    work: Path,
    run_id: str,
    summary: dict[str, Any],
    seconds: float,
) -> dict[str, Any]:
    """The record of a stage part: like :func:`make_record`, outputs in ``work``."""
    work = Path(work)
    return {
        "stage": stage,
        "part": part,
        "key": current_key(),
        "code": code_version(stage),
        "run_id": run_id,
        "work": str(work),
        "files": _listing(work, [p.name for p in sorted(work.iterdir())]),
        "hash": tree_hash(work),
        "summary": summary,
        "seconds": round(seconds, 3),
    }


def work_present(record: dict[str, Any], run_dir: Path | None = None) -> bool:
    """Whether every file of a work record is still there (same size)."""
    work = Path(record["work"])
    return all(
        (work / rel).is_file() and (work / rel).stat().st_size == size
        for rel, size in record.get("files", {}).items()
    )


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def adopt_outputs(record: dict[str, Any], run_dir: Path) -> bool:
    """Make the outputs named by ``record`` present in ``run_dir``.

    Outputs produced by another run folder are hard-linked (copied across file systems)
    into ``run_dir``, each folder atomically. Stage outputs are only ever replaced by
    rename, never rewritten in place, so linked files cannot change under a reader.

    Returns
    -------
    bool
        ``False`` when some recorded file is missing at the producer (deleted run folder),
        so the stage must be recomputed; ``True`` when ``run_dir`` now holds the outputs.
    """
    run_dir = Path(run_dir)
    src_root = Path(record["run_dir"])
    files: dict[str, int] = record.get("files", {})
    for rel, size in files.items():
        src = src_root / rel
        if not src.is_file() or src.stat().st_size != size:
            return False
    if src_root.resolve() == run_dir.resolve():
        return True
    for rel in record["paths"]:
        src, dst = src_root / rel, run_dir / rel
        if src.is_dir():
            with atomic_dir(dst) as tmp:
                shutil.copytree(src, tmp, dirs_exist_ok=True, copy_function=_link_or_copy)
        elif src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            _link_or_copy(str(src), str(tmp))
            os.replace(tmp, dst)
    return True


def transient_io_error(task_: Any, task_run: Any, state: Any) -> bool:
    """Retry condition: only I/O faults that can pass (not missing files, not bad data)."""
    exc = getattr(state, "data", None)
    if not isinstance(exc, OSError):
        return False
    permanent = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)
    return not isinstance(exc, permanent)


_CACHED = {
    "persist_result": True,
    "result_serializer": "json",
    "cache_expiration": None,
}


# --------------------------------------------------------------------------- ingest
@task(
    name="load-data",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=transient_io_error,
)
def load_data(data: str, *, inject: str | None, seed: int, strict: bool) -> dict[str, Any]:
    """Load the dataset (and inject dirt into it) -> ``{"dataset", "hash", "raw_hash"}``.

    Never cached: loading is how a run learns whether its data changed. ``raw_hash`` is
    the content hash of the data as loaded, ``hash`` that of the dataset the run works on
    (after injection).
    """
    io = stage_module("assay.pipeline.io")
    dataset = io.load(data, strict=strict)
    raw_hash = dataset.content_hash()
    if inject:
        inject_fn = stage_function("assay.pipeline.inject", "inject")
        dataset = inject_fn(dataset, inject, seed=seed)
    return {"dataset": dataset, "hash": dataset.content_hash(), "raw_hash": raw_hash}


@task(
    name="snapshot-dataset",
    cache_key_fn=stage_key("ingest"),
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=transient_io_error,
    **_CACHED,
)
def snapshot(dataset: Any, *, data_hash: str, run_dir: str, run_id: str) -> dict[str, Any]:
    """Write the dataset into ``run_dir/dataset`` (canonical format, atomic)."""
    start = time.perf_counter()
    io = stage_module("assay.pipeline.io")
    io.save(dataset, Path(run_dir) / "dataset")
    summary = dataset.summary()
    if "injected" in dataset.columns:
        counts = dataset.columns["injected"].astype(str).value_counts()
        summary["injected"] = {str(k): int(v) for k, v in counts.items()}
    return make_record(
        "ingest",
        run_dir=run_dir,
        run_id=run_id,
        paths=["dataset"],
        output_hash=data_hash,
        summary=summary,
        seconds=time.perf_counter() - start,
    )


def _load_snapshot(run_dir: str | Path, name: str = "dataset") -> Any:
    io = stage_module("assay.pipeline.io")
    return io.load(str(Path(run_dir) / name))


# --------------------------------------------------------------------------- validate
@task(name="run-validation", cache_key_fn=stage_key("validate"), **_CACHED)
def validate_data(
    *,
    data_hash: str,
    suite: str | None,
    suite_hash: str | None,
    reference: str | None,
    reference_hash: str | None,
    data_docs: bool,
    run_dir: str,
    run_id: str,
) -> dict[str, Any]:
    """Run the expectation suites on the snapshot -> ``run_dir/validation/``.

    The record's summary has ``success_critical`` and, when it is false, the
    ``critical_message`` the flow stops with.
    """
    start = time.perf_counter()
    validate_mod = stage_module("assay.pipeline.validate")
    dataset = _load_snapshot(run_dir)
    ref = stage_module("assay.pipeline.io").load(reference) if reference else None
    with atomic_dir(Path(run_dir) / "validation") as tmp:
        result = validate_mod.validate(
            dataset, suite_path=suite, reference=ref, out_dir=tmp, data_docs=data_docs
        )
    failed = [r for r in result.results if not r.get("success", False)]
    flags = result.sample_flags
    flag_cols = [c for c in flags.columns if c != "sample_id"]
    n_flagged = int(flags[flag_cols].any(axis=1).sum()) if flag_cols and len(flags) else 0
    summary: dict[str, Any] = {
        "success_critical": bool(result.success_critical),
        "n_expectations": len(result.results),
        "n_failed": len(failed),
        "failed": [
            {
                "expectation": str(r.get("expectation", "")),
                "severity": str(r.get("severity", "")),
                "column": r.get("column"),
            }
            for r in failed[:50]
        ],
        "n_flagged_samples": n_flagged,
        "critical_message": None,
    }
    flags_path = Path(run_dir) / "validation" / "sample_flags.parquet"
    # what the clean stage reads from this stage: key it on this file alone (not on the
    # Data Docs, which change with their own option)
    summary["flags_hash"] = file_hash(flags_path) if flags_path.exists() else None
    if not result.success_critical:
        message_fn = getattr(validate_mod, "critical_failures_message", None)
        summary["critical_message"] = (
            message_fn(result) if message_fn else "critical expectations failed"
        )
    return make_record(
        "validate",
        run_dir=run_dir,
        run_id=run_id,
        paths=["validation"],
        output_hash=tree_hash(Path(run_dir) / "validation"),
        summary=summary,
        seconds=time.perf_counter() - start,
    )


# --------------------------------------------------------------------------- detect
@task(name="run-detection", log_prints=True, cache_key_fn=stage_key("detect"), **_CACHED)
def detect_issues(
    *,
    data_hash: str,
    folds: int,
    seed: int,
    device: str,
    run_dir: str,
    run_id: str,
    progress: bool = False,
    work: list[str] | None = None,
) -> dict[str, Any]:
    """Run every detector -> ``run_dir/detection/`` (issues.parquet, summary.json, ...).

    ``work``, when given, lists the work folders of the :func:`fit_fold` tasks (fold
    order); their out-of-fold predictions are assembled and reused by the detectors
    instead of training the folds again.
    """
    start = time.perf_counter()
    run_detection = stage_function("assay.pipeline.detect", "run_detection")
    dataset = _load_snapshot(run_dir)
    extra: dict[str, Any] = {}
    if work:
        oof = stage_module("assay.pipeline.detect.oof")
        fold_results = [oof.FoldResult.load(Path(w) / FOLD_FILE) for w in work]
        extra["oof"] = oof.assemble_oof(dataset, fold_results, seed=seed)
    with atomic_dir(Path(run_dir) / "detection") as tmp:
        result = run_detection(
            dataset,
            out_dir=tmp,
            seed=seed,
            device=device,
            folds=folds,
            progress=progress,
            **extra,
        )
    summary = dict(result.summary) if isinstance(result.summary, dict) else {}
    return make_record(
        "detect",
        run_dir=run_dir,
        run_id=run_id,
        paths=["detection"],
        output_hash=tree_hash(Path(run_dir) / "detection", only=DETECTION_OUTPUTS),
        summary=_small(summary),
        seconds=time.perf_counter() - start,
    )


#: The detection files later stages read; their hash is the detection stage's output hash
#: (``summary.json`` also holds timings, which differ between identical runs).
DETECTION_OUTPUTS = ("issues.parquet", "noise_matrix.npy")

#: File name of one fold's result in its work folder.
FOLD_FILE = "fold.npz"


def parallel_detection_available() -> bool:
    """Whether ``pipeline.detect`` exposes per-fold training (``fit_fold`` & co.)."""
    try:
        oof = importlib.import_module("assay.pipeline.detect.oof")
    except ImportError:
        return False
    if not all(hasattr(oof, n) for n in ("fit_fold", "assemble_oof", "FoldResult")):
        return False
    run_detection = getattr(importlib.import_module("assay.pipeline.detect"), "run_detection", None)
    return run_detection is not None and _accepts(run_detection, "oof")


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


@task(name="fit-fold", log_prints=True, cache_key_fn=stage_key("detect", part="fold"), **_CACHED)
def fit_fold(
    *,
    data_hash: str,
    fold: int,
    folds: int,
    seed: int,
    device: str,
    run_dir: str,
    run_id: str,
    work_root: str,
    progress: bool = False,
) -> dict[str, Any]:
    """Train the classifier of one fold and predict every sample -> a work folder."""
    start = time.perf_counter()
    oof = stage_module("assay.pipeline.detect.oof")
    dataset = _load_snapshot(run_dir)
    with work_folder(work_root) as (final, tmp):
        result = oof.fit_fold(
            dataset, fold, n_folds=folds, seed=seed, device=device, progress=progress
        )
        result.save(tmp / FOLD_FILE)
    return make_work_record(
        "detect",
        part="fold",
        work=final,
        run_id=run_id,
        summary={"fold": fold, "folds": folds},
        seconds=time.perf_counter() - start,
    )


def _small(obj: Any, *, limit: int = 200) -> Any:
    """Keep a summary JSON-small: scalars, short lists, nested dicts."""
    if isinstance(obj, dict):
        return {str(k): _small(v, limit=limit) for k, v in list(obj.items())[:limit]}
    if isinstance(obj, list | tuple):
        return [_small(v, limit=limit) for v in obj[:limit]]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    try:
        return obj.item()  # numpy scalars
    except (AttributeError, ValueError):
        return str(obj)


# --------------------------------------------------------------------------- clean
@task(name="clean-dataset", cache_key_fn=stage_key("clean"), **_CACHED)
def clean_data(
    *,
    data_hash: str,
    issues_hash: str,
    policy: str,
    run_dir: str,
    run_id: str,
    validation_hash: str | None = None,
) -> dict[str, Any]:
    """Turn issues into decisions -> ``run_dir/cleaned/`` (dataset + decisions.parquet).

    The validation flags (``validation/sample_flags.parquet``, when the validate stage ran;
    ``validation_hash`` keys them) go into the cleaned manifest with the decisions.
    """
    import pandas as pd

    start = time.perf_counter()
    clean_mod = stage_module("assay.pipeline.clean")
    dataset = _load_snapshot(run_dir)
    issues = pd.read_parquet(Path(run_dir) / "detection" / "issues.parquet")
    flags_path = Path(run_dir) / "validation" / "sample_flags.parquet"
    extra: dict[str, Any] = {}
    if validation_hash and flags_path.exists():
        extra["sample_flags"] = pd.read_parquet(flags_path)
    cleaned, decisions = clean_mod.clean(dataset, issues, policy=policy, **extra)
    with atomic_dir(Path(run_dir) / "cleaned") as tmp:
        clean_mod.write_cleaned(cleaned, decisions, tmp)
    counts = decisions["decision"].astype(str).value_counts()
    summary = {
        "policy": policy,
        "n_in": len(dataset),
        "n_out": len(cleaned),
        "decisions": {str(k): int(v) for k, v in counts.items()},
    }
    return make_record(
        "clean",
        run_dir=run_dir,
        run_id=run_id,
        paths=["cleaned"],
        output_hash=tree_hash(Path(run_dir) / "cleaned"),
        summary=summary,
        seconds=time.perf_counter() - start,
    )


# --------------------------------------------------------------------------- generate
@task(name="compare-gans", log_prints=True, cache_key_fn=stage_key("generate"), **_CACHED)
def generate_compare(
    *,
    data_hash: str,
    issues_hash: str,
    cleaned_hash: str,
    steps: int,
    seed: int,
    device: str,
    run_dir: str,
    run_id: str,
    progress: bool = False,
    work: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train the GAN arms on dirty and cleaned data and score them -> ``run_dir/gan/``.

    ``work``, when given (``{"plan": folder, "arms": {arm: folder}}``), holds the results
    of :func:`gan_prepare` and the :func:`gan_arm` tasks, which are only gathered here.
    """
    start = time.perf_counter()
    run = Path(run_dir)
    if work:
        generate = stage_module("assay.pipeline.generate")
        with atomic_dir(run / "gan") as tmp:
            metrics = generate.finish_comparison(
                Path(work["plan"]),
                {arm: Path(folder) for arm, folder in work["arms"].items()},
                out_dir=tmp,
            )
        return make_record(
            "generate",
            run_dir=run_dir,
            run_id=run_id,
            paths=["gan"],
            output_hash=tree_hash(run / "gan"),
            summary=_gan_summary(metrics),
            seconds=time.perf_counter() - start,
        )
    compare_gans = stage_function("assay.pipeline.generate", "compare_gans")
    dirty, cleaned, issues, noise_matrix = _generate_inputs(run)
    with atomic_dir(run / "gan") as tmp:
        metrics = compare_gans(
            dirty,
            cleaned,
            issues,
            noise_matrix=noise_matrix,
            out_dir=tmp,
            steps=steps,
            device=device,
            seed=seed,
            vae_dir=run / "detection",
            progress=progress,
        )
    return make_record(
        "generate",
        run_dir=run_dir,
        run_id=run_id,
        paths=["gan"],
        output_hash=tree_hash(run / "gan"),
        summary=_gan_summary(metrics),
        seconds=time.perf_counter() - start,
    )


def _generate_inputs(run: Path) -> tuple[Any, Any, Any, Any]:
    import numpy as np
    import pandas as pd

    dirty = _load_snapshot(run)
    cleaned = _load_snapshot(run, "cleaned")
    issues = pd.read_parquet(run / "detection" / "issues.parquet")
    noise_matrix = np.load(run / "detection" / "noise_matrix.npy", allow_pickle=False)
    return dirty, cleaned, issues, noise_matrix


def parallel_generate_available() -> bool:
    """Whether ``pipeline.generate`` exposes per-arm training (``train_arm`` & co.)."""
    try:
        generate = importlib.import_module("assay.pipeline.generate")
    except ImportError:
        return False
    return all(
        hasattr(generate, n) for n in ("prepare_comparison", "train_arm", "finish_comparison")
    )


@task(
    name="prepare-gans",
    log_prints=True,
    cache_key_fn=stage_key("generate", part="prepare"),
    **_CACHED,
)
def gan_prepare(
    *,
    data_hash: str,
    issues_hash: str,
    cleaned_hash: str,
    steps: int,
    seed: int,
    device: str,
    run_dir: str,
    run_id: str,
    work_root: str,
    progress: bool = False,
) -> dict[str, Any]:
    """Split off the trusted slice, train the judge, plan the arms -> a work folder.

    The record's summary holds ``arms``, the arms to train.
    """
    start = time.perf_counter()
    generate = stage_module("assay.pipeline.generate")
    run = Path(run_dir)
    dirty, cleaned, issues, noise_matrix = _generate_inputs(run)
    with work_folder(work_root) as (final, tmp):
        plan = generate.prepare_comparison(
            dirty,
            cleaned,
            issues,
            noise_matrix=noise_matrix,
            out_dir=tmp,
            steps=steps,
            device=device,
            seed=seed,
            vae_dir=run / "detection",
            progress=progress,
        )
    return make_work_record(
        "generate",
        part="prepare",
        work=final,
        run_id=run_id,
        summary={"arms": [str(a) for a in plan["arms"]]},
        seconds=time.perf_counter() - start,
    )


@task(name="train-arm", log_prints=True, cache_key_fn=stage_key("generate", part="arm"), **_CACHED)
def gan_arm(
    *,
    arm: str,
    data_hash: str,
    issues_hash: str,
    cleaned_hash: str,
    plan_hash: str,
    steps: int,
    seed: int,
    device: str,
    run_dir: str,
    run_id: str,
    work_root: str,
    work: str,
    progress: bool = False,
) -> dict[str, Any]:
    """Train and score one GAN arm (``work`` is the plan's folder) -> a work folder."""
    start = time.perf_counter()
    generate = stage_module("assay.pipeline.generate")
    run = Path(run_dir)
    dirty = _load_snapshot(run)
    cleaned = _load_snapshot(run, "cleaned")
    from assay.models.device import cpu_thread_limit

    # the arms train side by side: one torch thread each, so they do not spin on each other
    with work_folder(work_root) as (final, tmp), cpu_thread_limit(1):
        metrics = generate.train_arm(
            arm,
            dirty,
            cleaned,
            plan_dir=Path(work),
            out_dir=tmp,
            steps=steps,
            device=device,
            seed=seed,
            progress=progress,
        )
    return make_work_record(
        "generate",
        part=f"arm-{arm}",
        work=final,
        run_id=run_id,
        summary={"arm": arm, "metrics": _small(metrics)},
        seconds=time.perf_counter() - start,
    )


def _gan_summary(metrics: Any) -> dict[str, Any]:
    """Scalar metrics per arm (``{"arms": {arm: {metric: value}}}``) plus scalar extras."""
    if not isinstance(metrics, dict):
        return {}
    arms = metrics.get("arms", {})
    out: dict[str, Any] = {
        "arms": {
            str(arm): {
                str(k): _small(v)
                for k, v in (vals.items() if isinstance(vals, dict) else [])
                if isinstance(_small(v), bool | int | float | str) or v is None
            }
            for arm, vals in (arms.items() if isinstance(arms, dict) else [])
        }
    }
    for k, v in metrics.items():
        if k != "arms" and (v is None or isinstance(_small(v), bool | int | float | str)):
            out[str(k)] = _small(v)
    return out


# --------------------------------------------------------------------------- report
@task(name="render-report", cache_key_fn=stage_key("report"), **_CACHED)
def render(*, inputs: dict[str, str], run_dir: str, run_id: str) -> dict[str, Any]:
    """Render ``run_dir/report.html`` from the run folder.

    ``inputs`` maps each upstream stage to the hash of its output, so the report is
    re-rendered whenever any of them changed.
    """
    start = time.perf_counter()
    render_report = stage_function("assay.pipeline.report", "render_report")
    path = Path(render_report(Path(run_dir)))
    return make_record(
        "report",
        run_dir=run_dir,
        run_id=run_id,
        paths=[path.relative_to(Path(run_dir)).as_posix()],
        output_hash=file_hash(path),
        summary={"bytes": path.stat().st_size},
        seconds=time.perf_counter() - start,
    )


__all__ = [
    "CACHE_FORMAT",
    "STAGE_CODE",
    "adopt_outputs",
    "cache_key",
    "clean_data",
    "code_version",
    "detect_issues",
    "fit_fold",
    "gan_arm",
    "gan_prepare",
    "generate_compare",
    "load_data",
    "make_record",
    "render",
    "snapshot",
    "stage_key",
    "stage_sources",
    "tree_hash",
    "validate_data",
    "work_present",
]
