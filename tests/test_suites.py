"""The shipped suites on data of other kinds: the generic default, the digits example, and a
suite learned from trusted colour data (``assay expectations learn``) used with ``--suite``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from assay.flows.cli import main
from assay.pipeline import io
from assay.pipeline.dataset import Dataset
from assay.pipeline.validate import DIGITS_SUITE_PATH, load_suite, validate


def recolour(dataset: Dataset, *, seed: int = 0) -> Dataset:
    """Digits as dark strokes of a random colour on a random light background, RGB.

    Each image gets its own background (each channel in 170..255) and ink colour (each
    channel in 0..90); a pixel of grey level ``g`` becomes ``bg + (ink - bg) * g / 255``,
    so the digit keeps its shape and anti-aliasing but the background is bright.
    """
    rng = np.random.default_rng(seed)
    n = len(dataset)
    background = rng.integers(170, 256, size=(n, 1, 1, 3)).astype(np.float64)
    ink = rng.integers(0, 91, size=(n, 1, 1, 3)).astype(np.float64)
    g = dataset.images.astype(np.float64)[..., None] / 255.0
    rgb = np.rint(background + (ink - background) * g).astype(np.uint8)
    return Dataset.create(rgb, dataset.labels, dataset.class_names, sample_ids=dataset.sample_ids)


@pytest.fixture(scope="module")
def colour() -> Dataset:
    """The 1,797 digits, recoloured: (N, 8, 8, 3), light backgrounds."""
    return recolour(io.load("digits"))


def _failed(result) -> list[str]:
    return [r["expectation"] for r in result.failed]


def test_colour_light_background_set_is_what_the_test_says(colour):
    assert colour.images.shape == (1797, 8, 8, 3)
    border = np.concatenate([colour.images[:, 0], colour.images[:, -1]], axis=1)
    assert np.median(border) >= 170  # the background is bright (8x8 strokes touch it)
    assert len(np.unique(colour.images.reshape(len(colour), -1), axis=0)) == len(colour)


def test_default_suite_passes_on_a_colour_light_background_set(colour):
    result = validate(colour, data_docs=False)
    assert _failed(result) == []
    assert result.success_critical and not result.flagged.any()


def test_digits_example_suite_does_not_fit_colour_data(colour):
    """Why the digits suite is no longer the default: it calls every such image dirty."""
    result = validate(colour, suite_path=DIGITS_SUITE_PATH, data_docs=False)
    failed = set(_failed(result))
    assert {"greyscale", "background_dark"} <= failed
    assert result.flagged.mean() > 0.9


def test_default_suite_flags_blank_constant_and_nan_images(colour):
    images = colour.images.copy()
    blank, flat, nan = [3, 400], [17, 1200], [50, 900]
    images[blank] = 255  # white
    images[flat] = np.array([40, 120, 200], dtype=np.uint8)  # one flat colour
    has_nan = np.zeros(len(colour), dtype=bool)
    has_nan[nan] = True
    dirty = Dataset.create(images, colour.labels, colour.class_names).with_columns(
        has_nan=has_nan
    )
    result = validate(dirty, data_docs=False)
    assert result.success_critical  # dirt is a warning, not a broken dataset
    flags = result.sample_flags.set_index("sample_id")
    assert sorted(flags.index[flags["fails_not_constant"]]) == sorted(blank + flat)
    assert sorted(flags.index[flags["fails_no_nan_pixels"]]) == sorted(nan)
    assert sorted(np.flatnonzero(result.flagged)) == sorted(blank + flat + nan)
    # the two white images are also exact copies of each other: 1 copy in 1797 is allowed
    assert "duplicate_fraction_small" not in _failed(result)


def test_default_suite_refuses_a_channel_count_no_model_takes(colour):
    rgba = np.concatenate([colour.images, colour.images[..., :1]], axis=3)
    result = validate(Dataset.create(rgba, colour.labels, colour.class_names), data_docs=False)
    assert _failed(result) == ["channels_supported"]


# ------------------------------------------------------------------ learned suite round trip
def _npz(path: Path, dataset: Dataset) -> str:
    np.savez(path, images=dataset.images, labels=dataset.labels)
    return str(path)


def _validate_cli(tmp_path: Path, name: str, data: str, suite: Path) -> tuple[int, dict]:
    run_dir = tmp_path / name
    code = main(["validate", "--run-dir", str(run_dir), "--data", data, "--suite", str(suite),
                 "--quiet"])  # fmt: skip
    return code, json.loads((run_dir / "validation" / "validation.json").read_text())


def test_learned_suite_round_trip_through_the_cli(colour, tmp_path, capsys):
    perm = np.random.default_rng(3).permutation(len(colour))
    trusted = colour.subset(np.sort(perm[:900]))
    batch = colour.subset(np.sort(perm[900:]))
    suite_path = tmp_path / "colour_suite.json"
    argv = ["expectations", "learn", "--data", _npz(tmp_path / "trusted.npz", trusted),
            "--out", str(suite_path)]  # fmt: skip
    assert main(argv) == 0
    assert "--suite" in capsys.readouterr().out

    suite = load_suite(suite_path)
    names = {e["meta"]["name"]: e for e in suite.expectations}
    bounds = suite.meta["assay"]["learned_bounds"]
    for column in ("pixel_mean", "pixel_std", "pixel_entropy", "ink_fraction"):
        lo, hi = bounds[column]
        assert names[f"{column}_in_learned_range"]["kwargs"] == {
            "column": column, "min_value": lo, "max_value": hi}  # fmt: skip
    assert bounds["pixel_mean"][0] > 100  # learned from light images, not from digits' dark
    assert names["channels_as_trusted"]["kwargs"]["value_set"] == [3]

    # a clean batch of the same kind passes ...
    code, doc = _validate_cli(tmp_path, "clean", _npz(tmp_path / "clean.npz", batch), suite_path)
    assert code == 0 and doc["success_critical"]
    assert doc["n_flagged_samples"] <= 0.01 * len(batch)  # 1 of 897 at the time of writing
    assert doc["suite"]["name"] == "assay_default_learned"

    # ... dirt that the generic suite cannot call dirt is flagged by the learned one ...
    images = batch.images.copy()
    rng = np.random.default_rng(0)
    inverted, noisy = np.arange(0, 30), np.arange(30, 60)
    images[inverted] = 255 - images[inverted]  # light strokes on a dark background
    noise = rng.normal(0, 70, size=images[noisy].shape)
    images[noisy] = np.clip(images[noisy] + noise, 0, 255).astype(np.uint8)
    dirty = Dataset.create(images, batch.labels, batch.class_names)
    code, doc = _validate_cli(tmp_path, "dirty", _npz(tmp_path / "dirty.npz", dirty), suite_path)
    assert code == 0  # warnings only
    flags = pd.read_parquet(tmp_path / "dirty" / "validation" / "sample_flags.parquet")
    flagged = flags.drop(columns="sample_id").to_numpy().any(axis=1)
    assert flagged[inverted].mean() >= 0.95 and flagged[noisy].mean() >= 0.95
    assert flagged[60:].mean() <= 0.01
    assert not validate(dirty, data_docs=False).flagged.any()  # valid images to a generic eye

    # ... and a batch of another kind (greyscale digits) stops the run.
    grey = io.load("digits").subset(np.arange(200))
    code, doc = _validate_cli(tmp_path, "grey", _npz(tmp_path / "grey.npz", grey), suite_path)
    assert code == 3 and "channels_as_trusted" in doc["critical_failures"]


def test_learning_from_the_digits_example_replaces_its_hand_set_bounds(tmp_path):
    digits = io.load("digits")
    path = tmp_path / "digits_learned.json"
    argv = ["expectations", "learn", "--data", "digits", "--out", str(path),
            "--suite", str(DIGITS_SUITE_PATH)]  # fmt: skip
    assert main(argv) == 0
    suite = load_suite(path)
    names = {e["meta"]["name"] for e in suite.expectations}
    assert suite.name == "assay_digits_learned"
    assert not names & {"greyscale", "not_blank", "ink_fraction_plausible", "background_dark",
                        "not_noise"}  # fmt: skip
    assert {"channels_as_trusted", "ink_fraction_in_learned_range",
            "border_ink_fraction_in_learned_range"} <= names  # fmt: skip
    assert validate(digits, suite_path=path, data_docs=False).failed == []
