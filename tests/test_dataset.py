import numpy as np
import pandas as pd
import pytest

from assay.pipeline.dataset import Dataset
from assay.pipeline.errors import DataError


def _ds(n=6, k=3, shape=(4, 4)):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    labels = np.arange(n) % k
    return Dataset.create(images, labels, [f"c{i}" for i in range(k)])


def test_create_defaults_ids_and_types():
    ds = _ds()
    assert ds.sample_ids.dtype == np.int64
    assert np.array_equal(ds.sample_ids, np.arange(6))
    assert ds.labels.dtype == np.int64
    assert ds.n_classes == 3 and ds.image_shape == (4, 4) and ds.channels == 1
    assert ds.class_counts().tolist() == [2, 2, 2]


def test_content_hash_changes_with_any_pixel_and_label():
    ds = _ds()
    images = ds.images.copy()
    images[0, 0, 0] ^= 1
    other = Dataset.create(images, ds.labels, ds.class_names)
    assert ds.content_hash() != other.content_hash()
    relabelled = ds.with_labels((ds.labels + 1) % 3)
    assert ds.content_hash() != relabelled.content_hash()
    assert ds.content_hash() == _ds().content_hash()


def test_subset_keeps_ids_and_columns():
    ds = _ds().with_columns(injected=np.array(["clean", "x", "clean", "y", "clean", "z"]))
    sub = ds.subset(np.array([1, 3]))
    assert sub.sample_ids.tolist() == [1, 3]
    assert sub.columns["injected"].tolist() == ["x", "y"]
    manifest = sub.manifest()
    assert list(manifest.columns) == ["sample_id", "label", "injected"]


@pytest.mark.parametrize(
    ("images", "labels", "names", "match"),
    [
        (np.zeros((0, 4, 4), np.uint8), np.zeros(0, np.int64), ["a"], "empty"),
        (np.zeros((2, 4, 4), np.uint8), np.zeros(3, np.int64), ["a"], "one label per image"),
        (np.zeros((2, 4, 4), np.float32), np.zeros(2, np.int64), ["a"], "uint8"),
        (np.zeros((2, 4), np.uint8), np.zeros(2, np.int64), ["a"], r"\(N, H, W\)"),
        (np.zeros((2, 4, 4), np.uint8), np.array([0, 2]), ["a", "b"], r"in 0\.\.1"),
        (np.zeros((2, 4, 4), np.uint8), np.array([0, -1]), ["a", "b"], "out of range"),
        (np.zeros((2, 4, 4), np.uint8), np.array([0.5, 1.0]), ["a", "b"], "integers"),
    ],
)
def test_create_refuses_bad_arrays(images, labels, names, match):
    with pytest.raises(DataError, match=match):
        Dataset.create(images, labels, names, source="bad.npz")


def test_duplicate_ids_refused():
    with pytest.raises(DataError, match="unique"):
        Dataset.create(
            np.zeros((2, 3, 3), np.uint8), np.array([0, 0]), ["a"], sample_ids=np.array([5, 5])
        )


def test_columns_must_align():
    with pytest.raises(DataError, match="3 rows; expected 2"):
        Dataset.create(
            np.zeros((2, 3, 3), np.uint8),
            np.array([0, 0]),
            ["a"],
            columns=pd.DataFrame({"x": [1, 2, 3]}),
        )
