"""The per-image measures of the image-property detector
(:mod:`pipeline.detect.image_properties`), computed with a few whole-array numpy operations
per chunk of images (no Python loop over samples), on the grey level (the channel mean
for colour images) or on each pixel's colour distance from the paper.

:func:`image_property_measures` returns one row of measures per image (brightness,
contrast, entropy, high-frequency energy, sharpness, relative noise, line anisotropy, the
lean of the edges' mid-tones, the placement of the content and the number of levels),
:func:`tone_histograms` each image's coarse grey-level histogram and
:func:`histogram_distance` how far each histogram lies from its nearest others;
:func:`palette_sharing` counts the images that share each image's set of levels. What
each measure means, how it is judged against the data and the figures behind every
constant are in the detector's module docstring.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = [
    "CONTRAST_QUANTILE",
    "GEOMETRY",
    "LINE_PSEUDO",
    "PALETTE_BINS",
    "PALETTE_LEVELS",
    "PALETTE_SINGLES",
    "SPAN_INK",
    "TONE_BINS",
    "TONE_CURVE_PSEUDO",
    "TONE_CURVE_STEP",
    "TONE_NEIGHBOURS",
    "TONE_REFERENCE",
    "TONE_SHARE",
    "checked_images",
    "histogram_distance",
    "image_property_measures",
    "ink_share",
    "measure_images",
    "palette_sharing",
    "tone_histograms",
]

#: Measures of the content's placement, judged within each class by the detector.
GEOMETRY = ("centre_y", "centre_x", "extent", "major_extent", "span")
#: Share of the image's contrast from which a pixel counts towards the content's ``span``.
SPAN_INK = 0.5
#: Quantile of the colour distances from the paper that measures an image's contrast.
CONTRAST_QUANTILE = 0.995
#: Valley mass added to both orientations of ``line_anisotropy``, as a share of the ink.
LINE_PSEUDO = 0.01
#: Bins of the coarse grey-level histogram of ``unusual_histogram`` (16 grey levels each).
TONE_BINS = 16
#: Neighbours whose histograms an image's is compared with: at least this many ...
TONE_NEIGHBOURS = 20
#: ... and at least this share of the images, so that a tone shared by a few dozen
#: images (one corruption applied to a batch of files) is still unusual.
TONE_SHARE = 0.01
#: At most this many images (a seeded random subset) are searched for the neighbours.
TONE_REFERENCE = 20_000
#: Smallest rise in ink across three pixels (a share of the image's contrast) that makes
#: them a ramp for ``tone_curve``.
TONE_CURVE_STEP = 0.1
#: Rise added to the ramps' total in ``tone_curve``, per pixel of the image (47 at 28x28),
#: so that an image with few ramps (a thin "1") leans towards 0 instead of to chance.
TONE_CURVE_PSEUDO = 0.06
#: Bins (plus one) an image's levels are sorted into for ``unusual_levels``: its colour
#: distances from the paper as a share of 255 and as a share of its contrast, rounded to
#: 1/64 (4 grey levels).
PALETTE_BINS = 64
#: An image with at most this many occupied bins (paper and full ink included) ...
PALETTE_LEVELS = 16
#: ... and at most this many levels between them that only one pixel takes uses a reduced
#: set of levels (a lowered bit depth, a palette); a continuous image with few edge
#: pixels has few levels too, but nearly all of them taken once.
PALETTE_SINGLES = 1


def _grey(images: np.ndarray) -> np.ndarray:
    """uint8 ``(N, H, W[, C])`` -> float32 ``(N, H, W)`` grey levels in 0..255."""
    images = np.asarray(images)
    if images.ndim == 4:
        return images.mean(axis=3, dtype=np.float32)
    if images.ndim == 3:
        return images.astype(np.float32)
    raise ValueError(
        f"`images` must have shape (N, H, W) or (N, H, W, C). Got {images.shape} instead."
    )


def checked_images(images: np.ndarray) -> np.ndarray:
    """``images`` as an array, or a ValueError saying what was expected."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"`images` must be uint8 (0..255). Got {images.dtype} instead.")
    if images.ndim not in (3, 4) or images.shape[0] == 0:
        raise ValueError(
            "`images` must be a non-empty array of shape (N, H, W) or (N, H, W, C). "
            f"Got shape {images.shape} instead."
        )
    return images


