"""Measure every image once: one row of numbers per sample, and a few dataset-level facts.

The per-sample table (:func:`profile`) is what the Great Expectations suites in
``expectations/`` run over. Every number is computed with array operations over a block
of images at a time (no Python loop over images or pixels; colour images are turned grey
block by block too), so 60,000 MNIST-sized images take about half a second of CPU time and
a memory-mapped dataset is never copied whole: memory beyond one block is the per-sample
table.

Columns of the profile (one row per sample, in dataset order)
--------------------------------------------------------------
sample_id            int64    the dataset's stable id
label                int64    the given label, ``0..K-1``
height, width        int64    image size in pixels
channels             int64    1 for greyscale
pixel_min, pixel_max int64    darkest / brightest value, 0..255
pixel_mean           float64  mean value, 0..255
pixel_std            float64  standard deviation of the values, 0 for a constant image
ink_fraction         float64  fraction of pixels at or above 128 ("ink": bright strokes on
                              a dark background, the MNIST convention)
border_ink_fraction  float64  the same fraction over the outer ring of the image (``b``
                              pixels wide, ``b = max(1, round(min(H, W) / 14))``); near 1
                              for an inverted image, whose background is bright
pixel_entropy        float64  Shannon entropy in bits of the image's 256-bin histogram; a
                              digit has few grey levels, heavy noise spreads over many
total_variation      float64  mean absolute difference between horizontally and vertically
                              adjacent pixels, divided by 255 (edge energy), in [0, 1]
flat_fraction        float64  fraction of adjacent pixel pairs with exactly equal values;
                              high for drawn images, near 0 for noise
has_nan, has_inf     bool     the source held NaN / infinite values for this image before
                              conversion to uint8 (taken from the dataset's per-sample
                              columns of that name when a loader provides them, else False)
content_hash         str      16 hex digits, a 64-bit key of the pixel bytes (labels not
                              included): equal images get equal keys
duplicate_count      int64    how many samples share this image's pixels (1 = unique)
is_duplicate         bool     an exact copy of an earlier sample (the first copy is False)

For colour images ``(N, H, W, C)`` every pixel number is measured on the channel mean.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from assay.pipeline.chunks import chunk_slices
from assay.pipeline.dataset import Dataset

#: Grey level at or above which a pixel counts as ink.
INK_THRESHOLD = 128
#: Pixels processed per block (256 MNIST images): big enough to amortise numpy call
#: overhead, small enough that a block's temporaries stay in cache.
BLOCK_PIXELS = 256 * 784

#: Profile columns and their pandas dtypes, in order.
PROFILE_COLUMNS: dict[str, str] = {
    "sample_id": "int64",
    "label": "int64",
    "height": "int64",
    "width": "int64",
    "channels": "int64",
    "pixel_min": "int64",
    "pixel_max": "int64",
    "pixel_mean": "float64",
    "pixel_std": "float64",
    "ink_fraction": "float64",
    "border_ink_fraction": "float64",
    "pixel_entropy": "float64",
    "total_variation": "float64",
    "flat_fraction": "float64",
    "has_nan": "bool",
    "has_inf": "bool",
    "content_hash": "object",
    "duplicate_count": "int64",
    "is_duplicate": "bool",
}

# Per-lane random odd multipliers and offsets of the 64-bit content key (fixed forever:
# changing them changes every key).
_HASH_SEED = 0x5EED_A55A


def border_width(height: int, width: int) -> int:
    """Width in pixels of the outer ring that :func:`profile` calls the border."""
    return max(1, int(round(min(height, width) / 14)))


def _grey(images: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` uint8: the images themselves, or their channel mean for colour."""
    if images.ndim == 3:
        return images
    c = images.shape[3]
    if c == 1:
        return images[..., 0]
    total = images.sum(axis=3, dtype=np.uint16)
    return ((total + c // 2) // c).astype(np.uint8)


def _border_mask(height: int, width: int) -> np.ndarray:
    b = border_width(height, width)
    mask = np.zeros((height, width), dtype=bool)
    mask[:b] = mask[-b:] = True
    mask[:, :b] = mask[:, -b:] = True
    return mask


def _block_stats(x: np.ndarray, border: np.ndarray, xlogx: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image numbers for one block ``x`` of shape ``(n, H, W)``, uint8.

    ``xlogx[c] = c * log2(c)`` for ``c`` in ``0..H*W`` (0 at 0) turns histogram counts
    into entropies without a logarithm per bin.
    """
    n, h, w = x.shape
    p = h * w
    flat = x.reshape(n, p)

    # One 256-bin histogram per image: min, max, mean, std, ink and entropy all follow.
    offsets = np.arange(0, n * 256, 256, dtype=np.intp)[:, None]
    keys = np.add(flat, offsets, dtype=np.intp)
    hist = np.bincount(keys.ravel(), minlength=n * 256).reshape(n, 256)
    present = hist > 0
    levels = np.arange(256, dtype=np.int64)
    total = (hist * levels).sum(axis=1)
    total_sq = (hist * (levels * levels)).sum(axis=1)
    mean = total / p
    var = np.maximum(total_sq / p - mean * mean, 0.0)
    entropy = np.maximum(np.log2(p) - xlogx[hist].sum(axis=1) / p, 0.0)

    # Neighbour differences as uint8 |a - b| (max - min never wraps).
    a, b = x[:, :, 1:], x[:, :, :-1]
    dx = np.maximum(a, b)
    dx -= np.minimum(a, b)
    a, b = x[:, 1:, :], x[:, :-1, :]
    dy = np.maximum(a, b)
    dy -= np.minimum(a, b)
    pairs = dx[0].size + dy[0].size
    if pairs:
        dx, dy = dx.reshape(n, -1), dy.reshape(n, -1)
        tv = (dx.sum(axis=1, dtype=np.uint32) + dy.sum(axis=1, dtype=np.uint32)) / (255.0 * pairs)
        equal = (dx == 0).sum(axis=1, dtype=np.int32) + (dy == 0).sum(axis=1, dtype=np.int32)
        flat_pairs = equal / pairs
    else:  # 1-pixel-wide images have no neighbours
        tv = np.zeros(n)
        flat_pairs = np.ones(n)

    return {
        "pixel_min": present.argmax(axis=1).astype(np.int64),
        "pixel_max": (255 - present[:, ::-1].argmax(axis=1)).astype(np.int64),
        "pixel_mean": mean,
        "pixel_std": np.sqrt(var),
        "ink_fraction": hist[:, INK_THRESHOLD:].sum(axis=1) / p,
        "border_ink_fraction": (x[:, border] >= INK_THRESHOLD).sum(axis=1, dtype=np.int32)
        / int(border.sum()),
        "pixel_entropy": entropy,
        "total_variation": tv,
        "flat_fraction": flat_pairs,
    }


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser, elementwise on uint64 (wrapping arithmetic)."""
    z = z ^ (z >> np.uint64(30))
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def content_keys(images: np.ndarray) -> np.ndarray:
    """A 64-bit key of each image's bytes, vectorised.

    Each image's bytes are zero-padded to whole 64-bit words; every word is mixed with
    its position (SplitMix64) and the mixed words are summed, then mixed again with the
    byte length. Equal images get equal keys; different images collide with probability
    about ``2**-64`` per pair (a checksum for spotting copies, not a cryptographic hash).

    Parameters
    ----------
    images : ndarray, shape (N, ...)
        Any array; each row ``images[i]`` is keyed by its raw bytes.

    Returns
    -------
    ndarray of uint64, shape (N,)
    """
    n = images.shape[0]
    nbytes = int(np.prod(images.shape[1:], dtype=np.int64)) * images.dtype.itemsize
    n_words = -(-nbytes // 8)
    positions = _mix64(np.arange(n_words, dtype=np.uint64) + np.uint64(_HASH_SEED))
    out = np.empty(n, dtype=np.uint64)
    rows = max(1, 4 * BLOCK_PIXELS // max(n_words, 1))
    with np.errstate(over="ignore"):
        for block in chunk_slices(n, rows):  # block by block: the images may be mapped
            raw = np.ascontiguousarray(images[block])
            raw = raw.reshape(raw.shape[0], -1).view(np.uint8)
            if nbytes % 8:
                pad = np.zeros((raw.shape[0], n_words * 8 - nbytes), dtype=np.uint8)
                raw = np.concatenate([raw, pad], axis=1)
            words = raw.view("<u8")
            out[block] = _mix64(words ^ positions).sum(axis=1, dtype=np.uint64)
        out = _mix64(out ^ np.uint64(nbytes))
    return out


def _hex(keys: np.ndarray) -> np.ndarray:
    """uint64 ``(N,)`` -> object array of 16-character lowercase hex strings."""
    be = keys.astype(">u8").view(np.uint8).reshape(-1, 8)
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    chars = np.empty((len(keys), 16), dtype=np.uint8)
    chars[:, 0::2] = digits[be >> 4]
    chars[:, 1::2] = digits[be & 15]
    return chars.view("S16").ravel().astype(str).astype(object)


def _flag_column(dataset: Dataset, name: str) -> np.ndarray:
    if name in dataset.columns.columns:
        return dataset.columns[name].fillna(False).to_numpy(dtype=bool)
    return np.zeros(len(dataset), dtype=bool)


def profile(dataset: Dataset) -> pd.DataFrame:
    """Measure every sample: one row per image, keyed by ``sample_id``.

    Parameters
    ----------
    dataset : Dataset
        ``N`` images, uint8 ``(N, H, W)`` or ``(N, H, W, C)``.

    Returns
    -------
    DataFrame, ``N`` rows in dataset order
        The columns of :data:`PROFILE_COLUMNS` (described in the module docstring), with
        those dtypes.
    """
    images = dataset.images
    n = len(dataset)
    h, w = int(images.shape[1]), int(images.shape[2])
    border = _border_mask(h, w)

    counts_range = np.arange(h * w + 1, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        xlogx = np.where(counts_range > 0, counts_range * np.log2(counts_range), 0.0)
    rows = max(1, BLOCK_PIXELS // (h * w))
    parts: list[dict[str, np.ndarray]] = []
    for block in chunk_slices(n, rows):  # the images may be memory-mapped: read a block
        parts.append(_block_stats(_grey(np.asarray(images[block])), border, xlogx))
    stats = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    keys = content_keys(images)
    codes, uniques = pd.factorize(keys)
    counts = np.bincount(codes, minlength=len(uniques))
    is_dup = pd.Series(codes).duplicated(keep="first").to_numpy()

    frame = pd.DataFrame(
        {
            "sample_id": dataset.sample_ids.astype(np.int64),
            "label": dataset.labels.astype(np.int64),
            "height": np.full(n, h, dtype=np.int64),
            "width": np.full(n, w, dtype=np.int64),
            "channels": np.full(n, dataset.channels, dtype=np.int64),
            **stats,
            "has_nan": _flag_column(dataset, "has_nan"),
            "has_inf": _flag_column(dataset, "has_inf"),
            "content_hash": _hex(keys),
            "duplicate_count": counts[codes].astype(np.int64),
            "is_duplicate": is_dup,
        }
    )
    return frame.astype(PROFILE_COLUMNS)


def dataset_facts(dataset: Dataset, profile: pd.DataFrame) -> dict[str, Any]:
    """Dataset-level facts the dataset-level expectations check.

    Parameters
    ----------
    dataset : Dataset
        The dataset that was profiled (its class names declare the label set).
    profile : DataFrame
        Its :func:`profile` (``N`` rows; ``label`` and ``is_duplicate`` are used).

    Returns
    -------
    dict, JSON-serialisable
        ``n_samples``, ``n_classes`` (declared), ``class_names``, ``class_counts``
        (name -> count, every declared class), ``class_fractions``, ``label_set``
        (sorted labels present), ``n_classes_present``, ``missing_classes`` (declared
        names with no sample), ``n_missing_classes``, ``n_duplicates`` (samples that
        copy an earlier one), ``duplicate_fraction``, ``class_imbalance_ratio`` (the
        largest class count over the smallest non-zero one; 1.0 with fewer than two
        classes present), ``n_skipped_files`` (files the loader skipped as unreadable
        or misplaced, from ``dataset.meta["n_skipped"]``; 0 when none were),
        ``image_shape``, ``channels``.
    """
    raw = pd.to_numeric(profile["label"], errors="coerce").to_numpy(dtype=np.float64)
    labels = raw[np.isfinite(raw) & (raw == np.round(raw))].astype(np.int64)
    k = dataset.n_classes
    in_range = labels[(labels >= 0) & (labels < k)]
    counts = np.bincount(in_range, minlength=k)
    n = len(profile)
    names = list(dataset.class_names)
    n_dup = int(profile["is_duplicate"].sum()) if "is_duplicate" in profile else 0
    present = counts[counts > 0]
    imbalance = float(present.max() / present.min()) if len(present) > 1 else 1.0
    return {
        "n_samples": int(n),
        "n_classes": int(k),
        "class_names": names,
        "class_counts": {c: int(v) for c, v in zip(names, counts, strict=True)},
        "class_fractions": {
            c: (float(v) / n if n else 0.0) for c, v in zip(names, counts, strict=True)
        },
        "label_set": [int(v) for v in np.unique(labels)],
        "n_classes_present": int(np.count_nonzero(counts)),
        "missing_classes": [c for c, v in zip(names, counts, strict=True) if v == 0],
        "n_missing_classes": int(np.count_nonzero(counts == 0)),
        "n_duplicates": n_dup,
        "duplicate_fraction": float(n_dup / n) if n else 0.0,
        "class_imbalance_ratio": imbalance,
        "n_skipped_files": int(dataset.meta.get("n_skipped") or 0),
        "image_shape": list(dataset.image_shape),
        "channels": int(dataset.channels),
    }
