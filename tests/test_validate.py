"""Validation with Great Expectations: the default suite, learned suites, bad suite files."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from assay.pipeline import io
from assay.pipeline.dataset import Dataset
from assay.pipeline.errors import DataError
from assay.pipeline.profile import profile
from assay.pipeline.validate import (
    DEFAULT_SUITE_PATH,
    DIGITS_SUITE_PATH,
    ValidationResult,
    critical_failures_message,
    learn_suite,
    load_suite,
    validate,
)

DEFAULT_NAMES = [
    e["meta"]["name"] for e in json.loads(DEFAULT_SUITE_PATH.read_text())["expectations"]
]
DIGITS_NAMES = [
    e["meta"]["name"] for e in json.loads(DIGITS_SUITE_PATH.read_text())["expectations"]
]
#: The expectations of the digits example that the generic default suite does not hold.
DIGITS_ONLY = [n for n in DIGITS_NAMES if n not in DEFAULT_NAMES]
DIRT_KINDS = ("blank", "constant", "inverted", "heavy_noise")


# --------------------------------------------------------------------------- helpers
def make_dirty(dataset: Dataset, *, rate: float, seed: int = 0) -> tuple[Dataset, np.ndarray]:
    """Replace ``rate * N`` images by each kind of dirt; return the dataset and the kinds.

    blank: all zeros; constant: one grey level in 1..255; inverted: ``255 - x``;
    heavy_noise: Gaussian noise with sigma 40..80 grey levels added, clipped.
    """
    rng = np.random.default_rng(seed)
    n = len(dataset)
    k = max(1, int(round(rate * n)))
    order = rng.permutation(n)
    images = dataset.images.copy()
    kinds = np.full(n, "clean", dtype=object)
    for j, kind in enumerate(DIRT_KINDS):
        idx = order[j * k : (j + 1) * k]
        kinds[idx] = kind
        if kind == "blank":
            images[idx] = 0
        elif kind == "constant":
            images[idx] = rng.integers(1, 256, size=(len(idx), 1, 1)).astype(np.uint8)
        elif kind == "inverted":
            images[idx] = 255 - images[idx]
        else:
            sigma = rng.uniform(40, 80, size=(len(idx), 1, 1))
            noisy = images[idx] + rng.standard_normal(images[idx].shape) * sigma
            images[idx] = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    dirty = Dataset.create(
        images, dataset.labels, dataset.class_names, sample_ids=dataset.sample_ids
    )
    return dirty, kinds


def by_name(result: ValidationResult) -> dict[str, dict[str, Any]]:
    return {r["expectation"]: r for r in result.results}


def split(dataset: Dataset, seed: int = 1) -> tuple[Dataset, Dataset]:
    perm = np.random.default_rng(seed).permutation(len(dataset))
    half = len(dataset) // 2
    return dataset.subset(np.sort(perm[:half])), dataset.subset(np.sort(perm[half:]))


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return io.load("digits")


@pytest.fixture(scope="module")
def small(digits) -> Dataset:
    """The first 100 digits: about ten per class, all clean."""
    return digits.subset(np.arange(100))


@pytest.fixture(scope="module")
def mnist(mnist_path) -> Dataset:
    return io.load(str(mnist_path))


# --------------------------------------------------------------------------- clean data
def test_every_default_expectation_passes_on_clean_digits(digits, tmp_path):
    result = validate(digits, out_dir=tmp_path, data_docs=False)
    assert [r["expectation"] for r in result.results] == DEFAULT_NAMES
    assert [r["expectation"] for r in result.failed] == []
    assert result.success_critical
    assert list(result.sample_flags.columns) == ["sample_id"]
    assert not result.flagged.any()
    assert critical_failures_message(result) == ""


def test_every_default_expectation_passes_on_clean_mnist(mnist):
    result = validate(mnist, data_docs=False)
    assert [r["expectation"] for r in result.failed] == []
    assert len(result.results) == len(DEFAULT_NAMES)
    assert result.success_critical


def test_default_suite_is_loaded_from_the_json_file_with_severities_and_reasons():
    suite = load_suite()
    assert suite.path == DEFAULT_SUITE_PATH and suite.path.parent.name == "expectations"
    assert {e["severity"] for e in suite.expectations} == {"critical", "warning"}
    assert all(e["meta"]["why"].strip() for e in suite.expectations)
    tables = {e["meta"]["table"] for e in suite.expectations}
    assert tables == {"samples", "dataset", "classes"}


# --------------------------------------------------------------------------- each expectation
def _replace_profile(column: str, row: int, value: Any) -> Callable[[Dataset], dict]:
    def build(ds: Dataset) -> dict:
        prof = profile(ds)
        if isinstance(value, float) and np.isnan(value):
            prof[column] = prof[column].astype(float)
        prof.loc[row, column] = value
        return {"dataset": ds, "profile_table": prof}

    return build


def _images(fn: Callable[[np.ndarray], np.ndarray], rows=(3, 17)) -> Callable[[Dataset], dict]:
    def build(ds: Dataset) -> dict:
        images = ds.images.copy()
        images[list(rows)] = fn(images[list(rows)])
        return {"dataset": dataclasses.replace(ds, images=images), "expect_ids": list(rows)}

    return build


def _drop_column(ds: Dataset) -> dict:
    return {"dataset": ds, "profile_table": profile(ds).drop(columns=["flat_fraction"])}


def _float_ids(ds: Dataset) -> dict:
    prof = profile(ds)
    prof["sample_id"] = prof["sample_id"].astype(np.float64)
    return {"dataset": ds, "profile_table": prof}


def _float_labels(ds: Dataset) -> dict:
    prof = profile(ds)
    prof["label"] = prof["label"].astype(np.float64) + 0.5
    return {"dataset": ds, "profile_table": prof}


def _repeated_id(ds: Dataset) -> dict:
    ids = ds.sample_ids.copy()
    ids[9] = ids[8]
    return {"dataset": dataclasses.replace(ds, sample_ids=ids)}


def _undeclared_label(ds: Dataset) -> dict:
    labels = ds.labels.copy()
    labels[[4, 40]] = [12, -1]
    return {"dataset": dataclasses.replace(ds, labels=labels), "expect_ids": [4, 40]}


def _marked(column: str) -> Callable[[Dataset], dict]:
    def build(ds: Dataset) -> dict:
        mask = np.zeros(len(ds), dtype=bool)
        mask[[2, 50]] = True
        return {"dataset": ds.with_columns(**{column: mask}), "expect_ids": [2, 50]}

    return build


def _colour(ds: Dataset) -> dict:
    rgb = np.repeat(ds.images[..., None], 3, axis=3)
    return {"dataset": dataclasses.replace(ds, images=rgb)}


def _four_channels(ds: Dataset) -> dict:
    rgba = np.repeat(ds.images[..., None], 4, axis=3)
    return {"dataset": dataclasses.replace(ds, images=rgba)}


def _too_small(ds: Dataset) -> dict:
    return {"dataset": dataclasses.replace(ds, images=ds.images[:, ::2, ::2].copy())}  # 4x4


def _rare_class(ds: Dataset) -> dict:
    keep = np.flatnonzero(ds.labels != 1)  # the largest class has 12 samples
    one = np.flatnonzero(ds.labels == 1)[:1]
    return {"dataset": ds.subset(np.sort(np.concatenate([keep, one])))}


def _unreadable_file(ds: Dataset) -> dict:
    """The real image-folder loader on ``ds`` saved as PNGs plus one file it cannot read."""
    import tempfile

    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i, (image, label) in enumerate(zip(ds.images, ds.labels, strict=True)):
            (folder / str(label)).mkdir(exist_ok=True)
            Image.fromarray(image).save(folder / str(label) / f"{i}.png")
        (folder / "0" / "broken.png").write_bytes(b"not an image")
        with pytest.warns(io.DataWarning, match="broken.png"):
            loaded = io.load(str(folder))
    return {"dataset": loaded}


def _missing_class(ds: Dataset) -> dict:
    return {"dataset": ds.subset(ds.labels != 3)}


def _copies(ds: Dataset) -> dict:
    images = ds.images.copy()
    images[90:95] = images[0]  # 5 % exact copies
    return {"dataset": dataclasses.replace(ds, images=images)}


def _skewed(ds: Dataset) -> dict:
    keep = np.flatnonzero(ds.labels != 1)
    ones = np.flatnonzero(ds.labels == 1)[:2]
    return {"dataset": ds.subset(np.sort(np.concatenate([keep, ones])))}


def _unknown_to_reference(ds: Dataset) -> dict:
    reference = {name: 1.0 for name in ds.class_names if name != "9"}
    return {"dataset": ds, "reference": reference}


BREAKERS: dict[str, Callable[[Dataset], dict]] = {
    "profile_columns": _drop_column,
    "sample_id_is_integer": _float_ids,
    "label_is_integer": _float_labels,
    "sample_id_not_null": _replace_profile("sample_id", 6, np.nan),
    "sample_id_unique": _repeated_id,
    "label_not_null": _replace_profile("label", 5, np.nan),
    "label_in_declared_set": _undeclared_label,
    "pixel_min_in_range": _replace_profile("pixel_min", 7, -3),
    "pixel_max_in_range": _replace_profile("pixel_max", 7, 300),
    "no_nan_pixels": _marked("has_nan"),
    "no_inf_pixels": _marked("has_inf"),
    "channels_supported": _four_channels,
    "height_within_size_policy": _too_small,
    "width_within_size_policy": _too_small,
    "not_constant": _images(lambda x: np.full_like(x, 77)),
    "all_declared_classes_present": _missing_class,
    "duplicate_fraction_small": _copies,
    "class_balance_vs_reference": _skewed,
    "class_in_reference": _unknown_to_reference,
    "class_imbalance_within_dataset": _rare_class,
    "all_files_readable": _unreadable_file,
}

#: The expectations only the digits example suite holds.
DIGITS_BREAKERS: dict[str, Callable[[Dataset], dict]] = {
    "greyscale": _colour,
    "not_blank": _images(lambda x: np.full_like(x, 77)),
    "ink_fraction_plausible": _images(lambda x: x // 4),  # faint: no pixel reaches 128
    "background_dark": _images(lambda x: 255 - x),
    "not_noise": _images(
        lambda x: np.clip(x + np.random.default_rng(0).normal(0, 60, x.shape), 0, 255).astype(
            np.uint8
        )
    ),
}


def test_every_default_expectation_has_a_breaking_case():
    assert sorted(BREAKERS) == sorted(DEFAULT_NAMES)
    assert sorted(DIGITS_BREAKERS) == sorted(DIGITS_ONLY)


def _one_per_file(suite: Path, folder: Path) -> dict[str, Path]:
    raw = json.loads(suite.read_text())
    paths = {}
    for entry in raw["expectations"]:
        path = folder / f"{entry['meta']['name']}.json"
        path.write_text(json.dumps({**raw, "expectations": [entry]}))
        paths[entry["meta"]["name"]] = path
    return paths


@pytest.fixture(scope="module")
def single_suites(tmp_path_factory) -> dict[str, Path]:
    """Each default expectation, verbatim, alone in a suite file (one GX run is slow)."""
    return _one_per_file(DEFAULT_SUITE_PATH, tmp_path_factory.mktemp("single"))


@pytest.fixture(scope="module")
def digits_single_suites(tmp_path_factory) -> dict[str, Path]:
    """Each expectation of the digits example suite alone in a suite file."""
    return _one_per_file(DIGITS_SUITE_PATH, tmp_path_factory.mktemp("digits_single"))


@pytest.fixture(scope="module")
def class_suite(tmp_path_factory) -> Path:
    """The default suite's dataset- and class-level expectations, verbatim."""
    raw = json.loads(DEFAULT_SUITE_PATH.read_text())
    keep = [e for e in raw["expectations"] if e["meta"]["table"] in ("dataset", "classes")]
    path = tmp_path_factory.mktemp("classes") / "classes.json"
    path.write_text(json.dumps({**raw, "expectations": keep}))
    return path


