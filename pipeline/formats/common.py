"""What every reader shares: pixel normalisation, label checks and the final build.

Every reader hands its raw arrays to :func:`build_dataset`, so the rules below hold for
every format alike:

- integer images must already lie in 0..255;
- floating-point images must be finite and lie in 0..255; when all values are in [0, 1]
  they are taken as unit-range intensities and scaled by 255 (``meta`` then says
  ``scaled_from_unit_range: true``);
- labels are one integer class index per image, ``0 <= label < K``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from assay.pipeline.dataset import Dataset
from assay.pipeline.errors import DataError
from assay.pipeline.limits import check_image_shape, check_n_classes


class DataWarning(UserWarning):
    """Something in the input was skipped or changed while loading it."""


class PixelRange:
    """What decides a pixel array's conversion to uint8, gathered a block at a time.

    A reader that streams its pixels (an ``.npz`` array larger than memory) passes every
    block to :meth:`add` in a first pass, then converts each block in a second with the
    rule of :meth:`conversion`; :func:`to_uint8` is the same with one block. The rules are the
    module docstring's.

    Parameters
    ----------
    dtype : the raw pixels' dtype (the same for every block).
    source : the file or spec, for error messages.
    """

    def __init__(self, dtype: np.dtype, *, source: str) -> None:
        self.dtype = np.dtype(dtype)
        self.source = source
        self.n_images = 0
        self.n_values = 0
        self.lo: float | int | None = None
        self.hi: float | int | None = None
        self.n_nan = self.n_inf = 0
        self.first_bad: int | None = None  # first image holding a NaN or infinity
        if self.dtype.kind not in "biuf":
            raise DataError(
                f"{source}: pixel values must be numbers (integers in 0..255 or floats in 0..1 "
                f"or 0..255). Found an array of dtype {self.dtype}."
            )

    def add(self, block: np.ndarray) -> None:
        """Take in the next images ``(n, ...)`` of the array."""
        block = np.asarray(block)
        n = block.shape[0] if block.ndim else 0
        if block.size:
            if self.dtype.kind == "f":
                lo, hi = float(np.min(block)), float(np.max(block))
                if not (np.isfinite(lo) and np.isfinite(hi)):
                    self.n_nan += int(np.isnan(block).sum())
                    self.n_inf += int(np.isinf(block).sum())
                    if self.first_bad is None:
                        bad = ~np.isfinite(block.reshape(n, -1)).all(axis=1)
                        self.first_bad = self.n_images + int(np.flatnonzero(bad)[0])
            else:
                lo, hi = int(block.min()), int(block.max())
            self.lo = lo if self.lo is None else min(self.lo, lo)
            self.hi = hi if self.hi is None else max(self.hi, hi)
        self.n_images += n
        self.n_values += block.size

    def conversion(self) -> tuple[float, dict[str, Any]]:
        """``(factor, notes)``: every block becomes ``rint(block * factor)`` as uint8 (see
        :meth:`convert`); ``notes`` say what was done, for ``Dataset.meta``.

        Raises
        ------
        DataError
            Empty input, NaN/inf, or values outside 0..255.
        """
        source, kind = self.source, self.dtype.kind
        if self.n_values == 0:
            raise DataError(
                f"{source}: the dataset is empty; expected at least one image with at least "
                f"one pixel. Found {self.n_images} images without pixels."
            )
        if kind == "u" and self.dtype.itemsize == 1:
            return 1.0, {}
        if kind == "b":
            return 255.0, {"original_dtype": "bool", "scaled_from_bool": True}
        lo, hi = self.lo, self.hi
        if kind in "iu":
            if lo < 0 or hi > 255:
                raise DataError(
                    f"{source}: pixel values must lie in 0..255. Found integer values from "
                    f"{lo} to {hi} (dtype {self.dtype}); rescale the images to 0..255 first."
                )
            return 1.0, {"original_dtype": str(self.dtype), "original_range": [lo, hi]}
        if self.n_nan or self.n_inf:
            raise DataError(
                f"{source}: pixel values must be finite numbers in 0..255 (or 0..1). Found "
                f"{self.n_nan} NaN and {self.n_inf} infinite values, the first in image "
                f"{self.first_bad}."
            )
        if lo < 0 or hi > 255:
            raise DataError(
                f"{source}: pixel values must lie in 0..255 (or 0..1 for floating-point "
                f"images). Found values from {lo:g} to {hi:g} (dtype {self.dtype})."
            )
        notes: dict[str, Any] = {"original_dtype": str(self.dtype), "original_range": [lo, hi]}
        if hi <= 1.0:
            notes["scaled_from_unit_range"] = True
            return 255.0, notes
        return 1.0, notes

    @staticmethod
    def convert(block: np.ndarray, factor: float) -> np.ndarray:
        """One block as uint8 with the ``factor`` of :meth:`conversion`."""
        block = np.asarray(block)
        if block.dtype.kind == "f":
            scaled = block * factor  # a copy in the block's dtype, rounded in place
            return np.rint(scaled, out=scaled).astype(np.uint8)
        out = block.astype(np.uint8)
        return np.multiply(out, np.uint8(factor), out=out) if factor != 1.0 else out


def to_uint8(images: np.ndarray, *, source: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Convert raw pixel values to uint8 0..255, refusing anything that does not fit.

    Parameters
    ----------
    images : ndarray, shape (N, H, W) or (N, H, W, C)
        Raw pixels of any integer, boolean or floating-point dtype.
    source : str
        The file or spec, for error messages.

    Returns
    -------
    images : ndarray of uint8, same shape
    notes : dict
        What was done, for ``Dataset.meta`` (``original_dtype``, ``original_range``,
        ``scaled_from_unit_range``); empty when the input was already uint8.

    Raises
    ------
    DataError
        Empty input, NaN/inf, values outside 0..255, or a non-numeric dtype.
    """
    arr = np.asarray(images)
    if arr.size == 0:
        raise DataError(
            f"{source}: the dataset is empty; expected at least one image with at least one "
            f"pixel. Found an array of shape {arr.shape}."
        )
    if arr.dtype == np.uint8:
        return arr, {}
    pixels = PixelRange(arr.dtype, source=source)
    pixels.add(arr)
    factor, notes = pixels.conversion()
    return pixels.convert(arr, factor), notes


