"""Duplicates in pixel space: exact copies by content hash, near copies by aligned distance.

Exact duplicates
----------------

Every image's bytes (shape and dtype are the same for the whole dataset) are hashed with
BLAKE2b (128 bits); equal digests form a group. The first member of a group in dataset
order is the original; every later member is flagged (``is_exact_duplicate_issue``) and
points to it (``exact_duplicate_of``, a ``sample_id``; ``-1`` for originals and unique
images). Labels play no part: copies with different labels are duplicates too (and the
label detector will usually flag one of them).

``exact_duplicate_score`` is 0 for a flagged copy and 1 otherwise.

Near duplicates in pixel space
------------------------------
:func:`pixel_near_duplicates` finds copies that were shifted by a pixel, lightly noised,
blurred, re-encoded (JPEG), resized, brightened or recoloured, which an embedding may or
may not bring close. Images are compared as grey levels, lightly blurred (sigma 1.5 px at
28 px) and standardised per image (mean 0, unit spread), so a change of brightness,
contrast or ink and paper colours leaves a copy where its original is. The distance
between two images is the root-mean-square difference over their overlap, minimised over
shifts of up to ``max_shift`` pixels in each direction ("aligned distance"). Candidate
pairs come from a nearest-neighbour search in a PCA projection, queried with every
shifted version of every image, so a one-pixel shift cannot hide a copy.

A pair is a near duplicate when its aligned distance is below ``ratio`` times the median
nearest-neighbour distance *of its class* (the smaller of the two classes' medians). The
threshold follows each class's own spread: simple shapes (thin "1"s) lie close together
in pixel space, so a rule relative to the whole dataset's spread calls distinct "1"s
copies, while relative to the "1"s' own spread they are ordinary neighbours. Measured on
4,000 MNIST test images with 200 copies appended (seed 0): distinct images lie at 0.46 or
more of their class's median, 1-pixel shifts and recolourings at 0.01 or less, Gaussian
noise (sigma 4) at most 0.14, JPEG (quality 70) at most 0.31 (90 % under 0.15), and
copies resized down to 75 % and back at a median of 0.26 (90 % under 0.51, so about a
quarter of these escape). The default ``ratio`` 0.35 keeps a margin of 0.1 from the
closest distinct pair.

The near-duplicate detector (:mod:`pipeline.detect.datalab`) flags the union of these
pairs and Datalab's near-duplicate sets in the classifier's feature space, the latter
filtered by the same per-class rule in that space.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from assay.pipeline.chunks import NEIGHBOUR_WORKING_MEMORY_MB, chunk_slices
from assay.pipeline.dataset import Dataset
from assay.pipeline.detect.base import DetectorResult, register
from assay.pipeline.detect.oof import image_groups

__all__ = ["detect_exact_duplicate", "first_of_group", "pixel_near_duplicates", "aligned_rms"]

#: Default ratio of the pixel near-duplicate rule (see the module docstring).
PIXEL_RATIO = 0.35
#: Blur (grey-level sigma, in pixels of a 28-pixel image) applied before comparing.
BLUR = 1.5
#: Most images the candidate search's PCA is fitted on; past it, a seeded random subset
#: of this many (the images themselves are then read block by block, never all at once).
PCA_FIT_MAX = 20_000


def first_of_group(groups: np.ndarray) -> np.ndarray:
    """For group ids ``(N,)``, the row index of each row's group's first member ``(N,)``."""
    groups = np.asarray(groups)
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    return first[inverse.reshape(-1)]


@register("exact_duplicate")
def detect_exact_duplicate(dataset: Dataset, context: Any = None, **_: Any) -> DetectorResult:
    """Byte-identical images.

    Parameters
    ----------
    dataset : Dataset
        ``N`` images.
    context : DetectionContext, optional
        Unused (the common detector signature).

    Returns
    -------
    DetectorResult
        ``table``: ``sample_id``, ``is_exact_duplicate_issue`` (bool, True for every copy
        after the first), ``exact_duplicate_score`` (0 for a copy, else 1),
        ``exact_duplicate_of`` (int64 ``sample_id`` of the first copy, ``-1`` if none).
    """
    del context
    first = first_of_group(image_groups(dataset.images))
    rows = np.arange(len(dataset))
    is_copy = first != rows
    of = np.where(is_copy, dataset.sample_ids[first], -1).astype(np.int64)
    table = pd.DataFrame(
        {
            "sample_id": dataset.sample_ids,
            "is_exact_duplicate_issue": is_copy,
            "exact_duplicate_score": np.where(is_copy, 0.0, 1.0),
            "exact_duplicate_of": of,
        }
    )
    n_groups = int(np.unique(first[is_copy]).size)
    summary = (
        f"exact duplicates: {int(is_copy.sum())} copies of {n_groups} images "
        f"(byte-identical pixels)"
    )
    info = {"n_copies": int(is_copy.sum()), "n_groups": n_groups}
    return DetectorResult(name="exact_duplicate", table=table, summary=summary, info=info)


# ----------------------------------------------------------------------------- near, pixels
def _overlap(size: int, shift: int) -> tuple[slice, slice]:
    """Slices of ``a`` and ``b`` that overlap when ``b`` is moved by ``shift`` pixels."""
    return slice(max(shift, 0), size + min(shift, 0)), slice(max(-shift, 0), size + min(-shift, 0))


def aligned_rms(a: np.ndarray, b: np.ndarray, *, max_shift: int = 1) -> np.ndarray:
    """Root-mean-square difference of image pairs, minimised over small shifts.

    Parameters
    ----------
    a, b : ndarray
        ``(M, H, W[, C])`` pairs of images (any numeric dtype), compared row by row.
    max_shift : int, keyword-only
        Largest shift tried in each direction (``(2 * max_shift + 1) ** 2`` shifts).

    Returns
    -------
    ndarray
        float64 ``(M,)``, in the images' units, over the overlapping region.
    """
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    h, w = a.shape[1], a.shape[2]
    axes = tuple(range(1, a.ndim))
    best = np.full(a.shape[0], np.inf)
    for dy in range(-max_shift, max_shift + 1):
        ya, yb = _overlap(h, dy)
        for dx in range(-max_shift, max_shift + 1):
            xa, xb = _overlap(w, dx)
            diff = a[:, ya, xa] - b[:, yb, xb]
            best = np.minimum(best, np.sqrt(np.mean(diff * diff, axis=axes, dtype=np.float64)))
    return best


def _shifted(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(images)
    ya, yb = _overlap(images.shape[1], dy)
    xa, xb = _overlap(images.shape[2], dx)
    out[:, ya, xa] = images[:, yb, xb]
    return out


def _normalised_grey(images: np.ndarray) -> np.ndarray:
    """Each image as grey levels standardised to mean 0 and unit spread, float32
    ``(N, H, W)``: a copy that was brightened, re-contrasted or recoloured (ink and paper
    colours changed, which maps grey levels affinely) lands where its original is."""
    from scipy import ndimage

    x = np.asarray(images, dtype=np.float32)
    g = x.mean(axis=-1) if x.ndim == 4 else x
    # A light blur: resizing and re-encoding mostly change the finest detail.
    sigma = BLUR * min(g.shape[1], g.shape[2]) / 28.0
    g = ndimage.gaussian_filter(g, sigma=(0, sigma, sigma), mode="nearest")
    mean = g.mean(axis=(1, 2), keepdims=True)
    std = g.std(axis=(1, 2), keepdims=True)
    return (g - mean) / np.maximum(std, 1.0)


def class_reference(nearest: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    """Per sample, the median nearest-neighbour distance of its class ``(N,)`` (of the
    whole data when ``labels`` is None); exact twins (distance 0) are left out of the
    median so a class full of copies still has a scale."""
    n = nearest.size
    groups = np.zeros(n, dtype=np.int64) if labels is None else np.asarray(labels)
    ref = np.ones(n)
    finite = np.isfinite(nearest)
    overall = nearest[finite & (nearest > 0)]
    fallback = float(np.median(overall)) if overall.size else 1.0
    for g in np.unique(groups):
        m = groups == g
        v = nearest[m & finite & (nearest > 0)]
        ref[m] = float(np.median(v)) if v.size >= 5 else fallback
    return ref


def pixel_near_duplicates(
    images: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    ratio: float = PIXEL_RATIO,
    max_shift: int = 1,
    n_components: int = 32,
    k: int = 3,
    seed: int = 0,
    chunk: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of images that are copies of each other up to a small shift, mild noise,
    re-encoding, resizing or a change of brightness or colours.

    Images are compared as standardised grey levels (:func:`_normalised_grey`). A pair is
    a near duplicate when its aligned distance is below ``ratio`` times the median
    nearest-neighbour distance of the pair's classes (the smaller of the two): the rule
    follows each class's own spread, so distinct images of a simple class (thin "1"s,
    which lie close together in pixel space) are not called copies of one another.
    Candidates come from a PCA of the standardised images fitted on at most
    :data:`PCA_FIT_MAX` of them.

    Parameters
    ----------
    images : ndarray
        uint8 ``(N, H, W[, C])``; may be memory-mapped (it is read block by block).
    labels : ndarray, optional, keyword-only
        int ``(N,)`` given labels; the classes whose spread sets the threshold (one
        reference for the whole data when omitted).
    ratio : float, keyword-only
        Threshold as a fraction of the class's median nearest-candidate distance.
    max_shift : int, keyword-only
        Largest shift, in pixels, that still counts as a copy.
    n_components : int, keyword-only
        PCA components of the candidate search.
    k : int, keyword-only
        Neighbours per shifted query.
    seed : int, keyword-only
        PCA's random state.
    chunk : int, keyword-only
        Images per block of the candidate search and pairs per block of the distance
        computation (bounds memory: the standardised images are computed block by block,
        never for the whole data at once).

    Returns
    -------
    pairs : ndarray
        int64 ``(M, 2)`` row index pairs ``(i, j)``, ``i < j``, with aligned distance
        under the threshold (exact copies included).
    relative : ndarray
        float64 ``(N,)``: each image's aligned distance to its nearest candidate divided
        by its class's median of those distances (``inf`` without candidates).
    """
    import sklearn

    if not 0.0 < ratio < 1.0:
        raise ValueError(f"`ratio` must be in (0, 1). Got {ratio} instead.")
    n = images.shape[0]
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64), np.full(n, np.inf)
    if labels is not None and np.shape(labels) != (n,):
        raise ValueError(f"`labels` must have shape ({n},). Got {np.shape(labels)} instead.")
    with sklearn.config_context(working_memory=NEIGHBOUR_WORKING_MEMORY_MB):
        pairs = _candidate_pairs(images, n_components=n_components, k=k, seed=seed,
                                 max_shift=max_shift, chunk=chunk)  # fmt: skip
    dist = np.empty(len(pairs))
    for start in range(0, len(pairs), chunk):
        p = pairs[start : start + chunk]
        dist[start : start + chunk] = aligned_rms(
            _normalised_grey(images[p[:, 0]]), _normalised_grey(images[p[:, 1]]),
            max_shift=max_shift,
        )  # fmt: skip
    nearest = np.full(n, np.inf)
    np.minimum.at(nearest, pairs[:, 0], dist)
    np.minimum.at(nearest, pairs[:, 1], dist)
    ref = class_reference(nearest, labels)
    limit = ratio * np.minimum(ref[pairs[:, 0]], ref[pairs[:, 1]])
    relative = nearest / ref
    return pairs[dist < limit].astype(np.int64), relative


