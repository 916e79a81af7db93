"""Loading every input format, and the canonical format's save/load round trip."""

from __future__ import annotations

import gzip
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from assay.pipeline import io
from assay.pipeline.dataset import Dataset
from assay.pipeline.errors import DataError
from assay.pipeline.formats.common import to_uint8
from assay.pipeline.io import DataWarning, detect_format, load, save

# ------------------------------------------------------------------ writers for each format


def write_idx(
    folder: Path, images: np.ndarray, labels: np.ndarray, *, prefix: str = "t10k", gz: bool = True
) -> tuple[Path, Path]:
    """Write an IDX images/labels pair the way MNIST is distributed."""
    folder.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    img_bytes = (2051).to_bytes(4, "big") + np.array([n, h, w], ">u4").tobytes()
    img_bytes += images.astype(np.uint8).tobytes()
    lab_bytes = (2049).to_bytes(4, "big") + np.array([n], ">u4").tobytes()
    lab_bytes += labels.astype(np.uint8).tobytes()
    suffix = ".gz" if gz else ""
    img_path = folder / f"{prefix}-images-idx3-ubyte{suffix}"
    lab_path = folder / f"{prefix}-labels-idx1-ubyte{suffix}"
    img_path.write_bytes(gzip.compress(img_bytes) if gz else img_bytes)
    lab_path.write_bytes(gzip.compress(lab_bytes) if gz else lab_bytes)
    return img_path, lab_path


def write_csv(path: Path, images: np.ndarray, labels: np.ndarray, *, header: bool) -> Path:
    """Write ``label, pixel0 … pixelN`` rows."""
    flat = images.reshape(len(images), -1)
    lines = []
    if header:
        lines.append(",".join(["label", *(f"pixel{i}" for i in range(flat.shape[1]))]))
    for label, row in zip(labels, flat, strict=True):
        lines.append(",".join([str(int(label)), *(f"{v:g}" for v in row)]))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_image_folder(
    root: Path, images: np.ndarray, labels: np.ndarray, class_names: list[str], *, ext="png"
) -> Path:
    """Write ``root/<class>/<index>.<ext>`` with Pillow."""
    for i, (img, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / class_names[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i:04d}.{ext}")
    return root


def assert_same(a: Dataset, b: Dataset, *, columns: bool = True) -> None:
    np.testing.assert_array_equal(a.images, b.images)
    assert a.images.shape == b.images.shape and b.images.dtype == np.uint8
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.sample_ids, b.sample_ids)
    assert a.class_names == b.class_names
    if columns:
        pd.testing.assert_frame_equal(
            a.columns.reset_index(drop=True), b.columns.reset_index(drop=True)
        )


@pytest.fixture
def small_arrays() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(12, 5, 5), dtype=np.uint8)
    labels = np.array([0, 1, 2, 3] * 3, dtype=np.int64)
    return images, labels


# ------------------------------------------------------------------ digits


def test_digits_is_sklearn_rescaled_to_0_255():
    from sklearn.datasets import load_digits

    ds = load("digits")
    raw = load_digits().images
    assert ds.images.shape == (1797, 8, 8) and ds.images.dtype == np.uint8
    np.testing.assert_array_equal(ds.images, np.round(raw * 255 / 16).astype(np.uint8))
    assert ds.images.min() == 0 and ds.images.max() == 255
    # 17 grey levels map to 17 distinct values
    assert np.unique(ds.images).size == 17
    assert ds.class_names == tuple(str(i) for i in range(10))
    np.testing.assert_array_equal(ds.labels, load_digits().target)
    np.testing.assert_array_equal(ds.sample_ids, np.arange(1797))
    assert ds.meta["original_range"] == [0, 16]
    assert ds.meta["format"] == "digits"


# ------------------------------------------------------------------ IDX


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, small_arrays, gz):
    images, labels = small_arrays
    write_idx(tmp_path / "idx", images, labels, gz=gz)
    assert detect_format(tmp_path / "idx") == "idx"
    ds = load(str(tmp_path / "idx"))
    np.testing.assert_array_equal(ds.images, images)
    np.testing.assert_array_equal(ds.labels, labels)
    np.testing.assert_array_equal(ds.sample_ids, np.arange(12))
    assert ds.class_names == ("0", "1", "2", "3")
    assert ds.meta["format"] == "idx"
    assert not ds.images.flags.owndata and not ds.images.flags.writeable  # the spool's map


