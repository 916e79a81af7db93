"""Every kind of bad input is refused with a DataError naming the file and what was expected."""

from __future__ import annotations

import gzip
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from assay.pipeline.errors import DataError
from assay.pipeline.io import DataWarning, load, save


def write_idx_bytes(
    folder: Path,
    *,
    images: np.ndarray,
    labels: np.ndarray,
    image_magic: int = 2051,
    label_magic: int = 2049,
    image_dims: tuple[int, ...] | None = None,
    gz: bool = True,
) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    dims = image_dims if image_dims is not None else images.shape
    img = image_magic.to_bytes(4, "big") + np.array(dims, ">u4").tobytes()
    img += images.astype(np.uint8).tobytes()
    lab = label_magic.to_bytes(4, "big") + np.array([len(labels)], ">u4").tobytes()
    lab += labels.astype(np.uint8).tobytes()
    suffix = ".gz" if gz else ""
    img_path = folder / f"t10k-images-idx3-ubyte{suffix}"
    lab_path = folder / f"t10k-labels-idx1-ubyte{suffix}"
    img_path.write_bytes(gzip.compress(img) if gz else img)
    lab_path.write_bytes(gzip.compress(lab) if gz else lab)
    return img_path, lab_path


def refused(spec, match: str, *, names: Path | str | None = None, strict: bool = False) -> str:
    """Assert ``load(spec)`` raises a DataError matching ``match`` and naming the file."""
    with pytest.raises(DataError, match=match) as info:
        load(spec, strict=strict)
    message = str(info.value)
    expected_name = Path(names if names is not None else spec).name
    assert expected_name in message, f"{expected_name!r} not named in: {message}"
    assert "\n" not in message
    return message


IMAGES = np.arange(4 * 9, dtype=np.uint8).reshape(4, 3, 3) * 7
LABELS = np.array([0, 1, 2, 1])


# ------------------------------------------------------------------ paths and formats


def test_missing_path(tmp_path):
    message = refused(tmp_path / "nope.npz", "no such file or folder")
    assert "Expected 'digits'" in message


@pytest.mark.parametrize("name", ["data.txt", "pixels.npy", "weights.pkl", "noext"])
def test_unknown_file_format(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"whatever")
    refused(path, "unknown data format")


def test_unknown_folder_format(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "b.png").write_bytes(b"x")
    refused(tmp_path, "unknown data format.*no IDX files, no dataset.json and no class sub-folders")


def test_empty_folder_is_an_empty_dataset(tmp_path):
    refused(tmp_path, "folder is empty")


def test_run_folder_points_at_its_dataset(tmp_path):
    (tmp_path / "dataset").mkdir()
    (tmp_path / "run.json").write_text("{}")
    refused(tmp_path, "run folder")


# ------------------------------------------------------------------ IDX


def test_truncated_gz(tmp_path):
    img_path, _ = write_idx_bytes(tmp_path, images=IMAGES, labels=LABELS)
    img_path.write_bytes(img_path.read_bytes()[:-20])
    refused(tmp_path, "truncated or corrupt", names=img_path)


def test_not_gzip(tmp_path):
    img_path, _ = write_idx_bytes(tmp_path, images=IMAGES, labels=LABELS)
    img_path.write_bytes(gzip.decompress(img_path.read_bytes()))
    refused(tmp_path, "not valid gzip data", names=img_path)


def test_wrong_image_magic(tmp_path):
    img_path, _ = write_idx_bytes(tmp_path, images=IMAGES, labels=LABELS, image_magic=2052)
    refused(tmp_path, r"wrong IDX magic number.*expected 2051.*found 2052", names=img_path)


def test_swapped_idx_files_are_explained(tmp_path):
    img_path, _ = write_idx_bytes(tmp_path, images=IMAGES, labels=LABELS, image_magic=2049)
    refused(tmp_path, "swapped", names=img_path)