def _candidate_pairs(
    images: np.ndarray, *, n_components: int, k: int, seed: int, max_shift: int, chunk: int
) -> np.ndarray:
    """Candidate pairs ``(M, 2)``, ``i < j``, of :func:`pixel_near_duplicates`: each
    image's ``k`` nearest neighbours in a PCA of the standardised images, queried with
    the image shifted by up to ``max_shift`` pixels; ``chunk`` images at a time."""
    from sklearn.decomposition import PCA
    from sklearn.neighbors import NearestNeighbors

    n = images.shape[0]

    def grey(rows: slice | np.ndarray) -> np.ndarray:  # (m, P) standardised, float32
        block = _normalised_grey(images[rows])
        return block.reshape(block.shape[0], -1)

    blocks = list(chunk_slices(n, chunk))
    fit_rows: slice | np.ndarray = slice(0, n)
    if n > PCA_FIT_MAX:
        pick = np.random.default_rng(seed).choice(n, PCA_FIT_MAX, replace=False)
        fit_rows = np.sort(pick)
    fit = grey(fit_rows)
    n_comp = max(1, min(n_components, n - 1, fit.shape[1]))
    pca = PCA(n_components=n_comp, random_state=seed, svd_solver="randomized").fit(fit)
    del fit
    features = np.concatenate([pca.transform(grey(rows)) for rows in blocks])  # (N, d)
    index = NearestNeighbors(n_neighbors=min(k + 1, n)).fit(features)
    shifts = [(dy, dx) for dy in range(-max_shift, max_shift + 1)
              for dx in range(-max_shift, max_shift + 1)]  # fmt: skip
    per_block = []
    for rows in blocks:  # (m, H, W) standardised images, shifted and searched per block
        x = _normalised_grey(images[rows])
        per_block.append(
            np.concatenate(
                [
                    index.kneighbors(
                        pca.transform(_shifted(x, dy, dx).reshape(x.shape[0], -1)),
                        return_distance=False,
                    )
                    for dy, dx in shifts
                ],
                axis=1,
            )
        )
    cand = np.concatenate(per_block)
    rows = np.repeat(np.arange(n), cand.shape[1])
    cols = cand.ravel()
    keep = rows != cols
    return np.unique(np.sort(np.stack([rows[keep], cols[keep]], axis=1), axis=1), axis=0)
