"""Cleaning policies on a hand-made issues table with exact expected decisions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from assay.pipeline.clean import DECISION_COLUMNS, clean, decide, decision_counts, write_cleaned
from assay.pipeline.dataset import Dataset
from assay.pipeline.errors import DataError

# the dataset: classes 0 horizontal, 1 vertical, 2 diagonal; 4 per class, ids 0..11,
#, labels [0 0 0 0 1 1 1 1 2 2 2 2]
ROWS = [
    # id, dirty, label issue, suggested, conf, outlier, vae, blank, exact, near, dup_of
    (0, False, False, 0, 0.90, False, False, False, False, False, -1),  # clean
    (1, True, True, 2, 0.90, False, False, False, False, False, -1),  # strong label issue
    (2, True, True, 1, 0.30, False, False, False, False, False, -1),  # weak label issue
    (3, False, False, 0, 0.80, False, False, False, True, False, -1),  # original of a copy
    (4, True, False, 1, 0.70, True, True, False, False, False, -1),  # outlier (from vae) only
    (5, True, True, 0, 0.95, True, False, False, False, False, -1),  # label + outlier
    (6, True, True, 2, 0.80, False, False, False, True, False, -1),  # strong; copied original
    (7, True, False, 1, 0.60, False, False, False, True, False, 3),  # exact copy of 3
    (8, True, False, 2, 0.70, True, True, True, False, False, -1),  # vae + image property
    (9, True, False, 2, 0.70, False, False, False, False, True, 10),  # near copy of 10
    (10, False, False, 2, 0.90, False, False, False, False, True, -1),  # its original
    (11, True, True, 2, 0.99, False, False, False, False, False, -1),  # suggests given
]
COLUMNS = [
    "sample_id",
    "is_dirty",
    "is_label_issue",
    "suggested_label",
    "suggested_label_confidence",
    "is_outlier",
    "is_vae_issue",
    "is_image_property_issue",
    "is_exact_duplicate",
    "is_near_duplicate",
    "duplicate_of",
]

EXPECTED = {
    "drop": ["keep", "drop", "drop", "keep", "drop", "drop", "drop", "drop", "drop", "drop",
             "keep", "drop"],
    "relabel": ["keep", "relabel", "drop", "keep", "drop", "drop", "relabel", "drop", "drop",
                "drop", "keep", "drop"],
    "review": ["keep", "relabel", "review", "keep", "review", "drop", "relabel", "drop", "drop",
               "review", "keep", "review"],
}


@pytest.fixture
def dataset() -> Dataset:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(12, 8, 8), dtype=np.uint8)
    labels = np.repeat(np.arange(3), 4)
    return Dataset.create(images, labels, ["horizontal", "vertical", "diagonal"])


@pytest.fixture
def issues() -> pd.DataFrame:
    frame = pd.DataFrame(ROWS, columns=COLUMNS)
    frame["sample_id"] = frame["sample_id"].astype(np.int64)
    frame["duplicate_of"] = frame["duplicate_of"].astype(np.int64)
    frame["label_score"] = np.where(frame["is_label_issue"], 0.1, 0.9)
    frame["reasons"] = ""
    frame["is_class_imbalance_issue"] = frame["sample_id"].isin([1, 6])  # dataset-level only
    return frame.sample(frac=1.0, random_state=0)  # row order must not matter


@pytest.mark.parametrize("policy", ["drop", "relabel", "review"])
def test_policies_give_the_expected_decisions(dataset, issues, policy):
    decisions = decide(dataset, issues, policy=policy)
    assert list(decisions.columns) == list(DECISION_COLUMNS)
    assert decisions["sample_id"].tolist() == list(range(12))
    assert decisions["decision"].tolist() == EXPECTED[policy]
    assert decisions["old_label"].tolist() == dataset.labels.tolist()
    expected_new = []
    for i, d in enumerate(EXPECTED[policy]):
        if d == "keep":
            expected_new.append(int(dataset.labels[i]))
        elif d == "relabel":
            expected_new.append({1: 2, 6: 2}[i])
        else:
            expected_new.append(-1)
    assert decisions["new_label"].tolist() == expected_new
    assert decisions["sample_id"].dtype == np.int64
    assert decisions["new_label"].dtype == np.int64


def test_relabel_cleaned_dataset_and_raw_untouched(dataset, issues):
    labels_before = dataset.labels.copy()
    images_before = dataset.images.copy()
    cleaned, decisions = clean(dataset, issues, policy="relabel")
    np.testing.assert_array_equal(dataset.labels, labels_before)
    np.testing.assert_array_equal(dataset.images, images_before)
    assert cleaned.sample_ids.tolist() == [0, 1, 3, 6, 10]
    assert cleaned.labels.tolist() == [0, 2, 0, 2, 2]
    np.testing.assert_array_equal(cleaned.images, dataset.images[[0, 1, 3, 6, 10]])
    assert cleaned.meta["cleaning"]["counts"] == {"keep": 3, "drop": 7, "relabel": 2, "review": 0}
    assert decision_counts(decisions) == cleaned.meta["cleaning"]["counts"]


def test_reasons_are_plain_words(dataset, issues):
    decisions = decide(dataset, issues, policy="review").set_index("sample_id")
    assert decisions.loc[0, "reason"] == ""
    assert decisions.loc[1, "reason"] == (
        "label issue: given horizontal, suggested diagonal (confidence 0.90)"
    )
    assert "too weak" in decisions.loc[2, "reason"]
    assert decisions.loc[4, "reason"] == "vae; only one detector flagged it"
    assert "exact duplicate of sample 3" in decisions.loc[7, "reason"]
    assert decisions.loc[8, "reason"] == "vae; image property"


def test_threshold_is_an_option(dataset, issues):
    strict = decide(dataset, issues, policy="relabel", relabel_confidence=0.85)
    assert strict.set_index("sample_id").loc[6, "decision"] == "drop"  # confidence 0.80
    lenient = decide(dataset, issues, policy="relabel", relabel_confidence=0.2)
    assert lenient.set_index("sample_id").loc[2, "decision"] == "relabel"


def test_clean_only_table_keeps_everything(dataset):
    issues = pd.DataFrame({"sample_id": dataset.sample_ids, "is_dirty": False})
    cleaned, decisions = clean(dataset, issues, policy="drop")
    assert (decisions["decision"] == "keep").all()
    assert len(cleaned) == len(dataset)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"policy": "burn"}, "`policy` must be one of"),
        ({"relabel_confidence": 1.5}, r"`relabel_confidence` must be in \[0, 1\]"),
    ],
)
def test_bad_options(dataset, issues, kwargs, match):
    with pytest.raises(DataError, match=match):
        clean(dataset, issues, **kwargs)


def test_bad_tables(dataset, issues):
    with pytest.raises(DataError, match="no row for 1 sample"):
        clean(dataset, issues[issues["sample_id"] != 5])
    with pytest.raises(DataError, match="is_dirty"):
        clean(dataset, issues.drop(columns="is_dirty"))
    with pytest.raises(DataError, match="repeated sample_id"):
        clean(dataset, pd.concat([issues, issues.head(1)]))


def test_write_cleaned_round_trip(dataset, issues, tmp_path):
    from assay.pipeline import io

    cleaned, decisions = clean(dataset, issues, policy="review")
    out = write_cleaned(cleaned, decisions, tmp_path / "cleaned")
    back = io.load(str(out))
    np.testing.assert_array_equal(back.sample_ids, cleaned.sample_ids)
    np.testing.assert_array_equal(back.labels, cleaned.labels)
    np.testing.assert_array_equal(back.images, cleaned.images)
    stored = pd.read_parquet(out / "decisions.parquet")
    pd.testing.assert_frame_equal(stored, decisions)
    review = pd.read_csv(out / "review.csv")
    assert review["sample_id"].tolist() == [2, 4, 9, 11]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers

    # writing again replaces the folder whole
    cleaned2, decisions2 = clean(dataset, issues, policy="drop")
    write_cleaned(cleaned2, decisions2, out)
    assert not (out / "review.csv").exists()
    assert len(pd.read_parquet(out / "decisions.parquet")) == len(dataset)


def test_cleaned_manifest_carries_the_stages_columns(dataset, issues, tmp_path):
    from assay.pipeline import io

    flags = pd.DataFrame({"sample_id": np.arange(12, dtype=np.int64)[::-1],
                          "fails_not_blank": np.arange(12)[::-1] == 3})  # fmt: skip
    cleaned, decisions = clean(dataset, issues, policy="relabel", sample_flags=flags)
    out = write_cleaned(cleaned, decisions, tmp_path / "cleaned")
    manifest = pd.read_parquet(out / "manifest.parquet").set_index("sample_id")
    assert manifest.index.tolist() == [0, 1, 3, 6, 10]
    assert manifest["fails_not_blank"].tolist() == [False, False, True, False, False]
    assert manifest["decision"].tolist() == ["keep", "relabel", "keep", "relabel", "keep"]
    assert manifest["original_label"].tolist() == [0, 0, 0, 1, 2]
    assert manifest["label"].tolist() == [0, 2, 0, 2, 2]
    assert not manifest["is_dirty"].loc[[0, 3, 10]].any()
    assert io.load(str(out)).columns["decision"].tolist() == manifest["decision"].tolist()


def test_relabel_never_applies_to_an_image_reason():
    """A table made by the detection stage's own merge (combine): an outlier that the label
    detector also flagged with a confident suggestion is dropped, never relabelled."""
    from assay.pipeline.detect.base import DetectorResult
    from assay.pipeline.detect.combine import combine

    rng = np.random.default_rng(0)
    ds = Dataset.create(rng.integers(0, 256, (4, 4, 4), dtype=np.uint8), np.array([0, 1, 0, 1]),
                        ["a", "b"])  # fmt: skip
    ids = ds.sample_ids
    label = pd.DataFrame({"sample_id": ids, "is_label_issue": [True, True, False, False],
                          "label_score": [0.1, 0.1, 0.9, 0.9], "suggested_label": [1, 0, 0, 1],
                          "suggested_label_confidence": [0.95] * 4})  # fmt: skip
    vae = pd.DataFrame({"sample_id": ids, "is_vae_issue": [True, False, False, False],
                        "vae_score": [0.1, 0.9, 0.9, 0.9]})  # fmt: skip
    issues = combine(ds, {"label": DetectorResult("label", label, ""),
                          "vae": DetectorResult("vae", vae, "")})  # fmt: skip
    assert issues["primary_reason"].tolist() == ["outlier", "label", "", ""]
    for policy, first in (("relabel", "drop"), ("review", "review"), ("drop", "drop")):
        decisions = decide(ds, issues, policy=policy)
        assert decisions["decision"].tolist()[:2] == [first, "drop" if policy == "drop"
                                                      else "relabel"], policy  # fmt: skip
        assert decisions["new_label"].tolist()[0] == -1