def image_property_measures(images: np.ndarray, *, chunk: int = 8192) -> pd.DataFrame:
    """Per-image measures used by :func:`score_image_properties`.

    The coarse histograms of ``unusual_histogram`` come from :func:`tone_histograms`.

    Parameters
    ----------
    images : ndarray of uint8, shape (N, H, W) or (N, H, W, C)
    chunk : int, keyword-only
        Images processed per vectorised step (bounds the memory used).

    Returns
    -------
    DataFrame with N rows and float columns
        ``brightness`` (mean grey, 0..255), ``std`` (grey standard deviation),
        ``channel_std`` (the largest of the channels' standard deviations; ``std`` for
        greyscale images),
        ``contrast`` (``log(1 + q)``, ``q`` the :data:`CONTRAST_QUANTILE` quantile of the
        pixels' colour distances from the paper), ``entropy`` (bits, 0..8, of the 256-bin
        grey histogram), ``hf_energy`` (mean absolute 4-neighbour Laplacian, grey levels;
        edges replicated) and ``sharpness`` (``log((hf_energy + 1) / (std + 1))``),
        ``relative_noise`` (``log((sigma + 1) / (std_c + 1))`` with Immerkaer's noise
        estimate ``sigma`` and the standard deviation ``std_c`` of the channel of largest
        standard deviation; 0 for images under 3 px), ``line_anisotropy`` (the log of
        the ratio of the gaps across rows and across columns, see
        :mod:`pipeline.detect.image_properties`; 0 for images under 3 px), ``tone_curve``
        (how far the middle pixel of each ramp of three lies from its neighbours' mean,
        over the ramps' rise: negative when mid-tones lean towards the paper; 0 for
        images under 3 px), the placement measures of :data:`GEOMETRY` (``centre_y``,
        ``centre_x``, ``extent``, ``major_extent``, ``span``: see :func:`_geometry`) and
        ``levels`` and ``single_levels`` (the bins of :data:`PALETTE_BINS` the ink takes
        as a share of the contrast, and those among them between paper and full ink
        that one pixel takes: see :func:`_palettes`).
    """
    return measure_images(checked_images(images), chunk=chunk)[0]


def tone_histograms(images: np.ndarray, *, chunk: int = 8192) -> np.ndarray:
    """Each image's grey-level histogram in :data:`TONE_BINS` bins, float64 ``(N, bins)``,
    rows summing to 1."""
    return measure_images(checked_images(images), chunk=chunk)[1]


