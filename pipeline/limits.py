"""Bounds on sizes and options, checked before anything is allocated or trained.

One value in a file (a label of 2**62, an IDX header claiming 2**31 x 65535 x 65535
bytes) or on the command line (``--folds 1e9``) must not make assay allocate exabytes or
train for a year. Every reader and stage entry point checks against these bounds and
refuses with a :class:`~pipeline.errors.DataError` (exit 2) that names the file or option.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING

import numpy as np

from assay.pipeline.errors import DataError

if TYPE_CHECKING:
    from assay.pipeline.dataset import Dataset

#: Most classes a dataset may have (a K x K noise matrix, K GAN conditions, K columns of
#: out-of-fold probabilities). ImageNet-1k fits.
MAX_CLASSES = 1000
#: Largest image side, in pixels.
MAX_IMAGE_SIDE = 4096
#: Most channels of one image.
MAX_CHANNELS = 4
#: Most pixel bytes of one dataset (uint8, all images): 16 GiB.
MAX_DATASET_BYTES = 16 * 2**30
#: Side of the square images ``--image-size`` may ask for (the default suite's size policy).
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 1024
#: Longest side of an image folder's images when ``--image-size`` is not given: the
#: typical size is scaled down to it (aspect kept). The classifier, the VAE and the GAN
#: are laid out for 8 to 64 px a side (``models/``).
DEFAULT_MAX_SIDE = 64
#: Folds of the out-of-fold classifier.
MIN_FOLDS, MAX_FOLDS = 2, 50
#: Training steps of one GAN arm.
MIN_STEPS, MAX_STEPS = 1, 1_000_000
#: Training seeds of one GAN arm.
MAX_SEEDS = 16
#: Fewest samples detection can work with (two per fold of the smallest split).
MIN_DETECTION_SAMPLES = 4


def check_int(name: str, value: object, *, low: int, high: int) -> int:
    """``value`` as an int in ``[low, high]``, else a DataError naming ``name``.

    Examples
    --------
    >>> check_int("folds", 5, low=2, high=50)
    5
    >>> check_int("folds", 0, low=2, high=50)
    Traceback (most recent call last):
    ...
    pipeline.errors.DataError: `folds` must be an integer in [2, 50]. Got 0 instead.
    """
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)
    if not ok or not (low <= int(value) <= high):  # type: ignore[call-overload]
        raise DataError(f"`{name}` must be an integer in [{low}, {high}]. Got {value!r} instead.")
    return int(value)  # type: ignore[call-overload]


def check_n_classes(k: int, *, source: str) -> int:
    """Refuse more than :data:`MAX_CLASSES` classes, before any per-class array is built."""
    if k > MAX_CLASSES:
        raise DataError(
            f"{source}: {k:,} classes (labels up to {k - 1:,}); assay handles at most "
            f"{MAX_CLASSES:,}. Expected class indices 0..K-1 with K <= {MAX_CLASSES:,}; a "
            f"label this large is usually a corrupt value or an id column read as labels."
        )
    return k


def check_image_shape(shape: tuple[int, ...], *, source: str) -> None:
    """Refuse an image shape ``(N, H, W[, C])`` too large to hold, before allocating it.

    The limits are :data:`MAX_IMAGE_SIDE`, :data:`MAX_CHANNELS` and
    :data:`MAX_DATASET_BYTES` (one byte per value).
    """
    if len(shape) < 3:
        return
    sides = shape[1:3]
    channels = shape[3] if len(shape) > 3 else 1
    if max(sides) > MAX_IMAGE_SIDE or channels > MAX_CHANNELS:
        raise DataError(
            f"{source}: images of {' x '.join(str(s) for s in shape[1:])} values; expected "
            f"at most {MAX_IMAGE_SIDE} x {MAX_IMAGE_SIDE} pixels with at most "
            f"{MAX_CHANNELS} channels."
        )
    total = int(np.prod([int(s) for s in shape], dtype=object))
    if total > MAX_DATASET_BYTES:
        raise DataError(
            f"{source}: {' x '.join(str(s) for s in shape)} = {total:,} pixel values, more "
            f"than assay holds in memory (at most {MAX_DATASET_BYTES:,} bytes of uint8 pixels)."
        )


def check_detectable(dataset: Dataset) -> None:
    """Refuse a dataset too small for detection, before any model is trained.

    Detection trains a classifier on out-of-fold splits, so it needs at least
    :data:`MIN_DETECTION_SAMPLES` samples and two classes that each have two samples.
    """
    n = len(dataset)
    counts = dataset.class_counts()
    usable = int((counts >= 2).sum())
    if n < MIN_DETECTION_SAMPLES or usable < 2:
        source = dataset.meta.get("source", "the dataset")
        raise DataError(
            f"{source}: {n} sample{'s' if n != 1 else ''} in {int((counts > 0).sum())} "
            f"class{'es' if (counts > 0).sum() != 1 else ''}; detection needs at least "
            f"{MIN_DETECTION_SAMPLES} samples and two classes with at least two samples each "
            f"(it trains a classifier on out-of-fold splits)."
        )