def test_wrong_label_magic(tmp_path):
    _, lab_path = write_idx_bytes(tmp_path, images=IMAGES, labels=LABELS, label_magic=1234)
    refused(tmp_path, r"expected 2049.*found 1234", names=lab_path)


@pytest.mark.parametrize("dims", [(5, 3, 3), (3, 3, 3), (4, 3, 4)])
@pytest.mark.parametrize("gz", [True, False])
def test_header_dims_disagree_with_byte_count(tmp_path, dims, gz):
    img_path, _ = write_idx_bytes(tmp_path, images=IMAGES, labels=LABELS, image_dims=dims, gz=gz)
    refused(tmp_path, r"header says .* bytes .* the file holds", names=img_path)


def test_idx_header_cut_short(tmp_path):
    img_path, _ = write_idx_bytes(tmp_path, images=IMAGES, labels=LABELS, gz=False)
    img_path.write_bytes(img_path.read_bytes()[:10])
    refused(tmp_path, "header is truncated", names=img_path)


def test_idx_image_label_count_mismatch(tmp_path):
    img_path, _ = write_idx_bytes(tmp_path, images=IMAGES, labels=LABELS[:3])
    refused(tmp_path, r"image and label counts differ: 4 images .* 3 labels", names=img_path)


def test_idx_without_partner(tmp_path):
    img_path, lab_path = write_idx_bytes(tmp_path, images=IMAGES, labels=LABELS)
    lab_path.unlink()
    refused(tmp_path, "not its partner", names=img_path)


def test_idx_with_no_images(tmp_path):
    write_idx_bytes(tmp_path, images=IMAGES[:0], labels=LABELS[:0])
    refused(tmp_path, "empty", names=tmp_path)


# ------------------------------------------------------------------ npz


def test_npz_needs_pickle(tmp_path):
    path = tmp_path / "obj.npz"
    images = np.empty(2, dtype=object)
    images[0], images[1] = np.zeros((3, 3)), np.zeros((4, 4))
    np.savez(path, images=images, labels=np.array([0, 1]))
    refused(path, "only be loaded with pickle.*never unpickles")


def test_pickle_file_named_npz(tmp_path):
    path = tmp_path / "evil.npz"
    path.write_bytes(pickle.dumps({"images": [1, 2, 3]}))
    refused(path, "pickle")


def test_corrupt_npz(tmp_path):
    path = tmp_path / "cut.npz"
    np.savez(path, images=IMAGES, labels=LABELS)
    path.write_bytes(path.read_bytes()[:60])
    refused(path, "could not be read|not a readable")


def test_npz_without_known_keys(tmp_path):
    path = tmp_path / "keys.npz"
    np.savez(path, pixels=IMAGES, targets=LABELS)
    refused(path, r"'images'/'labels', 'x'/'y' or 'x_train'/'y_train'. Found keys \['pixels'")


def test_npz_count_mismatch(tmp_path):
    path = tmp_path / "n.npz"
    np.savez(path, images=IMAGES, labels=LABELS[:2])
    refused(path, "image and label counts differ")


def test_npz_empty(tmp_path):
    path = tmp_path / "empty.npz"
    np.savez(path, images=IMAGES[:0], labels=LABELS[:0])
    refused(path, "empty")


def test_negative_labels(tmp_path):
    path = tmp_path / "neg.npz"
    np.savez(path, images=IMAGES, labels=np.array([0, -1, 2, 1]))
    refused(path, r"labels must be class indices >= 0.*-1 for image 1")


def test_labels_beyond_class_names(tmp_path):
    path = tmp_path / "k.npz"
    np.savez(path, images=IMAGES, labels=np.array([0, 1, 5, 1]), class_names=np.array(["a", "b"]))
    refused(path, r"labels must be < 2, the number of classes \(a, b\).*5 for image 2")