def measure_images(
    images: np.ndarray, *, chunk: int
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The measures of :func:`image_property_measures`, the :func:`tone_histograms` and
    the images' palettes (:func:`_palettes`, bool ``(N, 2, PALETTE_BINS + 1)``), in one
    pass over the (possibly memory-mapped) images."""
    if chunk < 1:
        raise ValueError(f"`chunk` must be >= 1. Got {chunk} instead.")
    n = images.shape[0]
    out = {k: np.empty(n, dtype=np.float64)
           for k in ("brightness", "std", "channel_std", "contrast", "entropy", "hf_energy",
                     "relative_noise", "line_anisotropy", "tone_curve", *GEOMETRY,
                     "levels", "single_levels")}  # fmt: skip
    tones = np.empty((n, TONE_BINS), dtype=np.float64)
    palettes = np.empty((n, 2, PALETTE_BINS + 1), dtype=bool)
    for lo in range(0, n, chunk):
        block = np.asarray(images[lo : lo + chunk])  # read once: the images may be mapped
        g = _grey(block)  # (B, H, W)
        b, h, w = g.shape
        flat = g.reshape(b, -1)  # (B, H*W)
        out["brightness"][lo : lo + b] = flat.mean(axis=1)
        out["std"][lo : lo + b] = flat.std(axis=1)
        channels = block.reshape(b, -1, block.shape[3]) if block.ndim == 4 else flat[..., None]
        channel_std = channels.std(axis=1, dtype=np.float64)  # (B, C)
        out["channel_std"][lo : lo + b] = channel_std.max(axis=1)

        levels = np.clip(np.rint(flat), 0, 255).astype(np.int64)  # (B, H*W)
        offsets = (np.arange(b, dtype=np.int64) * 256)[:, None]
        hist = np.bincount((levels + offsets).ravel(), minlength=b * 256).reshape(b, 256)
        p = hist / float(h * w)  # (B, 256)
        with np.errstate(divide="ignore", invalid="ignore"):
            ent = -np.where(p > 0, p * np.log2(p), 0.0).sum(axis=1)
        out["entropy"][lo : lo + b] = ent
        tones[lo : lo + b] = p.reshape(b, TONE_BINS, 256 // TONE_BINS).sum(axis=2)

        pad = np.pad(g, ((0, 0), (1, 1), (1, 1)), mode="edge")  # (B, H+2, W+2)
        lap = (
            4.0 * pad[:, 1:-1, 1:-1]
            - pad[:, :-2, 1:-1]
            - pad[:, 2:, 1:-1]
            - pad[:, 1:-1, :-2]
            - pad[:, 1:-1, 2:]
        )  # (B, H, W)
        out["hf_energy"][lo : lo + b] = np.abs(lap).reshape(b, -1).mean(axis=1)
        out["relative_noise"][lo : lo + b] = _relative_noise(block, channel_std)
        ink, contrast, share = ink_share(block)
        out["contrast"][lo : lo + b] = np.log1p(contrast)
        out["line_anisotropy"][lo : lo + b] = _line_anisotropy(share)
        out["tone_curve"][lo : lo + b] = _tone_curve(share)
        for name, values in zip(GEOMETRY, _geometry(ink, share), strict=True):
            out[name][lo : lo + b] = values
        palettes[lo : lo + b], levels, singles = _palettes(ink, share)
        out["levels"][lo : lo + b] = levels
        out["single_levels"][lo : lo + b] = singles
    out["sharpness"] = np.log((out["hf_energy"] + 1.0) / (out["std"] + 1.0))
    return pd.DataFrame(out), tones, palettes


def _palettes(ink: np.ndarray, share: np.ndarray) -> tuple[np.ndarray, ...]:
    """``(palettes, levels, single_levels)`` per image, from the colour distances of its
    pixels from the paper (:func:`_paper_distance`) and the same as a share of its
    contrast.

    ``palettes[:, 0]`` marks the bins of :data:`PALETTE_BINS` that the distances take as a
    share of 255 (clipped to 1), ``palettes[:, 1]`` those they take as a share of the
    contrast: bool ``(B, 2, PALETTE_BINS + 1)``. ``levels`` is the number of bins the
    contrast-relative palette occupies, ``single_levels`` the number of them, paper and full
    ink left out, that a single pixel takes.
    """
    b, bins = len(ink), PALETTE_BINS + 1
    offsets = (np.arange(b, dtype=np.int64) * bins)[:, None]
    counts = np.empty((2, b, bins), dtype=np.int64)  # pixels per bin, per form and image
    for i, t in enumerate((np.clip(ink / 255.0, 0.0, 1.0), share)):
        q = np.rint(t.reshape(b, -1) * PALETTE_BINS).astype(np.int64)
        counts[i] = np.bincount((q + offsets).ravel(), minlength=b * bins).reshape(b, bins)
    singles = (counts[1, :, 1:-1] == 1).sum(axis=1)
    out = (counts > 0).transpose(1, 0, 2)  # (B, 2, bins)
    return out, out[:, 1].sum(axis=1).astype(np.float64), singles.astype(np.float64)


def palette_sharing(
    palettes: np.ndarray, candidates: np.ndarray, references: np.ndarray, *, chunk: int = 1024
) -> np.ndarray:
    """How many *other* images each candidate's palette is shared with, int64 ``(N,)``
    (-1 for an image that is not a candidate).

    A reference image shares candidate ``i``'s palette when every bin ``i`` occupies lies
    within one bin of a bin the reference occupies: the same levels, give or take a
    rounding. The references are counted in each of the two forms of :func:`_palettes`
    and the larger count is kept. Identical palettes are compared once.

    Parameters
    ----------
    palettes : ndarray of bool, shape (N, 2, PALETTE_BINS + 1)
    candidates, references : ndarray of bool, shape (N,)
        The images whose palettes are counted, and those that can share them.
    chunk : int, keyword-only
        Candidate palettes compared per step (bounds the memory used).
    """
    n = len(palettes)
    shared = np.full(n, -1, dtype=np.int64)
    who = np.flatnonzero(candidates)
    if len(who) == 0:
        return shared
    shared[who] = 0
    if not references.any():
        return shared
    for i in range(palettes.shape[1]):
        p = palettes[:, i]
        refs, ref_count = np.unique(p[references], axis=0, return_counts=True)
        near = refs.copy()
        near[:, 1:] |= refs[:, :-1]
        near[:, :-1] |= refs[:, 1:]
        outside = (~near).astype(np.float32)
        own, inverse = np.unique(p[who], axis=0, return_inverse=True)
        counts = np.empty(len(own), dtype=np.int64)
        for lo in range(0, len(own), chunk):
            missed = own[lo : lo + chunk].astype(np.float32) @ outside.T  # (chunk, refs)
            counts[lo : lo + chunk] = (missed == 0) @ ref_count
        # a candidate that is also a reference does not count itself
        shared[who] = np.maximum(shared[who], counts[inverse.ravel()] - references[who])
    return shared


def _relative_noise(block: np.ndarray, channel_std: np.ndarray) -> np.ndarray:
    """``log((sigma + 1) / (std + 1))`` per image, in its channel of largest standard
    deviation (``channel_std``: ``(B, C)``, each channel's); Immerkaer's (1996) noise
    estimate ``sigma`` (:mod:`pipeline.detect.image_properties`)."""
    x = block if block.ndim == 4 else block[..., None]
    b, h, w, _ = x.shape
    if h < 3 or w < 3:
        return np.zeros(b)
    best = channel_std.argmax(axis=1)  # (B,)
    g = np.take_along_axis(x, best[:, None, None, None], axis=3)[..., 0].astype(np.float32)
    std = channel_std[np.arange(b), best]
    r = (4.0 * g[:, 1:-1, 1:-1]
         - 2.0 * (g[:, :-2, 1:-1] + g[:, 2:, 1:-1] + g[:, 1:-1, :-2] + g[:, 1:-1, 2:])
         + g[:, :-2, :-2] + g[:, :-2, 2:] + g[:, 2:, :-2] + g[:, 2:, 2:])  # fmt: skip
    sigma = np.sqrt(np.pi / 2.0) / 6.0 * np.abs(r).reshape(b, -1).mean(axis=1)
    return np.log((sigma + 1.0) / (std + 1.0))


def _line_anisotropy(t: np.ndarray) -> np.ndarray:
    """``log((rows + e) / (columns + e))`` per image (see
    :mod:`pipeline.detect.image_properties`), from each pixel's colour distance from the
    paper as a share of the image's contrast (its :data:`CONTRAST_QUANTILE` quantile),
    ``(B, H, W)`` in [0, 1]; 0 for images under 3 px."""
    b, h, w = t.shape
    if h < 3 or w < 3:
        return np.zeros(b)
    mass = t.reshape(b, -1).sum(axis=1) + 1.0
    # how much paler than *both* neighbours along the axis a pixel is: a gap in a stroke
    rows = np.clip(np.minimum(t[:, :-2], t[:, 2:]) - t[:, 1:-1], 0.0, None)
    cols = np.clip(np.minimum(t[:, :, :-2], t[:, :, 2:]) - t[:, :, 1:-1], 0.0, None)
    across_rows = rows.reshape(b, -1).sum(axis=1) / mass + LINE_PSEUDO
    across_cols = cols.reshape(b, -1).sum(axis=1) / mass + LINE_PSEUDO
    return np.log(across_rows / across_cols)


def _tone_curve(t: np.ndarray) -> np.ndarray:
    """How the mid-tones of the image's edges lean, per image (see
    :mod:`pipeline.detect.image_properties`), from each pixel's colour distance from the
    paper as a share of the image's contrast, ``(B, H, W)`` in [0, 1]; 0 for images under
    3 px.

    A *ramp* is three pixels in a row or a column whose ink rises (or falls) strictly
    through the middle one, by more than :data:`TONE_CURVE_STEP` of the contrast. The
    measure is the sum over all ramps of ``middle - (first + last) / 2`` over the sum of
    their rises ``|last - first|`` plus :data:`TONE_CURVE_PSEUDO` per pixel.
    """
    b, h, w = t.shape
    if h < 3 or w < 3:
        return np.zeros(b)
    lean, rise = np.zeros(b), np.zeros(b)
    for first, mid, last in ((t[:, :, :-2], t[:, :, 1:-1], t[:, :, 2:]),
                             (t[:, :-2], t[:, 1:-1], t[:, 2:])):  # fmt: skip
        step = np.abs(last - first)
        ramp = (((first < mid) & (mid < last)) | ((first > mid) & (mid > last))) & (
            step > TONE_CURVE_STEP
        )
        lean += np.where(ramp, mid - 0.5 * (first + last), 0.0).reshape(b, -1).sum(axis=1)
        rise += np.where(ramp, step, 0.0).reshape(b, -1).sum(axis=1)
    return lean / (rise + TONE_CURVE_PSEUDO * h * w)


def ink_share(block: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ink, contrast, share)`` of a uint8 block ``(B, H, W[, C])``: each pixel's colour
    distance from the paper (:func:`_paper_distance`, ``(B, H, W)``), the image's contrast
    (its :data:`CONTRAST_QUANTILE` quantile, ``(B,)``) and the ink as a share of that
    contrast, in [0, 1] (1 = full ink whatever the colours)."""
    ink = _paper_distance(block)
    contrast = np.quantile(ink.reshape(len(ink), -1), CONTRAST_QUANTILE, axis=1)
    share = np.clip(ink / np.maximum(contrast, 1.0)[:, None, None], 0.0, 1.0)
    return ink, contrast, share


def _paper_distance(block: np.ndarray) -> np.ndarray:
    """Each pixel's colour distance from the paper (the per-channel median of the image's
    border pixels), float32 ``(B, H, W)``, for a uint8 block ``(B, H, W[, C])``."""
    x = (block if block.ndim == 4 else block[..., None]).astype(np.float32)
    border = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1)
    return np.sqrt(np.square(x - np.median(border, axis=1)[:, None, None, :]).sum(axis=3))


