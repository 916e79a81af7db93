"""The per-sample profile and the dataset-level facts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from assay.pipeline import io
from assay.pipeline.dataset import Dataset
from assay.pipeline.profile import (
    INK_THRESHOLD,
    PROFILE_COLUMNS,
    border_width,
    content_keys,
    dataset_facts,
    profile,
)


def _dataset(images: np.ndarray, labels=None, **kw) -> Dataset:
    images = np.asarray(images, dtype=np.uint8)
    if labels is None:
        labels = np.zeros(len(images), dtype=np.int64)
    return Dataset.create(images, labels, **kw)


def _naive_row(image: np.ndarray) -> dict[str, float]:
    """Reference numbers for one greyscale image, computed the slow, obvious way."""
    x = image.astype(np.float64)
    h, w = x.shape
    b = border_width(h, w)
    ring = np.ones((h, w), dtype=bool)
    ring[b : h - b, b : w - b] = False
    _, counts = np.unique(image, return_counts=True)
    p = counts / image.size
    dx = np.abs(np.diff(x, axis=1))
    dy = np.abs(np.diff(x, axis=0))
    pairs = dx.size + dy.size
    return {
        "pixel_min": image.min(),
        "pixel_max": image.max(),
        "pixel_mean": x.mean(),
        "pixel_std": x.std(),
        "ink_fraction": (image >= INK_THRESHOLD).mean(),
        "border_ink_fraction": (image[ring] >= INK_THRESHOLD).mean(),
        "pixel_entropy": float(-(p * np.log2(p)).sum()),
        "total_variation": (dx.sum() + dy.sum()) / (255 * pairs),
        "flat_fraction": ((dx == 0).sum() + (dy == 0).sum()) / pairs,
    }


# ------------------------------------------------------------------ exact hand-made cases
def test_constant_image_has_no_contrast_entropy_or_edges():
    prof = profile(_dataset(np.full((1, 6, 6), 90)))
    row = prof.iloc[0]
    assert (row.pixel_min, row.pixel_max) == (90, 90)
    assert row.pixel_mean == pytest.approx(90.0)
    assert row.pixel_std == 0.0
    assert row.pixel_entropy == 0.0
    assert row.total_variation == 0.0
    assert row.flat_fraction == 1.0
    assert row.ink_fraction == 0.0 and row.border_ink_fraction == 0.0


def test_checkerboard_has_one_bit_and_maximal_edges():
    board = (np.indices((4, 4)).sum(axis=0) % 2 * 255).astype(np.uint8)
    row = profile(_dataset(board[None])).iloc[0]
    assert row.pixel_mean == pytest.approx(127.5)
    assert row.pixel_std == pytest.approx(127.5)
    assert row.pixel_entropy == pytest.approx(1.0)
    assert row.ink_fraction == pytest.approx(0.5)
    assert row.total_variation == pytest.approx(1.0)
    assert row.flat_fraction == 0.0


def test_border_ink_sees_an_inverted_background():
    image = np.zeros((28, 28), dtype=np.uint8)
    image[10:18, 12:16] = 255  # a stroke in the middle
    prof = profile(_dataset(np.stack([image, 255 - image])))
    assert border_width(28, 28) == 2
    assert prof.border_ink_fraction.tolist() == [0.0, 1.0]
    assert prof.ink_fraction.iloc[0] == pytest.approx(32 / 784)
    assert prof.ink_fraction.iloc[1] == pytest.approx(1 - 32 / 784)


def test_columns_dtypes_and_order_follow_the_schema():
    ds = _dataset(np.zeros((3, 5, 7)), labels=[0, 1, 1], sample_ids=np.array([10, 11, 12]))
    prof = profile(ds)
    assert list(prof.columns) == list(PROFILE_COLUMNS)
    assert {c: str(t) for c, t in prof.dtypes.items()} == PROFILE_COLUMNS
    assert prof.sample_id.tolist() == [10, 11, 12]
    assert prof.label.tolist() == [0, 1, 1]
    assert (prof.height.unique().tolist(), prof.width.unique().tolist()) == ([5], [7])
    assert prof.channels.unique().tolist() == [1]


# ------------------------------------------------------------------ against a naive loop
@pytest.mark.parametrize("shape", [(8, 8), (28, 28), (5, 9), (1, 6)])
def test_vectorised_numbers_match_a_per_image_reference(shape):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(600, *shape)).astype(np.uint8)  # > 2 blocks
    images[::7] //= 40  # some low-contrast images
    images[::11] = 0
    prof = profile(_dataset(images))
    names = list(_naive_row(images[0]))
    for i in range(0, len(images), 37):
        want = _naive_row(images[i])
        for name in names:
            assert prof[name].iloc[i] == pytest.approx(want[name], abs=1e-9), (name, i)


def test_large_images_are_profiled_one_per_block():
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, size=(3, 500, 500)).astype(np.uint8)
    images[1] = images[0]
    prof = profile(_dataset(images))
    for i in range(3):
        want = _naive_row(images[i])
        for name, value in want.items():
            assert prof[name].iloc[i] == pytest.approx(value, abs=1e-9), (name, i)
    assert prof.is_duplicate.tolist() == [False, True, False]


def test_colour_images_are_measured_on_the_channel_mean():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(20, 6, 6, 3)).astype(np.uint8)
    grey = ((rgb.sum(axis=3) + 1) // 3).astype(np.uint8)
    a, b = profile(_dataset(rgb)), profile(_dataset(grey))
    assert a.channels.unique().tolist() == [3]
    pd.testing.assert_series_equal(a.pixel_std, b.pixel_std)
    pd.testing.assert_series_equal(a.pixel_entropy, b.pixel_entropy)
    # the content key is of the colour bytes, not the grey image
    assert not set(a.content_hash) & set(b.content_hash)


# ------------------------------------------------------------------ hashes and duplicates
def test_duplicates_share_a_key_and_only_later_copies_are_flagged():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(6, 8, 8)).astype(np.uint8)
    images[3] = images[0]
    images[5] = images[0]
    images[4] = images[1]
    prof = profile(_dataset(images))
    keys = prof.content_hash.tolist()
    assert keys[0] == keys[3] == keys[5] and keys[1] == keys[4]
    assert len(set(keys)) == 3
    assert all(len(k) == 16 and int(k, 16) >= 0 for k in keys)
    assert prof.is_duplicate.tolist() == [False, False, False, True, True, True]
    assert prof.duplicate_count.tolist() == [3, 2, 1, 3, 2, 3]


def test_content_keys_are_stable_distinct_and_length_aware():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(20000, 28, 28)).astype(np.uint8)
    images[1:200] = images[0] ^ np.eye(28, dtype=np.uint8)[None]  # near copies
    images[1:200, 0, :] = np.arange(199, dtype=np.uint8)[:, None]
    keys = content_keys(images)
    assert keys.dtype == np.uint64
    assert len(np.unique(keys)) == len(images)
    assert np.array_equal(keys, content_keys(images.copy()))
    # one pixel changed -> another key; zero images of other sizes -> other keys
    changed = images[:1].copy()
    changed[0, 27, 27] ^= 1
    assert content_keys(changed)[0] != keys[0]
    assert (
        content_keys(np.zeros((1, 4, 4), np.uint8))[0]
        != content_keys(np.zeros((1, 4, 5), np.uint8))[0]
    )


# ------------------------------------------------------------------ non-finite flags
def test_nan_and_inf_flags_come_from_the_loader_columns():
    ds = _dataset(np.zeros((4, 3, 3)))
    prof = profile(ds)
    assert not prof.has_nan.any() and not prof.has_inf.any()
    marked = ds.with_columns(has_nan=[False, True, False, False], has_inf=[1, 0, 0, 1])
    prof = profile(marked)
    assert prof.has_nan.tolist() == [False, True, False, False]
    assert prof.has_inf.tolist() == [True, False, False, True]


# ------------------------------------------------------------------ dataset facts
def test_dataset_facts_count_classes_missing_classes_and_duplicates():
    images = np.zeros((5, 4, 4), dtype=np.uint8)
    images[:, 0, 0] = [1, 2, 3, 1, 1]  # samples 3 and 4 copy sample 0
    ds = _dataset(images, labels=[0, 0, 2, 2, 2], class_names=["a", "b", "c"])
    facts = dataset_facts(ds, profile(ds))
    assert facts["n_samples"] == 5
    assert facts["class_counts"] == {"a": 2, "b": 0, "c": 3}
    assert facts["class_fractions"] == {"a": 0.4, "b": 0.0, "c": 0.6}
    assert facts["label_set"] == [0, 2]
    assert facts["n_classes_present"] == 2
    assert facts["missing_classes"] == ["b"] and facts["n_missing_classes"] == 1
    assert facts["n_duplicates"] == 2
    assert facts["duplicate_fraction"] == pytest.approx(0.4)
    assert facts["image_shape"] == [4, 4] and facts["channels"] == 1


def test_dataset_facts_tolerate_labels_outside_the_declared_set():
    ds = _dataset(np.zeros((3, 2, 2)), labels=[0, 1, 1], class_names=["a", "b"])
    broken = dataclasses.replace(ds, labels=np.array([0, 1, 7]))
    facts = dataset_facts(broken, profile(broken))
    assert facts["class_counts"] == {"a": 1, "b": 1}
    assert facts["label_set"] == [0, 1, 7]


# ------------------------------------------------------------------ real data
def test_digits_profile_is_plausible():
    digits = io.load("digits")
    prof = profile(digits)
    assert len(prof) == 1797 and not prof.isna().any().any()
    assert prof.pixel_std.min() > 50  # no blank digit
    assert prof.border_ink_fraction.max() < 0.5  # dark background
    assert not prof.is_duplicate.any()


def test_mnist_profile_is_plausible(mnist_path):
    prof = profile(io.load(str(mnist_path)))
    assert len(prof) == 10000
    assert prof.pixel_min.max() == 0 and prof.pixel_max.min() >= 200
    assert prof.border_ink_fraction.max() < 0.1
    assert prof.pixel_entropy.max() < 3.0
    assert prof.flat_fraction.min() > 0.5