def test_fractional_labels(tmp_path):
    path = tmp_path / "f.npz"
    np.savez(path, images=IMAGES, labels=np.array([0, 1.5, 2, 1]))
    refused(path, "whole-number class indices")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels(tmp_path, bad):
    path = tmp_path / "nan.npz"
    images = IMAGES.astype(np.float32)
    images[2, 1, 1] = bad
    np.savez(path, images=images, labels=LABELS)
    refused(path, r"finite.*Found \d NaN and \d infinite values, the first in image 2")


@pytest.mark.parametrize(
    ("dtype", "value", "match"),
    [
        ("int16", 300, "integer values from 0 to 300"),
        ("int64", -3, "integer values from -3"),
        ("float64", 255.5, "values from 0 to 255.5"),
        ("float32", -0.25, "values from -0.25"),
    ],
)
def test_out_of_range_pixels(tmp_path, dtype, value, match):
    path = tmp_path / "range.npz"
    images = IMAGES.astype(dtype)
    images[1, 0, 0] = value
    np.savez(path, images=images, labels=LABELS)
    refused(path, r"must lie in 0\.\.255.*" + re.escape(match))


def test_non_square_flat_images(tmp_path):
    path = tmp_path / "flat.npz"
    np.savez(path, images=np.zeros((4, 10)), labels=LABELS)
    refused(path, "not a square number")


# ------------------------------------------------------------------ csv


