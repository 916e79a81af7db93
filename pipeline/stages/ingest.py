"""The ingest stage: load (and inject), then snapshot the dataset into the run folder."""

from __future__ import annotations

import time

from assay.pipeline import io
from assay.pipeline.dataset import Dataset
from assay.pipeline.runfolder import RunFolder
from assay.pipeline.stages.base import IngestParams, IngestSummary


def load_input(params: IngestParams) -> tuple[Dataset, str]:
    """Load ``params.data`` and, when ``params.inject`` is set, make a dirty copy of it.

    Nothing is written: bad input raises :class:`~assay.pipeline.errors.DataError`
    before any run folder exists.

    Returns
    -------
    dataset : Dataset
        The dataset the run works on (after injection).
    raw_hash : str
        Content hash of the data as loaded.
    """
    dataset = io.load(
        params.data,
        strict=params.strict,
        image_size=params.image_size,
        image_fit=params.image_fit,
    )
    raw_hash = dataset.content_hash()
    if params.inject:
        from assay.pipeline.inject import inject

        dataset = inject(dataset, params.inject, seed=params.seed)
    return dataset, raw_hash


def ingest(run: RunFolder, dataset: Dataset, *, raw_hash: str | None = None) -> IngestSummary:
    """Snapshot ``dataset`` into the run folder (canonical format, atomic)."""
    start = time.perf_counter()
    io.save(dataset, run.paths.dataset)
    injected: dict[str, int] = {}
    if "injected" in dataset.columns:
        counts = dataset.columns["injected"].astype(str).value_counts()
        injected = {str(k): int(v) for k, v in counts.items()}
    content = dataset.content_hash()
    return IngestSummary(
        output_hash=content,
        raw_hash=raw_hash or content,
        n=len(dataset),
        n_classes=dataset.n_classes,
        image_shape=[int(s) for s in dataset.images.shape[1:]],
        injected=injected,
        seconds=round(time.perf_counter() - start, 3),
    )