def check_labels(
    labels: np.ndarray,
    n_images: int,
    class_names: list[str] | tuple[str, ...] | None,
    *,
    source: str,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Check one class index per image and settle the class names.

    Parameters
    ----------
    labels : ndarray, shape (N,) or (N, 1)
        Integer class indices (integer-valued floats are accepted), or strings, which
        become class names in sorted order.
    n_images : int
        N, the number of images the labels must match.
    class_names : sequence of str or None
        K names when the format carries them; ``None`` gives ``"0" .. str(max label)``.
    source : str
        The file or spec, for error messages.

    Returns
    -------
    labels : ndarray of int64, shape (N,)
    class_names : tuple of K str
    """
    lab = np.asarray(labels)
    if lab.ndim == 2 and lab.shape[1] == 1:
        lab = lab[:, 0]
    if lab.ndim != 1:
        raise DataError(
            f"{source}: expected one label per image, a 1-D array of {n_images} class "
            f"indices. Found labels of shape {lab.shape}."
        )
    if lab.shape[0] != n_images:
        raise DataError(
            f"{source}: image and label counts differ: {n_images} images but "
            f"{lab.shape[0]} labels. Expected exactly one label per image."
        )
    if lab.dtype.kind in "USO" and lab.shape[0]:
        names = [str(v) for v in lab.tolist()]
        if class_names is None:
            class_names = tuple(sorted(set(names)))
            check_n_classes(len(class_names), source=source)
        index = {name: i for i, name in enumerate(class_names)}
        unknown = sorted(set(names) - set(index))
        if unknown:
            raise DataError(
                f"{source}: labels name classes that are not among the {len(index)} class "
                f"names {list(index)}, e.g. {unknown[:3]}."
            )
        lab = np.fromiter((index[v] for v in names), dtype=np.int64, count=len(names))
    elif lab.dtype.kind == "f":
        finite = np.isfinite(lab)
        whole = finite & (lab == np.round(np.where(finite, lab, 0)))
        if not whole.all():
            row = int(np.flatnonzero(~whole)[0])
            raise DataError(
                f"{source}: labels must be whole-number class indices. Found {float(lab[row]):g} "
                f"for image {row}."
            )
        lab = lab.astype(np.int64)
    elif lab.dtype.kind in "iub":
        lab = lab.astype(np.int64)
    else:
        raise DataError(f"{source}: labels must be integer class indices. Found dtype {lab.dtype}.")
    if lab.size and lab.min() < 0:
        row = int(np.flatnonzero(lab < 0)[0])
        raise DataError(
            f"{source}: labels must be class indices >= 0. Found {int((lab < 0).sum())} "
            f"negative, e.g. {int(lab[row])} for image {row}."
        )
    if class_names is None:
        k = check_n_classes(int(lab.max()) + 1 if lab.size else 0, source=source)
        class_names = tuple(str(i) for i in range(k))
    class_names = tuple(str(c) for c in class_names)
    k = check_n_classes(len(class_names), source=source)
    if lab.size and lab.max() >= k:
        row = int(np.flatnonzero(lab >= k)[0])
        raise DataError(
            f"{source}: labels must be < {k}, the number of classes ({_short(class_names)}). "
            f"Found {int((lab >= k).sum())} out of range, e.g. {int(lab[row])} for image {row}."
        )
    return lab, class_names


def build_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    class_names: list[str] | tuple[str, ...] | None = None,
    *,
    source: str,
    fmt: str,
    meta: dict[str, Any] | None = None,
    sample_ids: np.ndarray | None = None,
    columns: pd.DataFrame | None = None,
) -> Dataset:
    """Normalise raw arrays from a reader and return a validated :class:`Dataset`.

    ``images`` has shape (N, H, W) or (N, H, W, C); ``labels`` shape (N,). ``meta`` gets
    ``source`` and ``format`` plus the notes of :func:`to_uint8`.
    """
    arr = np.asarray(images)
    if arr.ndim not in (3, 4):
        raise DataError(
            f"{source}: expected images of shape (N, H, W) or (N, H, W, C). "
            f"Found an array of shape {arr.shape}."
        )
    if arr.shape[0] == 0:
        raise DataError(f"{source}: the dataset is empty; expected at least one image.")
    check_image_shape(arr.shape, source=source)
    labels, class_names = check_labels(labels, arr.shape[0], class_names, source=source)
    arr, notes = to_uint8(arr, source=source)
    full_meta = {"source": source, "format": fmt, **notes, **(meta or {})}
    return Dataset.create(
        arr,
        labels,
        class_names,
        sample_ids=sample_ids,
        meta=full_meta,
        columns=columns,
        source=source,
    )


def _short(names: tuple[str, ...], limit: int = 12) -> str:
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f", … ({len(names)} in all)"