def _write_big(root: Path, layout: str, images: np.ndarray, labels: np.ndarray) -> Path:
    """``images`` and ``labels`` written in one of the layouts that stream."""
    if layout.startswith("idx"):
        write_idx(root / "idx", images, labels, gz=layout == "idx-gz")
        return root / "idx"
    path = root / "big.npz"
    if layout == "npz":
        np.savez(path, images=images, labels=labels)
    elif layout == "npz-compressed-flat":
        np.savez_compressed(path, x=images.reshape(len(images), -1), y=labels)
    elif layout == "npz-keras":
        half = len(images) // 2
        np.savez(path, x_train=images[:half, ..., None], y_train=labels[:half],
                 x_test=images[half:, ..., None], y_test=labels[half:])  # fmt: skip
    return path


@pytest.mark.parametrize("layout", ["idx", "idx-gz", "npz", "npz-compressed-flat", "npz-keras"])
def test_uint8_pixels_are_streamed_not_held(tmp_path, layout):
    """IDX and uint8 .npz pixels go to a spool block by block: the Python heap never holds
    the whole dataset, and what loads equals what was written."""
    import tracemalloc

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20_000, 28, 28), dtype=np.uint8)  # 15.7 MB
    labels = np.arange(20_000) % 10
    path = _write_big(tmp_path, layout, images, labels)
    tracemalloc.start()
    try:
        ds = load(str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not ds.images.flags.owndata and not ds.images.flags.writeable  # the spool's map
    assert peak < images.nbytes / 2, (peak, images.nbytes)
    np.testing.assert_array_equal(ds.images, images)
    np.testing.assert_array_equal(ds.labels, labels)
    saved = load(save(ds, tmp_path / "saved"))
    np.testing.assert_array_equal(saved.images, images)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int16", "bool"])
def test_npz_of_other_dtypes_is_streamed_and_converted(tmp_path, dtype):
    """Other dtypes take two passes over the archive (the range, then the conversion), a
    block at a time: the heap never holds the raw array, nor the converted one."""
    import tracemalloc

    rng = np.random.default_rng(0)
    shape = (10_000, 28, 28)  # 7.8 MB as uint8
    raw = {"float32": lambda: rng.random(shape, dtype=np.float32),
           "float64": lambda: rng.random(shape) * 200.0,
           "int16": lambda: rng.integers(0, 256, shape).astype(np.int16),
           "bool": lambda: rng.random(shape) < 0.5}[dtype]()  # fmt: skip
    np.savez(tmp_path / "f.npz", images=raw, labels=np.arange(len(raw)) % 3)
    tracemalloc.start()
    try:
        ds = load(str(tmp_path / "f.npz"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    expected, notes = to_uint8(raw, source="x")
    assert not ds.images.flags.owndata and peak < expected.nbytes / 2, (peak, expected.nbytes)
    np.testing.assert_array_equal(ds.images, expected)
    assert ds.meta.get("scaled_from_unit_range", False) is (dtype == "float32")
    assert ds.meta["original_dtype"] == dtype and ds.meta.get("original_range") == notes.get(
        "original_range"
    )


def test_npz_keras_train_and_test_share_one_conversion(tmp_path):
    """The range of both arrays decides: unit-range train images next to test images that
    go up to 2 are not scaled by 255; mixed dtypes are read whole and converted alike."""
    train = np.full((4, 6, 6), 0.5, np.float32)
    test = np.full((2, 6, 6), 2.0, np.float32)
    np.savez(tmp_path / "k.npz", x_train=train, y_train=np.arange(4) % 2, x_test=test,
             y_test=np.arange(2))  # fmt: skip
    ds = load(tmp_path / "k.npz")
    assert "scaled_from_unit_range" not in ds.meta and ds.meta["original_range"] == [0.5, 2.0]
    np.testing.assert_array_equal(ds.images[:, 0, 0], [0, 0, 0, 0, 2, 2])  # rint(0.5) == 0
    np.savez(tmp_path / "m.npz", x_train=train, y_train=np.arange(4) % 2,
             x_test=test.astype(np.float64), y_test=np.arange(2))  # fmt: skip
    np.testing.assert_array_equal(load(tmp_path / "m.npz").images, ds.images)


def test_npz_streamed_nan_names_the_file_and_the_image(tmp_path):
    images = np.zeros((3_000, 28, 28), np.float32)  # several blocks; the NaN in a late one
    images[2_345, 3, 4] = np.nan
    np.savez(tmp_path / "nan.npz", images=images, labels=np.zeros(3_000, np.int64))
    with pytest.raises(DataError, match=r"nan\.npz: .*1 NaN and 0 infinite .*image 2345"):
        load(tmp_path / "nan.npz")


def test_npz_with_truncated_image_data_is_refused(tmp_path):
    """A member whose data ends before its header's shape: a DataError naming the file."""
    import io as stdio
    import zipfile

    def npy(arr: np.ndarray) -> bytes:
        buf = stdio.BytesIO()
        np.save(buf, arr)
        return buf.getvalue()

    for dtype in (np.uint8, np.float32):
        data = npy(np.zeros((50, 8, 8), dtype))
        path = tmp_path / f"short-{np.dtype(dtype).name}.npz"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("images.npy", data[: len(data) - 100])
            archive.writestr("labels.npy", npy(np.zeros(50, np.int64)))
        with pytest.raises(DataError, match=f"{path.name}: array 'images' .* ends early"):
            load(str(path))


def test_idx_single_file_spec_loads_its_pair(tmp_path, small_arrays):
    images, labels = small_arrays
    write_idx(tmp_path, images[:4], labels[:4], prefix="train")
    img_path, _ = write_idx(tmp_path, images[4:], labels[4:], prefix="t10k")
    ds = load(img_path)
    np.testing.assert_array_equal(ds.images, images[4:])


def test_idx_train_and_test_pairs_are_concatenated_train_first(tmp_path, small_arrays):
    images, labels = small_arrays
    write_idx(tmp_path, images[8:], labels[8:], prefix="t10k")
    write_idx(tmp_path, images[:8], labels[:8], prefix="train", gz=False)
    ds = load(tmp_path)
    np.testing.assert_array_equal(ds.images, images)
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.columns["split"].tolist() == ["train"] * 8 + ["t10k"] * 4


def test_idx_kaggle_style_names(tmp_path, small_arrays):
    images, labels = small_arrays
    img, lab = write_idx(tmp_path / "a", images, labels, gz=False)
    img.rename(tmp_path / "a" / "train-images.idx3-ubyte")
    lab.rename(tmp_path / "a" / "train-labels.idx1-ubyte")
    np.testing.assert_array_equal(load(tmp_path / "a").images, images)


# ------------------------------------------------------------------ npz


@pytest.mark.parametrize(("image_key", "label_key"), [("images", "labels"), ("x", "y"), ("X", "y")])
def test_npz_key_pairs(tmp_path, small_arrays, image_key, label_key):
    images, labels = small_arrays
    path = tmp_path / "data.npz"
    np.savez(path, **{image_key: images, label_key: labels})
    ds = load(path)
    np.testing.assert_array_equal(ds.images, images)
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.meta["keys"] == {"images": image_key, "labels": label_key}


def test_npz_keras_layout_appends_test_split(tmp_path, small_arrays):
    images, labels = small_arrays
    path = tmp_path / "mnist.npz"
    np.savez_compressed(
        path, x_train=images[:9], y_train=labels[:9], x_test=images[9:], y_test=labels[9:]
    )
    ds = load(path)
    np.testing.assert_array_equal(ds.images, images)
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.meta["splits"] == {"train": 9, "test": 3}
    assert ds.columns["split"].tolist() == ["train"] * 9 + ["test"] * 3


def test_npz_class_names_ids_and_shapes(tmp_path, small_arrays):
    images, labels = small_arrays
    rgb = np.stack([images, 255 - images, images // 2], axis=-1)
    ids = np.arange(12) * 7 + 100
    path = tmp_path / "rgb.npz"
    np.savez(
        path,
        images=rgb,
        labels=labels,
        class_names=np.array(["a", "b", "c", "d", "e"]),
        sample_ids=ids,
    )
    ds = load(path)
    assert ds.images.shape == (12, 5, 5, 3)
    np.testing.assert_array_equal(ds.images, rgb)
    assert ds.class_names == ("a", "b", "c", "d", "e")
    np.testing.assert_array_equal(ds.sample_ids, ids)
    # Flat (N, H*W) images and a trailing channel of 1 both give (N, H, W).
    np.savez(tmp_path / "flat.npz", x=images.reshape(12, 25), y=labels)
    np.testing.assert_array_equal(load(tmp_path / "flat.npz").images, images)
    np.savez(tmp_path / "c1.npz", x=images[..., None], y=labels.reshape(-1, 1))
    ds1 = load(tmp_path / "c1.npz")
    np.testing.assert_array_equal(ds1.images, images)
    np.testing.assert_array_equal(ds1.labels, labels)


def test_npz_string_labels_become_sorted_class_names(tmp_path, small_arrays):
    images, _ = small_arrays
    names = np.array(["dog", "cat", "eel"] * 4)
    np.savez(tmp_path / "s.npz", images=images, labels=names)
    ds = load(tmp_path / "s.npz")
    assert ds.class_names == ("cat", "dog", "eel")
    assert [ds.class_names[i] for i in ds.labels] == names.tolist()


def test_float_unit_range_is_scaled_and_recorded(tmp_path, small_arrays):
    images, labels = small_arrays
    np.savez(tmp_path / "f.npz", images=images.astype(np.float32) / 255.0, labels=labels)
    ds = load(tmp_path / "f.npz")
    np.testing.assert_array_equal(ds.images, images)
    assert ds.meta["scaled_from_unit_range"] is True
    assert ds.meta["original_dtype"] == "float32"
    np.savez(tmp_path / "g.npz", images=images.astype(np.float64), labels=labels)
    ds = load(tmp_path / "g.npz")
    np.testing.assert_array_equal(ds.images, images)
    assert "scaled_from_unit_range" not in ds.meta


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    dtype=st.sampled_from(["uint8", "uint16", "int16", "int32", "int64", "float32", "float64"]),
)
def test_npz_accepts_every_numeric_dtype_in_range(tmp_path_factory, data, dtype):
    n = data.draw(st.integers(1, 6))
    side = data.draw(st.integers(1, 6))
    expected = data.draw(
        st.lists(st.integers(0, 255), min_size=n * side * side, max_size=n * side * side)
    )
    expected = np.asarray(expected, dtype=np.uint8).reshape(n, side, side)
    raw = expected.astype(dtype)
    unit = dtype.startswith("float") and data.draw(st.booleans())
    if unit:
        raw = raw / np.asarray(255, dtype=dtype)
    labels = np.arange(n) % 3
    path = tmp_path_factory.mktemp("npz") / "d.npz"
    np.savez(path, images=raw, labels=labels)
    ds = load(path)
    assert ds.images.dtype == np.uint8 and ds.images.shape == expected.shape
    if dtype.startswith("float") and raw.max() <= 1:
        # Floats all within [0, 1] are unit-range intensities: scaled by 255.
        assert ds.meta["scaled_from_unit_range"] is True
        np.testing.assert_array_equal(ds.images, np.rint(raw * 255.0).astype(np.uint8))
    else:
        assert "scaled_from_unit_range" not in ds.meta
    if unit or not (dtype.startswith("float") and raw.max() <= 1):
        np.testing.assert_array_equal(ds.images, expected)


# ------------------------------------------------------------------ csv


@pytest.mark.parametrize("header", [True, False])
def test_csv_round_trip(tmp_path, small_arrays, header):
    images, labels = small_arrays
    path = write_csv(tmp_path / "d.csv", images, labels, header=header)
    assert detect_format(path) == "csv"
    ds = load(path)
    np.testing.assert_array_equal(ds.images, images)
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.meta["csv_header"] is header


def test_csv_pixels_are_streamed_not_held(tmp_path, monkeypatch):
    """A CSV is parsed a block at a time into the spool, in several blocks (with a range
    decided over all of them): the Python heap's peak does not grow with the number of
    rows, and the images equal those written, also where the file's range is only seen
    in its end."""
    import tracemalloc

    from assay.pipeline.formats import csv_file

    monkeypatch.setattr(csv_file, "BLOCK_BYTES", 1 << 16)  # 64 rows of 257 float32
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6_000, 16, 16), dtype=np.uint8)  # 1.5 MB as uint8
    labels = np.arange(6_000) % 10
    peaks = {}
    for n in (3_000, 6_000):
        path = write_csv(tmp_path / f"big{n}.csv", images[:n], labels[:n], header=True)
        tracemalloc.start()
        try:
            ds = load(str(path))
            _, peaks[n] = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert not ds.images.flags.owndata and not ds.images.flags.writeable  # the spool's map
    # parsed whole, 3,000 more rows would be 3.1 MB of float32 more
    assert peaks[6_000] - peaks[3_000] < images[3_000:].nbytes / 10, peaks
    assert peaks[6_000] < images.nbytes, peaks
    np.testing.assert_array_equal(ds.images, images)
    np.testing.assert_array_equal(ds.labels, labels)
    # floats in 0..1 except in the last rows: 0..255 for the whole file, never rescaled
    flat = images.reshape(6_000, -1).astype(np.float64) / 255.0
    flat[-1, 0] = 2.5
    rows = [",".join([str(int(lab)), *(f"{v:.6f}" for v in row)])
            for lab, row in zip(labels, flat, strict=True)]  # fmt: skip
    (tmp_path / "late.csv").write_text("\n".join(rows) + "\n")
    late = load(str(tmp_path / "late.csv"))
    expect = np.rint(flat.astype(np.float32)).astype(np.uint8).reshape(images.shape)
    np.testing.assert_array_equal(late.images, expect)
    assert "scaled_from_unit_range" not in late.meta
    assert late.meta["original_range"] == [0.0, 2.5]


def test_csv_unit_range_floats_are_scaled(tmp_path, small_arrays):
    images, labels = small_arrays
    path = tmp_path / "f.csv"
    flat = images.reshape(12, -1) / 255.0
    rows = [
        ",".join([str(int(lab)), *(repr(float(v)) for v in row)])
        for lab, row in zip(labels, flat, strict=True)
    ]
    path.write_text("\n".join(rows))
    ds = load(path)
    np.testing.assert_array_equal(ds.images, images)
    assert ds.meta["scaled_from_unit_range"] is True


# ------------------------------------------------------------------ image folder


def test_image_folder_greyscale_round_trip(tmp_path, small_arrays):
    images, labels = small_arrays
    names = ["ant", "bee", "cat", "dog"]
    root = write_image_folder(tmp_path / "imgs", images, labels, names)
    assert detect_format(root) == "image_folder"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = load(root)
    assert ds.class_names == tuple(names)
    assert ds.images.shape == (12, 5, 5)
    # Files are read class by class in sorted order.
    order = np.argsort(labels, kind="stable")
    np.testing.assert_array_equal(ds.images, images[order])
    np.testing.assert_array_equal(ds.labels, labels[order])
    assert ds.columns["path"].tolist()[0] == f"ant/{order[0]:04d}.png"
    assert ds.meta["image_modes"] == {"L": 12}


def test_image_folder_rgb_and_jpeg_and_nested(tmp_path, small_arrays):
    images, labels = small_arrays
    rgb = np.stack([images, images // 2, 255 - images], axis=-1)
    root = write_image_folder(tmp_path / "rgb", rgb[:6], labels[:6] % 2, ["x", "y"])
    nested = root / "y" / "more"
    nested.mkdir()
    Image.fromarray(rgb[6]).save(nested / "extra.png")
    Image.fromarray(rgb[7]).convert("RGBA").save(root / "x" / "alpha.png")
    Image.fromarray(rgb[8]).save(root / "x" / "photo.jpg", quality=95)
    (root / ".DS_Store").write_bytes(b"\x00\x01junk")  # hidden: ignored without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = load(root)
    assert ds.images.shape == (9, 5, 5, 3)
    paths = ds.columns["path"].tolist()
    assert "y/more/extra.png" in paths and "x/alpha.png" in paths
    np.testing.assert_array_equal(ds.images[paths.index("y/more/extra.png")], rgb[6])
    np.testing.assert_array_equal(ds.images[paths.index("x/alpha.png")], rgb[7])
    assert ds.labels[paths.index("x/photo.jpg")] == 0
    assert ds.meta["image_modes"] == {"RGB": 8, "RGBA": 1}


def test_image_folder_skips_non_image_with_a_warning(tmp_path, small_arrays):
    images, labels = small_arrays
    root = write_image_folder(tmp_path / "imgs", images, labels, ["a", "b", "c", "d"])
    (root / "b" / "notes.txt").write_text("not an image")
    (root / "README.md").write_text("about this data")
    with pytest.warns(DataWarning, match=r"skipped 2 file\(s\).*b/notes.txt"):
        ds = load(root)
    assert len(ds) == 12
    assert ds.meta["n_skipped"] == 2
    assert {s["path"] for s in ds.meta["skipped_files"]} == {"README.md", "b/notes.txt"}


# ------------------------------------------------------------------ canonical format


def rich_dataset(tiny: Dataset) -> Dataset:
    n = len(tiny)
    rng = np.random.default_rng(3)
    ds = tiny.subset(rng.permutation(n))
    return ds.with_columns(
        injected=np.where(np.arange(n) % 4 == 0, "label_noise", "clean"),
        true_label=np.arange(n, dtype=np.int64) % 3,
        score=rng.random(n),
        flagged=np.arange(n) % 2 == 0,
    ).with_meta(note="round trip", nested={"a": [1, 2]})


def test_canonical_round_trip_keeps_everything(tmp_path, tiny_dataset):
    ds = rich_dataset(tiny_dataset)
    out = save(ds, tmp_path / "ds")
    assert out == tmp_path / "ds"
    assert sorted(p.name for p in out.iterdir()) == sorted(io.DATASET_FILES)
    assert detect_format(out) == "assay"
    back = load(out)
    assert_same(ds, back)
    assert back.meta == ds.meta
    assert back.content_hash() == ds.content_hash()
    info = json.loads((out / "dataset.json").read_text())
    assert info["content_hash"] == ds.content_hash()
    assert info["schema_version"] == io.SCHEMA_VERSION
    assert info["shape"] == [30, 8, 8] and info["n"] == 30
    assert info["class_names"] == ["horizontal", "vertical", "diagonal"]
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert list(manifest.columns[:2]) == ["sample_id", "label"]
    # No temporary folders left next to it.
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]
    # Loading by one of its files works too; strict re-hashes and agrees.
    assert_same(ds, load(out / "dataset.json", strict=True))


def test_canonical_images_are_mapped_read_only(tmp_path, tiny_dataset):
    out = save(tiny_dataset, tmp_path / "ds")
    ds = load(out)
    assert isinstance(ds.images.base, np.memmap) or isinstance(ds.images, np.memmap)
    assert not ds.images.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        ds.images[0, 0, 0] = 255 - ds.images[0, 0, 0]
    np.testing.assert_array_equal(np.load(out / "images.npy"), tiny_dataset.images)
    # A subset is an ordinary in-memory copy that a stage may change.
    part = ds.subset(np.arange(3))
    part.images[0, 0, 0] = 7
    assert part.images.flags.writeable


def test_canonical_images_npy_is_what_np_save_writes(tmp_path):
    from assay.pipeline.chunks import CHUNK_ROWS

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2 * CHUNK_ROWS + 5, 6, 5), dtype=np.uint8)
    ds = Dataset.create(images, rng.integers(0, 3, len(images)))
    out = save(ds, tmp_path / "ds")
    np.save(tmp_path / "ref.npy", images)
    assert (out / "images.npy").read_bytes() == (tmp_path / "ref.npy").read_bytes()
    # A non-contiguous view is written in C order, and hashes as its contiguous copy.
    flipped = Dataset.create(images[:, ::-1], ds.labels)
    back = load(save(flipped, tmp_path / "flipped"), strict=True)
    np.testing.assert_array_equal(back.images, images[:, ::-1])
    assert back.content_hash() == Dataset.create(images[:, ::-1].copy(), ds.labels).content_hash()


def test_save_replaces_an_existing_dataset_and_reloads_after_overwrite(tmp_path, tiny_dataset):
    out = save(tiny_dataset, tmp_path / "ds")
    first = load(out)
    smaller = tiny_dataset.subset(np.arange(5))
    save(smaller, out)
    assert_same(load(out), smaller)
    # The earlier (memory-mapped) load still reads its own data.
    np.testing.assert_array_equal(first.images, tiny_dataset.images)
    (tmp_path / "empty").mkdir()
    assert_same(load(save(smaller, tmp_path / "empty")), smaller)


def test_failed_save_leaves_the_old_dataset(tmp_path, tiny_dataset, monkeypatch):
    out = save(tiny_dataset, tmp_path / "ds")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", boom)
    with pytest.raises(OSError, match="disk full"):
        save(tiny_dataset.subset(np.arange(3)), out)
    monkeypatch.undo()
    assert_same(load(out), tiny_dataset)
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


@pytest.mark.parametrize("fmt", ["idx", "npz", "csv", "image_folder"])
def test_every_format_survives_save_and_load(tmp_path, small_arrays, fmt):
    images, labels = small_arrays
    if fmt == "idx":
        write_idx(tmp_path / "src", images, labels)
        spec = tmp_path / "src"
    elif fmt == "npz":
        spec = tmp_path / "src.npz"
        np.savez(spec, images=images, labels=labels)
    elif fmt == "csv":
        spec = write_csv(tmp_path / "src.csv", images, labels, header=True)
    else:
        spec = write_image_folder(tmp_path / "src", images, labels, ["a", "b", "c", "d"])
    original = load(spec)
    assert original.meta["format"] == fmt
    back = load(save(original, tmp_path / "canonical"))
    assert_same(original, back)
    assert back.meta == original.meta


@st.composite
def datasets(draw) -> Dataset:
    n = draw(st.integers(1, 24))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    channels = draw(st.sampled_from([None, 1, 3, 4]))
    k = draw(st.integers(1, 7))
    shape = (n, h, w) if channels is None else (n, h, w, channels)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=shape, dtype=np.uint8)
    labels = rng.integers(0, k, size=n)
    ids = rng.choice(np.arange(-1000, 10**6), size=n, replace=False)
    names = [f"class {i}" for i in range(k)]
    ds = Dataset.create(images, labels, names, sample_ids=ids, meta={"seed": seed})
    cols = {}
    for kind in draw(st.sets(st.sampled_from(["int", "float", "bool", "str"]))):
        if kind == "int":
            cols["c_int"] = rng.integers(-5, 5, size=n)
        elif kind == "float":
            values = rng.random(n)
            values[rng.random(n) < 0.2] = np.nan
            cols["c_float"] = values
        elif kind == "bool":
            cols["c_bool"] = rng.random(n) < 0.5
        else:
            cols["c_str"] = np.array([f"s{v}" for v in rng.integers(0, 3, size=n)])
    return ds.with_columns(**cols) if cols else ds


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ds=datasets())
def test_canonical_round_trip_property(tmp_path_factory, ds):
    out = save(ds, tmp_path_factory.mktemp("canon") / "ds")
    back = load(out, strict=True)
    assert_same(ds, back)
    assert back.meta == ds.meta
    assert back.content_hash() == ds.content_hash()


