"""How unlike the data's own small patches an image's least likely patches are: the
measure of the ``odd_patches`` image property (:mod:`pipeline.detect.image_properties`).

Every 3x3 patch of an image's ink (each pixel's colour distance from the paper as a share
of the image's contrast, :func:`pipeline.detect.image_measures.ink_share`, so colours do
not matter) that touches the ink (a pixel of at least :data:`PATCH_INK` of the contrast)
is scored by a Gaussian mixture (:class:`sklearn.mixture.GaussianMixture`,
:data:`PATCH_COMPONENTS` full-covariance components) fitted to patches drawn from the
data itself: stroke edges, cores, ends and crossings, at the data's own blur. An image's
*patch surprise* is the mean negative log-likelihood, in nats, of its
:data:`PATCH_LOWEST` least likely ink patches. A stray mark, a dotted or dropped line,
specks or holes in a stroke make a few patches that the data's patches do not, however
ordinary the rest of the image; the mean over all patches would drown them. The data's
own dirt is a few percent of millions of patches, so the model is fitted on the dirty
data, like the VAE.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from assay.pipeline.detect.image_measures import ink_share

__all__ = ["PATCH_COMPONENTS", "PATCH_FIT", "PATCH_INK", "PATCH_LOWEST", "PATCH_SIDE",
           "lowest_mean", "patch_surprise"]  # fmt: skip

#: Side of the square patches.
PATCH_SIDE = 3
#: A patch touches the ink when one of its pixels has at least this share of the contrast.
PATCH_INK = 0.1
#: Components of the Gaussian mixture.
PATCH_COMPONENTS = 16
#: Ink patches the mixture is fitted to (a seeded random draw from at most
#: :data:`_FIT_IMAGES` images).
PATCH_FIT = 20_000
#: How many of an image's least likely ink patches its surprise is the mean of.
PATCH_LOWEST = 10
_FIT_IMAGES = 3000
#: Most bytes of patches held at once (3,000 MNIST images' patches take 73 MB).
_BLOCK_BYTES = 128 * 2**20


def _ink_patches(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every patch of a uint8 block's ink share, float32 ``(B, P, PATCH_SIDE ** 2)``, and
    whether it touches the ink, bool ``(B, P)``."""
    _, _, share = ink_share(block)
    windows = sliding_window_view(share, (PATCH_SIDE, PATCH_SIDE), axis=(1, 2))
    patches = windows.reshape(len(share), -1, PATCH_SIDE * PATCH_SIDE).astype(np.float32)
    return patches, patches.max(axis=2) >= PATCH_INK


def patch_surprise(images: np.ndarray, *, chunk: int = 2048, seed: int = 0) -> np.ndarray:
    """Each image's patch surprise in nats, float64 ``(N,)`` (module docstring); NaN for an
    image without ink patches, and for every image when the images are smaller than a
    patch or hold too few ink patches to fit the mixture (20 per component).

    Parameters
    ----------
    images : ndarray of uint8, shape (N, H, W) or (N, H, W, C)
        May be memory-mapped: read at most ``chunk`` images at a time (fewer for large
        images, so that one block's patches take at most :data:`_BLOCK_BYTES`).
    chunk : int, keyword-only
        Most images scored at once.
    seed : int, keyword-only
        Seeds the draw of the patches the mixture is fitted to, and the fit.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    n, h, w = images.shape[:3]
    out = np.full(n, np.nan)
    if min(h, w) < PATCH_SIDE:
        return out
    patch_bytes = (h - PATCH_SIDE + 1) * (w - PATCH_SIDE + 1) * PATCH_SIDE**2 * 4
    block = max(1, _BLOCK_BYTES // patch_bytes)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(n, _FIT_IMAGES), replace=False))
    drawn = []
    for lo in range(0, len(rows), block):
        part = rows[lo : lo + block]
        patches, inked = _ink_patches(np.asarray(images[part]))
        pool = patches[inked]
        take = min(len(pool), int(np.ceil(PATCH_FIT * len(part) / len(rows))))
        drawn.append(pool[rng.choice(len(pool), size=take, replace=False)])
    pool = np.concatenate(drawn)
    if len(pool) < 20 * PATCH_COMPONENTS:
        return out
    # reg_covar: a floor on each component's variances (a share of the contrast of about
    # 0.03), so data whose patches are nearly identical does not make a degenerate model.
    # EM converged within 30 to 75 iterations on MNIST; where it has not after 300 the
    # mixture is still a density of the data's patches, which is all the measure needs
    # (it is judged against the data's own spread), so the warning is not passed on.
    mixture = GaussianMixture(PATCH_COMPONENTS, covariance_type="full", reg_covar=1e-3,
                              max_iter=300, random_state=seed)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mixture.fit(pool)
    step = max(1, min(int(chunk), block))
    for lo in range(0, n, step):
        patches, inked = _ink_patches(np.asarray(images[lo : lo + step]))
        loglik = np.zeros(inked.shape)
        if inked.any():
            loglik[inked] = mixture.score_samples(patches[inked])
        out[lo : lo + len(inked)] = lowest_mean(loglik, inked)
    return out


def lowest_mean(loglik: np.ndarray, inked: np.ndarray) -> np.ndarray:
    """Minus the mean of each row's :data:`PATCH_LOWEST` lowest ``loglik`` among its
    ``inked`` entries (all of them when it has fewer), float64 ``(B,)``; NaN for a row
    without any. ``loglik`` float ``(B, P)``, ``inked`` bool ``(B, P)``."""
    masked = np.where(inked, loglik, np.inf)
    lowest = np.sort(masked, axis=1)[:, :PATCH_LOWEST]
    counted = np.minimum(inked.sum(axis=1), PATCH_LOWEST)
    total = np.where(np.isfinite(lowest), lowest, 0.0).sum(axis=1)
    return np.where(counted > 0, -total / np.maximum(counted, 1), np.nan)