def _check_breaks(name: str, case: dict, small: Dataset, suite: Path) -> None:
    expect_ids = case.pop("expect_ids", None)
    clean = validate(small, suite_path=suite, data_docs=False)
    assert clean.failed == []
    result = validate(case.pop("dataset"), suite_path=suite, data_docs=False, **case)
    found = by_name(result)[name]
    assert found["success"] is False, found
    severity = found["severity"]
    assert result.success_critical is (severity != "critical")
    if severity == "critical":
        assert name in critical_failures_message(result)
    if expect_ids is not None:
        assert sorted(found["first_unexpected_ids"]) == sorted(expect_ids)
        flagged = result.sample_flags.loc[result.sample_flags[f"fails_{name}"], "sample_id"]
        assert sorted(flagged) == sorted(expect_ids)


@pytest.mark.parametrize("name", DEFAULT_NAMES)
def test_each_default_expectation_fails_on_data_that_breaks_it(name, small, single_suites):
    _check_breaks(name, BREAKERS[name](small), small, single_suites[name])


@pytest.mark.parametrize("name", DIGITS_ONLY)
def test_each_digits_example_expectation_fails_on_data_that_breaks_it(
    name, small, digits_single_suites
):
    _check_breaks(name, DIGITS_BREAKERS[name](small), small, digits_single_suites[name])


