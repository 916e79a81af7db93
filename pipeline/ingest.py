"""The ingest stage: load a dataset, optionally inject known dirt, snapshot it to the run folder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from assay.pipeline import io
from assay.pipeline.dataset import Dataset
from assay.pipeline.runfolder import RunFolder


def ingest(
    spec: str,
    *,
    inject: Any = None,
    seed: int = 0,
    strict: bool = False,
) -> Dataset:
    """Load ``spec`` and, when ``inject`` names a preset or config, make a dirty copy.

    Nothing is written. Bad input raises :class:`pipeline.errors.DataError` before any
    run folder exists, so a refused dataset leaves nothing behind.
    """
    dataset = io.load(spec, strict=strict)
    if inject:
        from assay.pipeline.inject import inject as do_inject

        dataset = do_inject(dataset, inject, seed=seed)
    return dataset


def snapshot(dataset: Dataset, run: RunFolder) -> dict[str, Any]:
    """Write the dataset into ``run.paths.dataset`` (atomically) and return its summary."""
    start = time.perf_counter()
    io.save(dataset, run.paths.dataset)
    summary = dataset.summary()
    summary["seconds"] = round(time.perf_counter() - start, 3)
    return summary


def load_snapshot(run: RunFolder) -> Dataset:
    """The dataset a run ingested."""
    return io.load(str(Path(run.paths.dataset)))
