"""Shared fixtures: a tiny hand-made dataset, and the real MNIST test set when present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from assay.pipeline.dataset import Dataset
from assay.pipeline.io import default_mnist_path


def make_tiny_dataset(n_per_class: int = 10, *, size: int = 8, seed: int = 0) -> Dataset:
    """Three classes of greyscale ``size x size`` images with one obvious stroke each.

    Class 0 is a horizontal bar, class 1 a vertical bar, class 2 the main diagonal, drawn
    at 200 over a background of uniform noise in 0..40. Returns N = 3 * ``n_per_class``
    samples ordered by class, ids ``0..N-1``.
    """
    rng = np.random.default_rng(seed)
    n = 3 * n_per_class
    images = rng.integers(0, 41, size=(n, size, size), dtype=np.uint8)
    labels = np.repeat(np.arange(3, dtype=np.int64), n_per_class)
    mid = size // 2
    for i, label in enumerate(labels):
        if label == 0:
            images[i, mid, :] = 200
        elif label == 1:
            images[i, :, mid] = 200
        else:
            images[i, np.arange(size), np.arange(size)] = 200
    return Dataset.create(
        images,
        labels,
        ["horizontal", "vertical", "diagonal"],
        meta={"source": "tests.conftest.make_tiny_dataset", "format": "memory"},
        source="tiny_dataset",
    )


@pytest.fixture
def tiny_dataset() -> Dataset:
    """30 greyscale 8x8 images, 3 classes of 10 (see :func:`make_tiny_dataset`)."""
    return make_tiny_dataset()


@pytest.fixture(scope="session")
def mnist_path() -> Path:
    """The real MNIST test-set IDX folder; skips the test when it is absent."""
    path = default_mnist_path()
    images = list(path.glob("t10k-images-idx3-ubyte*")) if path.is_dir() else []
    labels = list(path.glob("t10k-labels-idx1-ubyte*")) if path.is_dir() else []
    if not (images and labels):
        pytest.skip(f"MNIST test set not found at {path} (set ASSAY_MNIST to point at it)")
    return path