# --------------------------------------------------------------------------- dirt detection
def _rates(result: ValidationResult, kinds: np.ndarray) -> dict[str, float]:
    flagged = result.flagged
    return {str(k): float(flagged[kinds == k].mean()) for k in np.unique(kinds)}


def _assert_catches_dirt(rates: dict[str, float], kinds=DIRT_KINDS) -> None:
    for kind in kinds:
        assert rates[kind] >= 0.95, (kind, rates)
    assert rates["clean"] <= 0.01, rates


#: The dirt the generic default suite catches without knowing what the images show
#: (an inverted or noisy image is a valid image of some other dataset: it takes a learned
#: suite, or the digits example, to call it dirt).
GENERIC_DIRT = ("blank", "constant")


def test_default_suite_flags_constant_images_in_digits(digits):
    dirty, kinds = make_dirty(digits, rate=0.03)
    _assert_catches_dirt(_rates(validate(dirty, data_docs=False), kinds), GENERIC_DIRT)


def test_digits_example_suite_flags_dirt_in_digits(digits):
    clean = validate(digits, suite_path=DIGITS_SUITE_PATH, data_docs=False)
    assert [r["expectation"] for r in clean.results] == DIGITS_NAMES
    assert clean.failed == []
    dirty, kinds = make_dirty(digits, rate=0.03)
    result = validate(dirty, suite_path=DIGITS_SUITE_PATH, data_docs=False)
    _assert_catches_dirt(_rates(result, kinds))


