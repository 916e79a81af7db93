"""Pixel context model: exact counts on hand-made arrays, noisy strokes found, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from assay.pipeline.detect import pixel_context as pc


def _strokes(n: int, seed: int) -> np.ndarray:
    """``n`` 16x16 images, each a bright bar of width 3 at a random row or column."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 16, 16), dtype=np.uint8)
    for i in range(n):
        at = rng.integers(2, 12)
        if rng.random() < 0.5:
            images[i, at : at + 3, 2:14] = 255
        else:
            images[i, 2:14, at : at + 3] = 255
    return images


def test_every_pixel_is_counted_once_per_channel():
    images = np.zeros((3, 5, 4, 3), dtype=np.uint8)
    counts = pc.count_cells(pc.empty_counts(), images, np.zeros((3, 5, 4, 3), np.float32))
    assert counts.sum() == 3 * 5 * 4 * 3
    assert counts[0, 0] == counts.sum()  # black pixel, black reconstruction, black neighbours


def test_nll_of_a_uniform_image_is_exact():
    """All pixels of a constant image share one cell and one value: the add-one estimate
    gives each ``(n + 1) / (n + VALUE_BINS)``."""
    images = np.full((2, 4, 4), 255, dtype=np.uint8)
    recon = np.ones((2, 4, 4, 1), np.float32)
    counts = pc.count_cells(pc.empty_counts(), images, recon)
    n = 2 * 16
    expected = -16 * np.log((n + 1) / (n + pc.VALUE_BINS))
    np.testing.assert_allclose(pc.context_nll(counts, images, recon), expected)
    # a pixel value the table never saw in that cell costs log(n + VALUE_BINS)
    other = images.copy()
    other[0, 1, 1] = 0
    cost = pc.context_nll(counts, other, recon)
    assert cost[0] > cost[1] + np.log(n + pc.VALUE_BINS) - np.log((n + 1) / (n + pc.VALUE_BINS))


def test_noise_on_the_strokes_costs_more_than_clean_strokes():
    """Speckle on the bars only (the background stays black): their pixels are unlike the
    smooth strokes the table learned, even with a perfect reconstruction."""
    images = _strokes(400, seed=0)
    rng = np.random.default_rng(1)
    noisy = images[:20].astype(np.float64)
    noisy *= 1.0 + rng.normal(0, 0.35, size=noisy.shape)
    images[:20] = np.clip(noisy, 0, 255).astype(np.uint8)
    dirty = np.zeros(len(images), dtype=bool)
    dirty[:20] = True
    recon = images[..., None].astype(np.float32) / 255.0
    counts = pc.count_cells(pc.empty_counts(), images, recon)
    nll = pc.context_nll(counts, images, recon)
    assert roc_auc_score(dirty, nll) >= 0.99


@pytest.mark.parametrize(
    ("counts", "recon_shape", "match"),
    [
        (pc.empty_counts(), (2, 4, 4, 3), r"`recon` must have the images' shape \(2, 4, 4, 1\)"),
        (np.zeros((3, 3)), (2, 4, 4, 1), r"`counts` must have shape \(256, 32\)"),
    ],
)
def test_bad_input_is_refused(counts, recon_shape, match):
    images = np.zeros((2, 4, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match=match):
        pc.context_nll(counts, images, np.zeros(recon_shape, np.float32))
