"""The in-memory dataset: one small frozen dataclass that every stage passes along.

Shapes
------
images      uint8 ``(N, H, W)`` (greyscale) or ``(N, H, W, C)``; values 0..255
labels      int64 ``(N,)``; values in ``0..K-1``
class_names ``K`` strings
sample_ids  int64 ``(N,)``; unique; stable across every stage
columns     pandas DataFrame with ``N`` rows in the same order as ``images`` holding
            per-sample columns added by stages (``injected``, ``true_label``, …);
            never holds ``sample_id`` or ``label`` (those live in the arrays)
meta        JSON-serialisable dict: source, format, original value range, …
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from assay.pipeline.chunks import chunk_slices
from assay.pipeline.errors import DataError
from assay.pipeline.limits import check_n_classes

RESERVED_COLUMNS = ("sample_id", "label")


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled image dataset. Build with :meth:`create`, which validates."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    sample_ids: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    columns: pd.DataFrame = field(default_factory=pd.DataFrame)

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        images: np.ndarray,
        labels: np.ndarray,
        class_names: list[str] | tuple[str, ...] | None = None,
        *,
        sample_ids: np.ndarray | None = None,
        meta: dict[str, Any] | None = None,
        columns: pd.DataFrame | None = None,
        source: str = "<memory>",
    ) -> Dataset:
        """Validate and normalise arrays into a :class:`Dataset`.

        ``source`` names the file or spec in error messages.
        """
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.ndim not in (3, 4):
            raise DataError(
                f"{source}: images must have shape (N, H, W) or (N, H, W, C). "
                f"Got shape {images.shape} instead."
            )
        if images.dtype != np.uint8:
            raise DataError(
                f"{source}: images must be uint8 (0..255) at this point. Got {images.dtype}."
            )
        n = images.shape[0]
        if n == 0:
            raise DataError(f"{source}: the dataset is empty; expected at least one image.")
        if labels.ndim != 1 or labels.shape[0] != n:
            raise DataError(
                f"{source}: expected one label per image ({n} images), "
                f"got labels of shape {labels.shape}."
            )
        if not np.issubdtype(labels.dtype, np.integer):
            if np.issubdtype(labels.dtype, np.floating) and np.all(
                np.isfinite(labels) & (labels == np.round(labels))
            ):
                labels = labels.astype(np.int64)
            else:
                raise DataError(
                    f"{source}: labels must be integers. Got dtype {labels.dtype}."
                )
        labels = labels.astype(np.int64, copy=False)
        if class_names is None:
            k = check_n_classes(int(labels.max()) + 1 if n else 0, source=source)
            class_names = [str(i) for i in range(k)]
        class_names = tuple(str(c) for c in class_names)
        k = check_n_classes(len(class_names), source=source)
        if labels.min() < 0 or labels.max() >= k:
            bad = labels[(labels < 0) | (labels >= k)]
            raise DataError(
                f"{source}: labels must be in 0..{k - 1} ({k} classes). "
                f"Found {bad.size} out of range, e.g. {int(bad[0])}."
            )
        if len(set(class_names)) != k:
            raise DataError(f"{source}: class names must be unique. Got {list(class_names)}.")
        if sample_ids is None:
            sample_ids = np.arange(n, dtype=np.int64)
        sample_ids = np.asarray(sample_ids)
        if sample_ids.shape != (n,) or not np.issubdtype(sample_ids.dtype, np.integer):
            raise DataError(
                f"{source}: sample ids must be N={n} integers. Got {sample_ids.dtype} "
                f"of shape {sample_ids.shape}."
            )
        sample_ids = sample_ids.astype(np.int64, copy=False)
        if np.unique(sample_ids).size != n:
            raise DataError(f"{source}: sample ids must be unique.")
        if columns is None:
            columns = pd.DataFrame(index=pd.RangeIndex(n))
        else:
            columns = columns.reset_index(drop=True)
            clash = [c for c in RESERVED_COLUMNS if c in columns.columns]
            if clash:
                columns = columns.drop(columns=clash)
            if len(columns) != n:
                raise DataError(
                    f"{source}: per-sample columns have {len(columns)} rows; expected {n}."
                )
        return cls(
            images=images,
            labels=labels,
            class_names=class_names,
            sample_ids=sample_ids,
            meta=dict(meta or {}),
            columns=columns,
        )

    # ------------------------------------------------------------------ properties
    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.images.shape[1:])

    @property
    def channels(self) -> int:
        return 1 if self.images.ndim == 3 else int(self.images.shape[3])

    def class_counts(self) -> np.ndarray:
        """Number of samples per class, shape ``(K,)``."""
        return np.bincount(self.labels, minlength=self.n_classes)

    def content_hash(self) -> str:
        """SHA-256 over shape, pixels, labels, ids and class names (hex, 64 chars)."""
        h = hashlib.sha256()
        h.update(repr((self.images.shape, str(self.images.dtype))).encode())
        for rows in chunk_slices(len(self)):  # block by block: the images may be mapped
            h.update(np.ascontiguousarray(self.images[rows]).data)
        h.update(np.ascontiguousarray(self.labels, dtype="<i8").data)
        h.update(np.ascontiguousarray(self.sample_ids, dtype="<i8").data)
        h.update("\x1f".join(self.class_names).encode())
        return h.hexdigest()

    def manifest(self) -> pd.DataFrame:
        """The per-sample table: ``sample_id``, ``label`` and every extra column."""
        frame = pd.DataFrame({"sample_id": self.sample_ids, "label": self.labels})
        if len(self.columns.columns):
            frame = pd.concat([frame, self.columns.reset_index(drop=True)], axis=1)
        return frame

    # ------------------------------------------------------------------ derivation
    def subset(self, index: np.ndarray) -> Dataset:
        """Rows ``index`` (integer positions or a boolean mask), ids kept."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return replace(
            self,
            images=self.images[index],
            labels=self.labels[index],
            sample_ids=self.sample_ids[index],
            columns=self.columns.iloc[index].reset_index(drop=True),
            meta=dict(self.meta),
        )

    def with_columns(self, **cols: Any) -> Dataset:
        """A copy with per-sample columns added or replaced."""
        columns = self.columns.copy()
        for name, values in cols.items():
            if name in RESERVED_COLUMNS:
                raise ValueError(f"{name!r} is reserved; pass labels/sample_ids instead.")
            columns[name] = np.asarray(values) if not isinstance(values, pd.Series) else (
                values.to_numpy()
            )
        return replace(self, columns=columns)

    def with_labels(self, labels: np.ndarray) -> Dataset:
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != self.labels.shape:
            raise ValueError(f"labels must have shape {self.labels.shape}; got {labels.shape}.")
        return replace(self, labels=labels)

    def with_meta(self, **meta: Any) -> Dataset:
        return replace(self, meta={**self.meta, **meta})

    def summary(self) -> dict[str, Any]:
        """Facts printed by ``assay info`` and stored in ``dataset.json``."""
        counts = self.class_counts()
        return {
            "n": len(self),
            "image_shape": list(self.image_shape),
            "channels": self.channels,
            "n_classes": self.n_classes,
            "class_names": list(self.class_names),
            "class_counts": {c: int(n) for c, n in zip(self.class_names, counts, strict=True)},
            "value_range": [int(self.images.min()), int(self.images.max())],
            "content_hash": self.content_hash(),
        }