def test_learned_suite_flags_dirt_in_held_out_digits(digits, tmp_path):
    trusted, batch = split(digits)
    suite = learn_suite(trusted, out_path=tmp_path / "digits.json")
    dirty, kinds = make_dirty(batch, rate=0.03)
    _assert_catches_dirt(_rates(validate(dirty, suite_path=suite, data_docs=False), kinds))


def test_default_and_digits_suites_flag_dirt_in_mnist(mnist):
    dirty, kinds = make_dirty(mnist, rate=0.02)
    result = validate(dirty, data_docs=False)
    _assert_catches_dirt(_rates(result, kinds), GENERIC_DIRT)
    assert result.success_critical  # dirt is a warning, not a broken dataset
    result = validate(dirty, suite_path=DIGITS_SUITE_PATH, data_docs=False)
    _assert_catches_dirt(_rates(result, kinds))
    assert result.success_critical


def test_learned_suite_flags_dirt_in_held_out_mnist(mnist, tmp_path):
    trusted, batch = split(mnist)
    suite = learn_suite(trusted, out_path=tmp_path / "mnist.json")
    clean = validate(batch, suite_path=suite, data_docs=False)
    assert clean.flagged.mean() <= 0.01
    assert [r["expectation"] for r in clean.failed] == []
    dirty, kinds = make_dirty(batch, rate=0.02)
    _assert_catches_dirt(_rates(validate(dirty, suite_path=suite, data_docs=False), kinds))


# --------------------------------------------------------------------------- learned suites
def test_learned_suite_holds_bounds_shape_and_reference(small, tmp_path):
    path = learn_suite(small, out_path=tmp_path / "sub" / "learned.json")
    assert path == tmp_path / "sub" / "learned.json"
    suite = load_suite(path)
    raw = json.loads(path.read_text())
    prof = profile(small)
    bounds = raw["meta"]["assay"]["learned_bounds"]
    for column, (lo, hi) in bounds.items():
        assert lo <= prof[column].min() and prof[column].max() <= hi, column
    names = {e["meta"]["name"]: e for e in suite.expectations}
    assert names["height_as_trusted"]["kwargs"]["value_set"] == [8]
    assert names["height_as_trusted"]["severity"] == "critical"
    assert "not_constant" in names and "pixel_std_in_learned_range" in names
    assert "height_within_size_policy" not in names  # replaced by height_as_trusted
    for column in ("pixel_mean", "pixel_std", "pixel_entropy", "ink_fraction"):
        assert names[f"{column}_in_learned_range"]["kwargs"]["min_value"] == bounds[column][0]
    fractions = suite.reference["class_fractions"]
    assert fractions == pytest.approx(
        {c: v / 100 for c, v in zip(small.class_names, small.class_counts(), strict=True)}
    )
    # the data it was learned from passes it
    assert validate(small, suite_path=path, data_docs=False).failed == []


