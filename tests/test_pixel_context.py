"""Pixel context model: exact counts on hand-made arrays, noisy strokes found, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from assay.pipeline.detect import pixel_context as pc


def test_every_pixel_is_counted_once_per_channel():
    images = np.zeros((3, 5, 4, 3), dtype=np.uint8)
    counts = pc.count_cells(pc.empty_counts(), images, np.zeros((3, 5, 4, 3), np.float32))
    assert counts.sum() == 3 * 5 * 4 * 3
    assert counts[0, 0] == counts.sum()  # black pixel, black reconstruction, black neighbours


def test_surprise_of_a_uniform_image_is_exact():
    """All pixels of a constant image share one cell and one value: the add-one estimate
    gives that value ``p = (n + 1) / (n + VALUE_BINS)`` and each other ``q = 1 / (n +
    VALUE_BINS)``, so a pixel costs ``-log p`` against the cell's entropy ``H``."""
    images = np.full((2, 4, 4), 255, dtype=np.uint8)
    recon = np.ones((2, 4, 4, 1), np.float32)
    counts = pc.count_cells(pc.empty_counts(), images, recon)
    n = 2 * 16
    p, q = (n + 1) / (n + pc.VALUE_BINS), 1 / (n + pc.VALUE_BINS)
    entropy = -p * np.log(p) - (pc.VALUE_BINS - 1) * q * np.log(q)
    expected = 16 * (-np.log(p) - entropy)
    assert expected < 0  # the most likely value costs less than the cell's average
    np.testing.assert_allclose(pc.context_surprise(counts, images, recon), expected)
    # a value the table never saw in that cell (and the neighbours it changes) costs more
    other = images.copy()
    other[0, 1, 1] = 0
    cost = pc.context_surprise(counts, other, recon)
    assert cost[0] > cost[1] + np.log(n + pc.VALUE_BINS) - 1.0


@pytest.mark.parametrize("family", ["speckle_noise", "shot_noise"])
def test_noise_on_the_strokes_is_surprising(family):
    """3 % of the scikit-learn digits with noise on their strokes (the background stays
    black). The reconstruction is a smoothed clean digit, as a VAE draws the shape it
    knows rather than the noise on it; the noisy pixels are unlike those that share their
    contexts in the rest of the data."""
    from sklearn.datasets import load_digits

    from assay.pipeline.inject.corruptions import corrupt

    clean = np.round(load_digits().images * 255.0 / 16.0).astype(np.uint8)  # (1797, 8, 8)
    recon = ndimage.gaussian_filter(clean / 255.0, (0, 0.7, 0.7))[..., None]
    idx = np.random.default_rng(0).choice(len(clean), 54, replace=False)
    images = clean.copy()
    images[idx] = corrupt(images[idx], family, severity=3, seed=0)
    dirty = np.isin(np.arange(len(images)), idx)
    counts = pc.count_cells(pc.empty_counts(), images, recon)
    assert roc_auc_score(dirty, pc.context_surprise(counts, images, recon)) >= 0.99


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
        pc.context_surprise(counts, images, np.zeros(recon_shape, np.float32))