def _geometry(ink: np.ndarray, share: np.ndarray) -> tuple[np.ndarray, ...]:
    """``(centre_y, centre_x, extent, major_extent, span)`` per image, from the colour
    distances of its pixels from the paper (:func:`_paper_distance`) and the same as a
    share of the image's contrast (:mod:`pipeline.detect.image_properties`).

    The content is weighted by that distance; ``centre_*`` is its centroid relative to the
    image centre, in image heights / widths, ``extent`` the log of its radius of gyration
    in those units and ``major_extent`` the log of its radius along its major axis (the
    square root of the largest eigenvalue of the position covariance). An image without
    content (all background) is given the centre and the extents of a uniform weight.
    ``span`` is the longer side, in pixels, of the bounding box of the pixels with at least
    :data:`SPAN_INK` of the image's contrast (0 when there are none).
    """
    solid = share >= SPAN_INK  # (B, H, W)
    span = np.maximum(_run(solid.any(axis=2)), _run(solid.any(axis=1)))
    weight = ink.copy()
    b, h, w = weight.shape
    empty = weight.reshape(b, -1).sum(axis=1) <= 0
    weight[empty] = 1.0
    mass = weight.sum(axis=(1, 2))  # (B,)
    yy = ((np.arange(h) - (h - 1) / 2.0) / h).astype(np.float32)
    xx = ((np.arange(w) - (w - 1) / 2.0) / w).astype(np.float32)
    rows, cols = weight.sum(axis=2), weight.sum(axis=1)  # (B, H), (B, W)
    cy, cx = rows @ yy / mass, cols @ xx / mass
    vy = rows @ (yy * yy) / mass - cy * cy
    vx = cols @ (xx * xx) / mass - cx * cx
    cov = np.einsum("bhw,h,w->b", weight, yy, xx) / mass - cy * cx
    major = 0.5 * (vy + vx) + np.sqrt(0.25 * np.square(vy - vx) + np.square(cov))
    extent = 0.5 * np.log(np.maximum(vy + vx, 1e-8))
    major_extent = 0.5 * np.log(np.maximum(major, 1e-8))
    return tuple(v.astype(np.float64) for v in (cy, cx, extent, major_extent, span))