def test_learned_suite_stops_a_batch_of_another_kind(small, tmp_path):
    path = learn_suite(small, out_path=tmp_path / "learned.json")
    bigger = np.kron(small.images, np.ones((2, 2), dtype=np.uint8))  # 16x16
    other = Dataset.create(bigger, small.labels, small.class_names)
    result = validate(other, suite_path=path, data_docs=False)
    assert not result.success_critical
    message = critical_failures_message(result)
    assert "height_as_trusted" in message and "width_as_trusted" in message


def test_learned_reference_is_used_for_class_balance(small, tmp_path):
    skewed = small.subset(np.flatnonzero(small.labels != 1))
    path = learn_suite(skewed, out_path=tmp_path / "learned.json")
    result = validate(small, suite_path=path, data_docs=False)  # class 1 is new
    classes = by_name(result)["class_in_reference"]
    assert classes["success"] is True  # the class is named in the reference (share 0)
    balance = by_name(result)["class_balance_vs_reference"]
    assert balance["success"] is False and balance["first_unexpected_ids"] == ["1"]
    assert "trusted data" in result.reference["source"]


# --------------------------------------------------------------------------- odd datasets
def test_one_class_dataset_validates_and_reports(small, class_suite):
    one = small.subset(np.flatnonzero(small.labels == 4))
    result = validate(one, suite_path=class_suite, data_docs=False)
    found = by_name(result)
    assert result.success_critical
    assert found["all_declared_classes_present"]["success"] is False
    assert found["all_declared_classes_present"]["observed_value"] == 9
    assert found["class_balance_vs_reference"]["unexpected_count"] == 10  # 9 empty, 1 over
    assert result.facts["n_classes_present"] == 1


def test_one_declared_class_is_balanced_by_definition(small):
    images = small.images[:20]
    one = Dataset.create(images, np.zeros(20, dtype=np.int64), ["only"])
    result = validate(one, data_docs=False)  # the whole default suite
    assert result.failed == []


def test_class_absent_from_a_reference_dataset_is_reported(small, class_suite):
    reference = small.subset(np.flatnonzero(small.labels < 8))
    reference = Dataset.create(reference.images, reference.labels, [str(i) for i in range(8)])
    result = validate(small, reference=reference, suite_path=class_suite, data_docs=False)
    found = by_name(result)["class_in_reference"]
    assert found["success"] is False
    assert sorted(found["first_unexpected_ids"]) == ["8", "9"]
    assert result.success_critical
    assert result.reference["source"].startswith("reference dataset")


def test_reference_given_as_weights_per_class(small, class_suite):
    weights = np.ones(10)
    weights[0] = 10.0  # class 0 should be half the data
    result = validate(small, reference=weights, suite_path=class_suite, data_docs=False)
    found = by_name(result)["class_balance_vs_reference"]
    assert found["success"] is False and "0" in found["first_unexpected_ids"]


@pytest.mark.parametrize(
    ("reference", "match"),
    [
        (np.ones(3), "one weight per declared class"),
        ({"0": -1.0}, "finite and >= 0"),
        ({"0": 0.0}, "must not all be zero"),
        ({"0": "many"}, "must be numbers"),
    ],
)
def test_bad_references_are_refused(small, reference, match):
    with pytest.raises(DataError, match=match):
        validate(small, reference=reference, data_docs=False)


# --------------------------------------------------------------------------- outputs
def test_outputs_and_validation_json_shape(small, tmp_path):
    images = small.images.copy()
    images[[1, 2]] = 0
    dirty = dataclasses.replace(small, images=images)
    result = validate(dirty, out_dir=tmp_path, data_docs=True)
    doc = json.loads((tmp_path / "validation.json").read_text())
    assert doc["success_critical"] is True and doc["n_failed"] >= 1
    assert doc["n_flagged_samples"] == 2
    entry = next(r for r in doc["results"] if r["expectation"] == "not_constant")
    for key in (
        "expectation",
        "column",
        "severity",
        "success",
        "observed_value",
        "unexpected_count",
        "first_unexpected_ids",
        "why",
    ):
        assert key in entry
    assert entry["column"] == "pixel_std" and entry["severity"] == "warning"
    assert entry["unexpected_count"] == 2 and entry["first_unexpected_ids"] == [1, 2]
    assert entry["observed_value"]["min"] == 0.0
    flags = pd.read_parquet(tmp_path / "sample_flags.parquet")
    assert flags.loc[flags.fails_not_constant, "sample_id"].tolist() == [1, 2]
    assert len(pd.read_parquet(tmp_path / "profile.parquet")) == len(small)
    assert (tmp_path / "data_docs" / "index.html").is_file()
    assert doc["data_docs"] == "data_docs/index.html" == result.data_docs
    assert not list(tmp_path.glob(".*tmp"))  # nothing half-written left behind


