"""The patch model behind the ``odd_patches`` image property."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import pen_strokes, recoloured

from assay.pipeline.detect.patch_model import PATCH_LOWEST, lowest_mean, patch_surprise


def _specked(images: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``images`` with six single-pixel specks of full ink at random places in each of the
    first ``n``."""
    rng = np.random.default_rng(seed)
    out = images.copy()
    for i in range(n):
        out[i, rng.integers(1, out.shape[1] - 1, 6), rng.integers(1, out.shape[2] - 1, 6)] = 255
    return out


def test_images_smaller_than_a_patch_or_without_ink_are_not_scored():
    assert np.isnan(patch_surprise(np.zeros((5, 2, 9), dtype=np.uint8))).all()
    assert np.isnan(patch_surprise(np.full((5, 8, 8), 7, dtype=np.uint8))).all()  # no ink
    images = pen_strokes(60, seed=1)
    images[:3] = 0  # three blank images among strokes
    s = patch_surprise(images)
    assert np.isnan(s[:3]).all() and np.isfinite(s[3:]).all()


def test_surprise_is_seeded_and_the_same_in_any_chunks():
    images = pen_strokes(80, seed=2)
    a = patch_surprise(images, seed=0)
    assert np.array_equal(a, patch_surprise(images, seed=0))
    np.testing.assert_allclose(patch_surprise(images, seed=0, chunk=7), a, rtol=1e-6)
    assert not np.array_equal(a, patch_surprise(images, seed=1))  # another draw, another fit


def test_large_images_are_read_in_bounded_blocks(monkeypatch):
    """With a budget of three images' patches, the fit draws its patches block by block
    and scoring walks the images in blocks too; the specks still stand out."""
    import assay.pipeline.detect.patch_model as patch_model

    images = _specked(pen_strokes(120, seed=3), 4)
    monkeypatch.setattr(patch_model, "_BLOCK_BYTES", 3 * 26 * 26 * 9 * 4)
    s = patch_surprise(images)
    assert np.isfinite(s).all()
    assert (s[:4, None] > s[None, 4:]).mean() >= 0.95  # AUROC


def test_the_surprise_is_minus_the_mean_of_the_least_likely_ink_patches():
    loglik = np.arange(-20.0, 0.0).reshape(1, 20).repeat(3, axis=0)  # -20 .. -1
    inked = np.ones((3, 20), dtype=bool)
    inked[1, :] = False
    inked[1, [4, 9, 19]] = True  # three ink patches: -16, -11, -1
    inked[2, :] = False  # no ink
    got = lowest_mean(loglik, inked)
    assert PATCH_LOWEST == 10
    assert got[0] == pytest.approx(-np.mean(np.arange(-20.0, -10.0)))  # the ten lowest
    assert got[1] == pytest.approx(28.0 / 3.0)
    assert np.isnan(got[2])


def test_a_few_specks_raise_it_recolouring_barely_moves_it():
    """Specks beside a stroke make patches the strokes never make; the ink share of a
    recoloured image is that of the grey one but for rounding."""
    from scipy.stats import spearmanr

    images = pen_strokes(200, seed=3)
    s = patch_surprise(_specked(images, 5))
    assert (s[:5, None] > s[None, 5:]).mean() >= 0.95  # AUROC
    assert np.median(s[:5]) > np.quantile(s[5:], 0.99)
    grey = patch_surprise(images)
    assert spearmanr(grey, patch_surprise(recoloured(images, seed=4))).statistic >= 0.9


@pytest.mark.parametrize(("colour", "by_patches"), [(False, 0.15), (True, 0.5)],
                         ids=["grey", "colour"])  # fmt: skip
def test_dotted_lines_on_strokes_are_odd_patches(colour, by_patches):
    """6 of 400 strokes with a dotted line drawn over them are all flagged, some only by
    their patches (in grey the dots raise the noise measure too, in colour less); no clean
    stroke is an odd-patch image. (Many more alike, 4 % of the images, and the mixture
    gives the dots a component of their own: a batch of one dirt is one of the data's
    looks, as for the histogram property.)"""
    from assay.pipeline.detect.image_properties import score_image_properties
    from assay.pipeline.inject.corruptions import corrupt

    images = pen_strokes(400, seed=5)
    if colour:
        images = recoloured(images, seed=6)
    idx = np.random.default_rng(0).choice(400, 6, replace=False)
    images[idx] = corrupt(images[idx], "dotted_line", severity=3, seed=1)
    table, _ = score_image_properties(images)
    odd = np.isin(np.arange(400), idx)
    kind = table["kind"].to_numpy()
    assert table["flag"].to_numpy()[odd].all()
    assert (kind[odd] == "odd_patches").mean() >= by_patches
    assert not (table["score_odd_patches"].to_numpy()[~odd] < 0.5).any()


def test_odd_patches_on_mnist(mnist_path):
    """Real MNIST: a couple of its own images have dots beside the digit or a hairline
    pen; 45 with a dotted line drawn over them are all found, about half of them only by
    their patches."""
    from assay.pipeline import io
    from assay.pipeline.detect.image_properties import score_image_properties
    from assay.pipeline.inject.corruptions import corrupt

    images = io.load(str(mnist_path)).images
    clean = score_image_properties(images)[0]["score_odd_patches"].to_numpy()
    assert (clean < 0.5).sum() <= 4
    idx = np.random.default_rng(0).choice(len(images), 45, replace=False)
    dirty = images.copy()
    dirty[idx] = corrupt(images[idx], "dotted_line", severity=3, seed=1)
    table = score_image_properties(dirty)[0]
    kind = table["kind"].to_numpy()[idx]
    assert ((kind != "") & (kind != "odd_patches")).mean() <= 0.6  # without the patches
    assert table["flag"].to_numpy()[idx].mean() >= 0.95