def _run(inked: np.ndarray) -> np.ndarray:
    """Per row of ``inked`` ``(B, L)`` (bool), the distance from its first to its last True
    position, inclusive; 0 for a row without one."""
    n = inked.shape[1]
    first = inked.argmax(axis=1)
    last = n - 1 - inked[:, ::-1].argmax(axis=1)
    return np.where(inked.any(axis=1), last - first + 1, 0)


def histogram_distance(
    tones: np.ndarray,
    *,
    neighbours: int | None = None,
    reference: int = TONE_REFERENCE,
    seed: int = 0,
) -> np.ndarray:
    """Mean Hellinger distance from each histogram to its ``neighbours`` nearest others.

    Parameters
    ----------
    tones : ndarray, shape (N, B)
        Histograms (rows summing to 1), e.g. :func:`tone_histograms`.
    neighbours : int, optional, keyword-only
        How many nearest histograms are averaged (fewer when there are fewer others);
        default the larger of :data:`TONE_NEIGHBOURS` and :data:`TONE_SHARE` of ``N``.
    reference : int, keyword-only
        The neighbours are searched among at most this many rows, a random subset drawn
        with ``seed``; a row is never its own neighbour.

    Returns
    -------
    ndarray of float64, shape (N,)
        In [0, 1]; all zeros when there are fewer than 3 rows.
    """
    from sklearn.neighbors import NearestNeighbors

    n = len(tones)
    if n < 3:
        return np.zeros(n)
    feats = np.sqrt(np.clip(np.asarray(tones, dtype=np.float64), 0.0, None)) / np.sqrt(2.0)
    pool = np.arange(n)
    if n > reference:
        pool = np.sort(np.random.default_rng(seed).choice(n, size=reference, replace=False))
    if neighbours is None:
        neighbours = max(TONE_NEIGHBOURS, int(np.ceil(TONE_SHARE * n)))
    k = max(1, min(int(neighbours), len(pool) - 1))
    index = NearestNeighbors(n_neighbors=k + 1).fit(feats[pool])
    out = np.empty(n)
    for rows in range(0, n, 8192):
        part = np.arange(rows, min(rows + 8192, n))
        dist, idx = index.kneighbors(feats[part])
        own = pool[idx] == part[:, None]
        # leave the row itself out; a row outside the pool drops its farthest neighbour
        drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
        keep = np.ones_like(own)
        keep[np.arange(len(part)), drop] = False
        out[part] = dist[keep].reshape(len(part), k).mean(axis=1)
    return out