def test_critical_message_lists_failures_in_plain_words(small, single_suites):
    case = _undeclared_label(small)
    suite = single_suites["label_in_declared_set"]
    result = validate(case["dataset"], suite_path=suite, data_docs=False)
    message = critical_failures_message(result)
    assert message.startswith("Validation failed: 1 critical expectation")
    assert "label_in_declared_set (column label)" in message
    assert "2 samples fail it, e.g. 4, 40" in message


# --------------------------------------------------------------------------- bad suite files
def _suite_with(tmp_path: Path, change: Callable[[dict], None]) -> Path:
    raw = json.loads(DEFAULT_SUITE_PATH.read_text())
    change(raw)
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(raw))
    return path


def _set(index: int, **fields: Any) -> Callable[[dict], None]:
    def change(raw: dict) -> None:
        entry = raw["expectations"][index]
        for key, value in fields.items():
            if key in ("column", "min_value", "value_set"):
                entry["kwargs"][key] = value
            elif key in ("table", "name"):
                entry["meta"][key] = value
            else:
                entry[key] = value

    return change


NOT_CONSTANT = DEFAULT_NAMES.index("not_constant")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (_set(NOT_CONSTANT, column="sharpness"), r"'not_constant'.*column 'sharpness'"),
        (_set(NOT_CONSTANT, table="pixels"), r"'not_constant'.*meta.table"),
        (_set(NOT_CONSTANT, severity="fatal"), r"'not_constant'.*severity"),
        (_set(NOT_CONSTANT, type="expect_pixels_to_be_pretty"), r"'not_constant'.*not a valid"),
        (_set(NOT_CONSTANT, min_value="low"), r"'not_constant'.*not a valid"),
        (_set(NOT_CONSTANT, value_set={"$PARAMETER": "colours"}), r"'not_constant'.*'colours'"),
        (
            _set(NOT_CONSTANT, name="channels_supported"),
            rf"#{NOT_CONSTANT + 1} repeats the name 'channels_supported'",
        ),
        (lambda raw: raw.update(expectations="all"), "expected a Great Expectations suite"),
    ],
)
def test_bad_suite_files_name_the_file_and_the_expectation(tmp_path, small, change, match):
    path = _suite_with(tmp_path, change)
    with pytest.raises(DataError, match=match) as info:
        validate(small, suite_path=path, data_docs=False)
    assert str(path) in str(info.value)


def test_column_set_naming_an_unknown_column_is_refused(tmp_path, small):
    def change(raw: dict) -> None:
        raw["expectations"][0]["kwargs"]["column_set"].append("sharpness")

    with pytest.raises(DataError, match=r"'profile_columns'.*column 'sharpness'"):
        validate(small, suite_path=_suite_with(tmp_path, change), data_docs=False)


def test_a_suite_written_by_great_expectations_itself_loads_and_runs(tmp_path, small):
    import great_expectations as gx

    suite = gx.ExpectationSuite(
        name="plain_gx",
        expectations=[
            gx.expectations.ExpectColumnValuesToBeBetween(column="pixel_std", min_value=90.0),
            gx.expectations.ExpectColumnValuesToBeBetween(
                column="pixel_std", max_value=1000.0, severity="warning"
            ),
        ],
    )
    path = tmp_path / "plain.json"
    path.write_text(json.dumps(suite.to_json_dict()))
    result = validate(small, suite_path=path, data_docs=False)
    low, high = result.results
    assert low["table"] == "samples" and low["severity"] == "critical"
    assert low["success"] is False and not result.success_critical
    assert high["success"] is True and low["expectation"] != high["expectation"]
    flagged = result.sample_flags.columns[1:]
    assert len(flagged) == 1 and result.sample_flags[flagged[0]].sum() == low["unexpected_count"]


def test_suite_that_is_not_json_is_refused(tmp_path, small):
    path = tmp_path / "broken.json"
    path.write_text('{"name": "x", "expectations": [')
    with pytest.raises(DataError, match=r"broken\.json: not valid JSON"):
        validate(small, suite_path=path, data_docs=False)


def test_missing_suite_file_is_refused(tmp_path, small):
    with pytest.raises(DataError, match="suite file not found"):
        validate(small, suite_path=tmp_path / "nope.json", data_docs=False)
