"""Image folders of mixed sizes, modes and formats -> one policy-shaped dataset.

Every fixture is written here with Pillow: sizes from 12 to 40 px, grey/RGB/RGBA/palette,
PNG/JPEG/WebP/BMP/TIFF, an EXIF-rotated JPEG, a CMYK JPEG and a 16-bit PNG.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from assay.pipeline import io
from assay.pipeline.errors import DataError
from assay.pipeline.formats.image_folder import read_image_folder


def _half_white(h: int, w: int) -> np.ndarray:
    """Grey (h, w): the left half white, the right half black."""
    img = np.zeros((h, w), np.uint8)
    img[:, : w // 2] = 255
    return img


@pytest.fixture
def mixed(tmp_path):
    root = tmp_path / "photos"
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    rng = np.random.default_rng(0)
    rgb = lambda h, w: rng.integers(0, 256, (h, w, 3), dtype=np.uint8)  # noqa: E731
    Image.fromarray(rgb(24, 24)).save(root / "cat" / "a.png")
    Image.fromarray(rgb(24, 24)).save(root / "cat" / "b.jpg", quality=95)
    Image.fromarray(rgb(12, 30)).save(root / "cat" / "c.webp")
    Image.fromarray(rgb(40, 24)).convert("P").save(root / "cat" / "d.bmp")
    Image.fromarray(np.dstack([rgb(24, 24), np.full((24, 24), 128, np.uint8)])).save(
        root / "dog" / "e.tiff"
    )
    Image.fromarray(_half_white(24, 24)).save(root / "dog" / "f.png")  # greyscale
    red = np.zeros((24, 24, 3), np.uint8)
    red[..., 0] = 255
    Image.fromarray(red).convert("CMYK").save(root / "dog" / "g.jpg", quality=95)
    deep = np.full((24, 24), 65535, np.uint16)
    deep[:, 12:] = 0
    Image.fromarray(deep).save(root / "dog" / "h.png")  # 16-bit greyscale
    # stored 12 tall x 24 wide, EXIF orientation 6: shown rotated 90 degrees clockwise
    rotated = Image.fromarray(_half_white(12, 24))
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated.save(root / "dog" / "i.jpg", quality=95, exif=exif)
    return root


def test_mixed_folder_becomes_one_policy_shaped_dataset(mixed, tmp_path):
    ds = read_image_folder(mixed)
    assert ds.images.shape == (9, 24, 24, 3) and ds.images.dtype == np.uint8  # colour set
    assert list(ds.labels) == [0, 0, 0, 0, 1, 1, 1, 1, 1]
    cols = ds.columns.set_index("path")
    assert cols.loc["cat/c.webp", ["original_height", "original_width"]].tolist() == [12, 30]
    assert cols.loc["cat/d.bmp", "original_mode"] == "P"
    assert cols.loc["dog/e.tiff", "original_mode"] == "RGBA"
    assert cols.loc["dog/g.jpg", "original_mode"] == "CMYK"
    assert cols.loc["dog/h.png", "original_mode"].startswith("I;16")
    assert cols.loc["dog/i.jpg", ["original_height", "original_width"]].tolist() == [24, 12]
    policy = ds.meta["size_policy"]
    assert policy["image_size"] == [24, 24] and policy["fit"] == "pad"
    assert policy["chosen"].startswith("typical") and policy["colour"] is True
    assert policy["n_resized"] == 3  # c.webp, d.bmp and the rotated i.jpg

    # the policy is recorded in dataset.json, the original sizes in the manifest
    out = io.save(ds, tmp_path / "ds")
    assert json.loads((out / "dataset.json").read_text())["meta"]["size_policy"] == policy
    back = io.load(out)
    assert back.columns["original_width"].tolist() == ds.columns["original_width"].tolist()


def test_modes_are_converted_faithfully(mixed):
    ds = read_image_folder(mixed)
    img = dict(zip(ds.columns["path"], ds.images, strict=True))
    grey = img["dog/f.png"]  # repeated over three channels
    assert np.array_equal(grey[..., 0], grey[..., 2]) and grey[:, :12].min() == 255
    cmyk = img["dog/g.jpg"].reshape(-1, 3).mean(axis=0)
    assert cmyk[0] > 230 and cmyk[1] < 25 and cmyk[2] < 25  # still red
    deep = img["dog/h.png"]
    assert deep[:, :12].min() == 255 and deep[:, 12:].max() == 0  # 65535 -> 255, 0 -> 0


def test_exif_orientation_is_applied(mixed):
    ds = read_image_folder(mixed, image_size=24, fit="crop")
    img = dict(zip(ds.columns["path"], ds.images, strict=True))["dog/i.jpg"][..., 0]
    # rotated clockwise, the white left half of the stored picture is now the top half
    assert img[:10].mean() > 200 and img[14:].mean() < 60


def test_pad_keeps_everything_crop_fills_the_frame(tmp_path):
    root = tmp_path / "f"
    (root / "a").mkdir(parents=True)
    wide = np.full((10, 20), 180, np.uint8)  # grey paper, a black bar across the middle
    wide[4:6, 2:18] = 0
    Image.fromarray(wide).save(root / "a" / "wide.png")
    Image.fromarray(np.full((10, 10), 255, np.uint8)).save(root / "a" / "square.png")
    pad = read_image_folder(root, image_size=10, fit="pad").images[1]  # wide.png
    assert pad.shape == (10, 10)
    # bands in the image's own border colour (not black), the whole bar kept
    assert (pad[:2] == 180).all() and (pad[-2:] == 180).all()
    assert pad[4, 1:9].max() < 40  # the bar, scaled to half its size
    crop = read_image_folder(root, image_size=10, fit="crop").images[1]
    assert crop[0].min() > 150 and crop[4:6, :].max() < 90  # fills the frame: the bar's middle
    typical = read_image_folder(root)  # median height 10, median width 15
    assert typical.images.shape == (2, 10, 15) and typical.images.ndim == 3  # grey set


def test_large_photos_default_to_the_models_working_size(tmp_path):
    root = tmp_path / "photos"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i, (h, w) in enumerate([(300, 400), (150, 200), (360, 480), (300, 400)]):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / "ab"[i % 2] / f"{i}.png")
    ds = read_image_folder(root, workers=1)
    policy = ds.meta["size_policy"]
    assert ds.images.shape == (4, 48, 64, 3)  # typical 300 x 400, aspect kept
    assert policy["image_size"] == [48, 64] and policy["typical_size"] == [300, 400]
    assert "scaled to 64 px" in policy["chosen"]
    assert ds.columns["original_width"].tolist() == [400, 480, 200, 400]  # a/0, a/2, b/1, b/3
    # asked for explicitly, a larger size is kept
    assert read_image_folder(root, image_size=96, workers=1).images.shape == (4, 96, 96, 3)


def test_parallel_decoding_gives_the_same_dataset(mixed, capsys):
    one = read_image_folder(mixed, workers=1)
    two = read_image_folder(mixed, workers=2, progress=True)
    np.testing.assert_array_equal(one.images, two.images)
    assert one.columns.equals(two.columns)
    assert "images" in capsys.readouterr().err  # the progress bar


def test_unreadable_file_is_skipped_then_refused_with_strict(mixed):
    (mixed / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.warns(match="broken.png"):
        assert len(read_image_folder(mixed)) == 9
    with pytest.raises(DataError, match=r"broken.png.*expected only image files"):
        read_image_folder(mixed, strict=True)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image_size": 0}, "`image_size` must be a positive integer. Got 0 instead."),
        ({"fit": "stretch"}, r"`fit` must be one of \('pad', 'crop'\). Got 'stretch' instead."),
        ({"workers": 0}, "`workers` must be >= 1. Got 0 instead."),
    ],
)
def test_bad_options(mixed, kwargs, match):
    with pytest.raises(DataError, match=match):
        read_image_folder(mixed, **kwargs)


def test_odd_size_aspect_and_greyscale_files_are_image_property_issues(tmp_path):
    from assay.pipeline.detect.image_properties import detect_image_property

    root = tmp_path / "set"
    rng = np.random.default_rng(1)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(12):
            h, w = 24 + i % 3, 24 + (i + 1) % 3  # typical sizes vary a little
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
                root / name / f"{i:02d}.png"
            )
    Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(root / "a" / "big.png")
    Image.fromarray(rng.integers(0, 256, (24, 72, 3), dtype=np.uint8)).save(
        root / "b" / "wide.png"
    )
    like_the_rest = rng.integers(0, 256, (24, 24, 3)).mean(axis=2)  # same grey-level statistics
    Image.fromarray(like_the_rest.round().astype(np.uint8)).save(root / "b" / "grey.png")
    # cropped: padding would give the wide image black bands (low information as well)
    ds = read_image_folder(root, image_size=24, fit="crop")
    result = detect_image_property(ds)
    kinds = dict(zip(ds.columns["path"], result.table["image_property_kind"], strict=True))
    assert kinds["a/big.png"] == "odd_size"
    assert kinds["b/wide.png"] == "odd_aspect_ratio"
    assert kinds["b/grey.png"] == "grayscale"
    flagged = {p for p, kd in kinds.items() if kd}
    assert flagged == {"a/big.png", "b/wide.png", "b/grey.png"}
    assert result.info["counts"] == {"odd_size": 1, "odd_aspect_ratio": 1, "grayscale": 1}


def test_image_size_and_fit_on_the_command_line(mixed, tmp_path, capsys):
    """``--image-size``/``--image-fit`` reach the loader from ``info`` and ``validate``, the
    snapshot has the asked shape, and run.json records the policy for a resume."""
    from assay.flows.cli import main
    from assay.pipeline.runfolder import RunFolder

    assert main(["info", "--data", str(mixed), "--image-size", "16", "--image-fit", "crop",
                 "--json"]) == 0  # fmt: skip
    info = json.loads(capsys.readouterr().out)
    assert info["image_shape"] == [16, 16, 3]

    run_dir = tmp_path / "run"
    main(["validate", "--run-dir", str(run_dir), "--data", str(mixed), "--image-size", "16",
          "--quiet"])  # fmt: skip
    run = RunFolder(run_dir)
    ds = run.dataset()
    assert ds.images.shape == (9, 16, 16, 3)
    assert ds.meta["size_policy"]["chosen"] == "given" and ds.meta["size_policy"]["fit"] == "pad"
    recorded = run.read_run_json().parameters
    assert recorded["image_size"] == 16 and recorded["image_fit"] == "pad"


@pytest.mark.parametrize("size", ["4", "2000"])
def test_image_size_out_of_policy_is_refused(mixed, size, capsys):
    from assay.flows.cli import main

    assert main(["info", "--data", str(mixed), "--image-size", size]) == 2
    err = capsys.readouterr().err
    assert "image" in err and "Traceback" not in err


def test_image_size_on_an_array_dataset_is_refused(tmp_path, capsys):
    from assay.flows.cli import main

    path = tmp_path / "small.npz"
    np.savez(path, images=np.zeros((4, 8, 8), np.uint8), labels=np.array([0, 1, 0, 1]))
    assert main(["info", "--data", str(path), "--image-size", "16"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "--image-size" in err and "Traceback" not in err


def test_decoded_images_are_spooled_not_held_twice(tmp_path):
    """The folder's pixels go block by block to the spool file: the Python heap never holds
    the whole dataset (stacking every decoded image at the end held it twice)."""
    import tracemalloc

    root = tmp_path / "big"
    rng = np.random.default_rng(1)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(600):
            Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(
                root / c / f"{i:03d}.png", compress_level=0
            )
    tracemalloc.start()
    try:
        ds = read_image_folder(root, workers=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ds.images.shape == (1200, 48, 48, 3)
    assert not ds.images.flags.owndata and not ds.images.flags.writeable  # the spool's map
    assert peak < ds.images.nbytes / 2, (peak, ds.images.nbytes)
    with Image.open(root / "b" / "599.png") as last:
        np.testing.assert_array_equal(ds.images[-1], np.asarray(last))
    saved = io.load(io.save(ds, tmp_path / "saved"))
    np.testing.assert_array_equal(saved.images, ds.images)