def write_rows(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n")
    return path


GOOD_ROW = "1," + ",".join(["0"] * 4)  # label + 2x2 pixels


def test_csv_non_numeric_cell(tmp_path):
    path = write_rows(
        tmp_path / "d.csv",
        ["label,p0,p1,p2,p3", GOOD_ROW, "2,0,0,abc,0", GOOD_ROW],
    )
    refused(path, r"line 3, column 4 \(pixel 2\): expected a number, found 'abc'")


def test_csv_empty_cell(tmp_path):
    path = write_rows(tmp_path / "d.csv", [GOOD_ROW, GOOD_ROW, "0,1,,3,4"])
    refused(path, r"line 3, column 3 \(pixel 1\): expected a number, found ''")


@pytest.mark.parametrize("row", ["1,0,0,0", "1,0,0,0,0,0"])
def test_csv_row_of_wrong_length(tmp_path, row):
    path = write_rows(tmp_path / "d.csv", [GOOD_ROW, GOOD_ROW, GOOD_ROW, row, GOOD_ROW])
    refused(path, r"line 4: expected 5 values \(a label and 4 pixels\).*found [46]")


def test_csv_not_square(tmp_path):
    path = write_rows(tmp_path / "d.csv", ["1,0,0,0", "1,0,0,0"])
    refused(path, "not a square number")


def test_csv_pixel_out_of_range(tmp_path):
    path = write_rows(tmp_path / "d.csv", [GOOD_ROW, "0,1,2,256,4"])
    refused(path, r"0\.\.255.*0 to 256")


def test_csv_negative_label(tmp_path):
    path = write_rows(tmp_path / "d.csv", [GOOD_ROW, "-1,1,2,3,4"])
    refused(path, ">= 0")


@pytest.mark.parametrize("content", ["", "\n\n", "label,p0,p1,p2,p3\n"])
def test_csv_empty(tmp_path, content):
    path = tmp_path / "d.csv"
    path.write_text(content)
    refused(path, "empty")


def test_csv_binary_garbage(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"\xff\xfe\x00\x81garbage")
    refused(path, "UTF-8")


# ------------------------------------------------------------------ image folder


def make_folder(root: Path, spec: dict[str, list[np.ndarray]]) -> Path:
    for name, images in spec.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(images):
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root


def test_non_image_file_strict(tmp_path):
    make_folder(tmp_path, {"a": [IMAGES[0]], "b": [IMAGES[1]]})
    (tmp_path / "b" / "labels.txt").write_text("hello")
    refused(tmp_path, "expected only image files.*--strict", names="labels.txt", strict=True)
    with pytest.warns(DataWarning, match="labels.txt"):
        assert len(load(tmp_path)) == 2


def test_fake_png_is_not_an_image(tmp_path):
    make_folder(tmp_path, {"a": [IMAGES[0]], "b": [IMAGES[1]]})
    (tmp_path / "a" / "fake.png").write_text("I am text")
    refused(tmp_path, "not an image Pillow can identify", names="fake.png", strict=True)


def test_truncated_png(tmp_path):
    make_folder(tmp_path, {"a": [IMAGES[0]], "b": [np.zeros((64, 64), np.uint8) + 9]})
    cut = tmp_path / "b" / "0.png"
    cut.write_bytes(cut.read_bytes()[:-30])
    refused(tmp_path, "could not be decoded", names=cut, strict=True)


def test_stray_top_level_file_strict(tmp_path):
    make_folder(tmp_path, {"a": [IMAGES[0]]})
    (tmp_path / "README.md").write_text("about")
    refused(tmp_path, "only class sub-folders", names="README.md", strict=True)


def test_empty_class_folder(tmp_path):
    make_folder(tmp_path, {"a": [IMAGES[0]]})
    (tmp_path / "b").mkdir()
    refused(tmp_path, "class folder 'b' holds no images", names=tmp_path / "b")


def test_class_folder_with_only_non_images(tmp_path):
    make_folder(tmp_path, {"a": [IMAGES[0]]})
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("x")
    refused(tmp_path, r"holds no images \(1 file\(s\) there", names=tmp_path / "b")


def test_float_image_out_of_range(tmp_path):
    make_folder(tmp_path, {"a": [IMAGES[0]]})
    Image.fromarray(np.full((3, 3), 1000, np.float32)).save(tmp_path / "a" / "deep.tif")
    refused(tmp_path, r"0\.\.255.*1000", names="deep.tif")


# ------------------------------------------------------------------ assay dataset folder


def test_incomplete_assay_folder(tmp_path, tiny_dataset):
    out = save(tiny_dataset, tmp_path / "ds")
    (out / "manifest.parquet").unlink()
    refused(out, "incomplete assay dataset folder: manifest.parquet missing")


def test_tampered_assay_folder(tmp_path, tiny_dataset):
    out = save(tiny_dataset, tmp_path / "ds")
    images = np.load(out / "images.npy")
    images[0, 0, 0] ^= 0xFF
    np.save(out / "images.npy", images)
    assert len(load(out)) == 30  # only the strict load re-hashes
    refused(out, "content hash mismatch", strict=True)


def test_assay_folder_shape_disagrees(tmp_path, tiny_dataset):
    out = save(tiny_dataset, tmp_path / "ds")
    np.save(out / "images.npy", np.zeros((30, 8, 9), np.uint8))
    refused(out / "images.npy", r"expected uint8 images of shape \(30, 8, 8\)")


def test_assay_labels_beyond_class_names(tmp_path, tiny_dataset):
    out = save(tiny_dataset, tmp_path / "ds")
    info = json.loads((out / "dataset.json").read_text())
    info["class_names"] = ["horizontal", "vertical"]
    (out / "dataset.json").write_text(json.dumps(info))
    refused(out, "labels must be < 2", names="manifest.parquet")


def test_assay_folder_from_the_future(tmp_path, tiny_dataset):
    out = save(tiny_dataset, tmp_path / "ds")
    info = json.loads((out / "dataset.json").read_text())
    info["schema_version"] = 99
    (out / "dataset.json").write_text(json.dumps(info))
    refused(out, "schema version 99", names="dataset.json")


def test_assay_folder_bad_json(tmp_path, tiny_dataset):
    out = save(tiny_dataset, tmp_path / "ds")
    (out / "dataset.json").write_text("{not json")
    refused(out, "not valid JSON", names="dataset.json")


def test_save_refuses_to_replace_other_folders(tmp_path, tiny_dataset):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(DataError, match="refusing to replace a folder that is not an assay"):
        save(tiny_dataset, tmp_path / "mine")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="found a file"):
        save(tiny_dataset, tmp_path / "file")