# ------------------------------------------------------------------ spec handling


def test_default_mnist_path(monkeypatch, tmp_path):
    monkeypatch.delenv("ASSAY_MNIST", raising=False)
    repo_root = Path(io.__file__).resolve().parents[1]
    assert io.default_mnist_path() == repo_root.parent / "shared" / "data" / "mnist"
    monkeypatch.setenv("ASSAY_MNIST", str(tmp_path))
    assert io.default_mnist_path() == tmp_path


def test_mnist_spec_follows_env(monkeypatch, tmp_path, small_arrays):
    images, labels = small_arrays
    write_idx(tmp_path, images, labels)
    monkeypatch.setenv("ASSAY_MNIST", str(tmp_path))
    np.testing.assert_array_equal(load("mnist").images, images)


# ------------------------------------------------------------------ the real MNIST test set


MNIST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_test_set(mnist_path):
    ds = load(mnist_path)
    assert len(ds) == 10_000
    assert ds.images.shape == (10_000, 28, 28) and ds.images.dtype == np.uint8
    assert ds.class_names == tuple(str(i) for i in range(10))
    assert ds.labels.min() == 0 and ds.labels.max() == 9
    assert ds.class_counts().tolist() == MNIST_COUNTS
    np.testing.assert_array_equal(ds.sample_ids, np.arange(10_000))
    # The decompressed files' md5s published with the data (header + payload).
    header = (2051).to_bytes(4, "big") + np.array([10_000, 28, 28], ">u4").tobytes()
    assert hashlib.md5(header + ds.images.tobytes()).hexdigest() == (
        "2646ac647ad5339dbf082846283269ea"
    )
    header = (2049).to_bytes(4, "big") + np.array([10_000], ">u4").tobytes()
    assert hashlib.md5(header + ds.labels.astype(np.uint8).tobytes()).hexdigest() == (
        "27ae3e4e09519cfbb04c329615203637"
    )


def test_mnist_canonical_round_trip(mnist_path, tmp_path):
    ds = load(mnist_path)
    back = load(save(ds, tmp_path / "mnist"), strict=True)
    assert_same(ds, back)
    assert back.meta["format"] == "idx"


def test_missing_builtin_mnist_is_a_data_error(monkeypatch, tmp_path):
    monkeypatch.setenv("ASSAY_MNIST", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="ASSAY_MNIST"):
        load("mnist")
