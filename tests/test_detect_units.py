"""Detection building blocks on tiny hand-made arrays with exact answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from assay.models.classifier import Classifier, ClassifierConfig, SmallCNN
from assay.pipeline.dataset import Dataset
from assay.pipeline.detect.base import DetectorResult
from assay.pipeline.detect.combine import ISSUE_COLUMNS, combine, combine_outlier_scores
from assay.pipeline.detect.datalab import datalab_issues, groups_from_pairs
from assay.pipeline.detect.duplicate import detect_exact_duplicate, first_of_group
from assay.pipeline.detect.label import label_issues
from assay.pipeline.detect.oof import image_groups, make_folds


# ----------------------------------------------------------------------------- folds
def test_image_groups_points_to_first_identical_image():
    images = np.zeros((5, 2, 2), dtype=np.uint8)
    images[1] = 7
    images[3] = 7
    images[4, 0, 0] = 1
    assert image_groups(images).tolist() == [0, 1, 0, 1, 4]


def test_make_folds_is_stratified_seeded_and_keeps_groups_together():
    labels = np.repeat(np.arange(3), 20)
    groups = np.arange(60)
    groups[[5, 6, 7]] = 5  # three copies of one image
    folds = make_folds(labels, n_folds=5, seed=3, groups=groups)
    assert folds.shape == (60,) and set(folds) == set(range(5))
    assert len(set(folds[[5, 6, 7]])) == 1
    for c in range(3):
        counts = np.bincount(folds[(labels == c) & (groups == np.arange(60))], minlength=5)
        assert counts.max() - counts.min() <= 1
    assert np.array_equal(folds, make_folds(labels, n_folds=5, seed=3, groups=groups))
    assert not np.array_equal(folds, make_folds(labels, n_folds=5, seed=4, groups=groups))


def test_make_folds_handles_a_single_sample_class_and_tiny_data():
    labels = np.array([0] * 10 + [1] * 10 + [2])
    folds = make_folds(labels, n_folds=5, seed=0)
    assert set(folds) == set(range(5))
    # Every class but the singleton is in every fold's training part.
    for f in range(5):
        assert {0, 1} <= set(labels[folds != f])
    # Fewer distinct images than folds: fewer folds.
    assert set(make_folds(np.array([0, 1, 0]), n_folds=5, seed=0)) == {0, 1, 2}


@pytest.mark.parametrize("n_folds", [0, 1])
def test_make_folds_rejects_fewer_than_two_folds(n_folds):
    with pytest.raises(ValueError, match="`n_folds` must be >= 2"):
        make_folds(np.array([0, 1, 0, 1]), n_folds=n_folds)


# ----------------------------------------------------------------------------- classifier
def test_classifier_shapes_and_determinism():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 8, 8), dtype=np.uint8)
    labels = np.arange(40) % 3
    config = ClassifierConfig.for_images(images.shape, epochs=2, hidden=16, widths=(4, 8))
    a = Classifier(config, n_classes=3, seed=1, device="cpu").fit(images, labels)
    b = Classifier(config, n_classes=3, seed=1, device="cpu").fit(images, labels)
    pa, za = a.predict_with_embedding(images)
    pb, zb = b.predict_with_embedding(images)
    assert pa.shape == (40, 3) and za.shape == (40, 16)
    np.testing.assert_allclose(pa.sum(axis=1), 1.0)
    np.testing.assert_array_equal(pa, pb)
    np.testing.assert_array_equal(za, zb)


def test_classifier_architecture_pools_down_to_at_least_four_pixels():
    config = ClassifierConfig(widths=(4, 8, 8))
    model = SmallCNN(1, 10, (28, 28), config)
    pools = sum(type(m).__name__ == "MaxPool2d" for m in model.features)
    assert pools == 2  # 28 -> 14 -> 7; a third pool would go under 4 px
    tiny = SmallCNN(1, 2, (8, 8), config)
    assert sum(type(m).__name__ == "MaxPool2d" for m in tiny.features) == 1  # 8 -> 4


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("dropout", 1.0, "`dropout` must be in"),
        ("epochs", 0, "`epochs` must be >= 1"),
        ("widths", (), "`widths` must be positive"),
        ("lr", 0.0, "`lr` must be > 0"),
    ],
)
def test_classifier_config_rejects_bad_values(field, value, match):
    with pytest.raises(ValueError, match=match):
        ClassifierConfig(**{field: value})


# ----------------------------------------------------------------------------- labels
def _probs_for(labels_true: np.ndarray, k: int, confidence: float = 0.9) -> np.ndarray:
    probs = np.full((labels_true.size, k), (1 - confidence) / (k - 1))
    probs[np.arange(labels_true.size), labels_true] = confidence
    return probs


def test_label_issues_find_flipped_labels_and_the_transition_matrix():
    true = np.repeat(np.arange(3), 50)
    given = true.copy()
    flipped = np.array([0, 1, 2, 50, 51, 100])
    given[flipped] = (true[flipped] + 1) % 3
    out = label_issues(given, _probs_for(true, 3))
    assert set(np.flatnonzero(out["is_issue"])) == set(flipped)
    assert out["suggested"].tolist() == true.tolist()
    np.testing.assert_allclose(out["confidence"], 0.9)
    assert out["score"][flipped].max() < out["score"][np.setdiff1d(np.arange(150), flipped)].min()
    t = out["noise_matrix"]
    np.testing.assert_allclose(t.sum(axis=1), 1.0)
    # T[i, j] = P(given j | true i): class 0 loses 3 of 50 samples to class 1.
    assert t[0, 1] == pytest.approx(3 / 50, abs=0.02)
    assert t[0, 2] == pytest.approx(0.0, abs=1e-9)
    assert t[1, 2] == pytest.approx(2 / 50, abs=0.02)


def test_label_issues_flag_flipped_labels_before_images_no_class_explains():
    """The calibrated count is filled by the lowest normalized margin: a flipped label (the
    classifier is sure of another class) goes before an odd image whose probabilities are
    spread over every class, although the odd image has the lower self-confidence."""
    k = 10
    true = np.repeat(np.arange(k), 30)
    given = true.copy()
    probs = _probs_for(true, k, confidence=0.95)
    flipped, odd = np.array([0, 30, 60]), np.array([90, 120, 150])
    given[flipped] = (true[flipped] + 1) % k
    probs[flipped] = 0.04 / (k - 1)
    probs[flipped, true[flipped]] = 0.96  # given label: 0.0044
    probs[odd] = (1 - 0.002 - 0.2) / (k - 2)
    probs[odd, true[odd]] = 0.002  # the lowest self-confidence of all
    probs[odd, (true[odd] + 5) % k] = 0.2  # no class above its confident threshold
    out = label_issues(given, probs)
    assert out["score"][odd].max() < out["score"][flipped].min()  # label_score: self-confidence
    assert set(np.flatnonzero(out["is_issue"])) == set(flipped)


def test_label_issues_with_an_absent_class_keep_its_identity_row():
    true = np.repeat([0, 2], 30)
    out = label_issues(true, _probs_for(true, 3))
    assert out["noise_matrix"].shape == (3, 3)
    np.testing.assert_array_equal(out["noise_matrix"][1], [0.0, 1.0, 0.0])
    assert not out["is_issue"].any()


# ----------------------------------------------------------------------------- duplicates
def _dataset(images: np.ndarray, labels: np.ndarray, ids=None) -> Dataset:
    return Dataset.create(images, labels, sample_ids=ids)


def test_exact_duplicates_point_to_the_first_copy():
    images = np.zeros((5, 3, 3), dtype=np.uint8)
    images[0, 0, 0] = 1
    images[2, 0, 0] = 1
    images[4, 0, 0] = 1
    images[3, 1, 1] = 9
    ds = _dataset(images, np.zeros(5, dtype=np.int64), ids=np.array([10, 11, 12, 13, 14]))
    res = detect_exact_duplicate(ds)
    res.check(ds.sample_ids)
    t = res.table
    assert t["is_exact_duplicate_issue"].tolist() == [False, False, True, False, True]
    assert t["exact_duplicate_of"].tolist() == [-1, -1, 10, -1, 10]
    assert t["exact_duplicate_score"].tolist() == [1, 1, 0, 1, 0]


def test_groups_from_pairs_and_first_of_group():
    root = groups_from_pairs(6, [(5, 2), (2, 4), (1, 3)])
    assert root.tolist() == [0, 1, 2, 1, 2, 2]
    assert first_of_group(np.array([7, 3, 7, 3, 9])).tolist() == [0, 1, 0, 1, 4]


def test_datalab_core_finds_far_points_and_near_copies():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(200, 3)).astype(np.float32)  # 3 dims: euclidean metric
    feats[7] = feats[3] + 1e-4  # a near copy
    feats[50] = 40.0  # far from everything
    labels = np.arange(200) % 4
    labels[-1] = 3
    out = datalab_issues(labels, feats, backend="cleanlab-core")
    assert out["backend"] == "cleanlab-core"
    assert out["outlier"]["is_issue"][50]
    assert out["outlier"]["score"].argmin() == 50
    assert out["near_duplicate"]["is_issue"][[3, 7]].all()
    assert out["near_duplicate"]["is_issue"].sum() == 2
    assert not out["class_imbalance"]["is_issue"].any()
    assert isinstance(out["non_iid"], Exception)


def test_datalab_issues_rejects_mismatched_features():
    with pytest.raises(ValueError, match="`features` must have shape"):
        datalab_issues(np.zeros(5, dtype=int), np.zeros((4, 2)))


# ----------------------------------------------------------------------------- combine
def test_combine_outlier_scores_methods():
    a = np.array([0.1, 0.5, 0.9, 0.8])
    b = np.array([0.9, 0.2, 0.8, 0.7])
    np.testing.assert_allclose(combine_outlier_scores({"a": a, "b": b}, method="min"), [
        0.1, 0.2, 0.8, 0.7])  # fmt: skip
    # ranks / N: a -> [1, 2, 4, 3] / 4, b -> [4, 1, 3, 2] / 4
    np.testing.assert_allclose(
        combine_outlier_scores({"a": a, "b": b}, method="rank_min"), [0.25, 0.25, 0.75, 0.5]
    )
    np.testing.assert_allclose(
        combine_outlier_scores({"a": a, "b": b}, method="rank_mean"), [0.625, 0.375, 0.875, 0.625]
    )
    np.testing.assert_allclose(
        combine_outlier_scores({"a": a, "b": b}, method="rank_product"),
        [1 / 4, 2 / 16, 12 / 16, 6 / 16],
    )
    # the default rank combination; sample 1 (ranks 2 and 1) now comes before sample 0
    # (1 and 4), which rank_min ties
    np.testing.assert_allclose(combine_outlier_scores({"a": a, "b": b}),
                               combine_outlier_scores({"a": a, "b": b}, method="rank_product"))
    with pytest.raises(ValueError, match="`method` must be one of"):
        combine_outlier_scores({"a": a}, method="max")


def _result(name: str, ids: np.ndarray, flag, score, **extra) -> DetectorResult:
    table = pd.DataFrame({"sample_id": ids, f"is_{name}_issue": flag, f"{name}_score": score})
    for key, value in extra.items():
        table[key] = value
    return DetectorResult(name=name, table=table, summary=name)


def test_combine_merges_flags_reasons_and_duplicate_groups():
    images = np.arange(5 * 4, dtype=np.uint8).reshape(5, 2, 2)
    ds = Dataset.create(images, np.array([0, 1, 0, 1, 0]), ["zero", "one"],
                        sample_ids=np.array([20, 21, 22, 23, 24]))  # fmt: skip
    ids = ds.sample_ids
    results = {
        "label": _result(
            "label", ids, [False, True, False, False, False], [0.9, 0.1, 0.8, 0.9, 0.7],
            suggested_label=[0, 0, 0, 1, 0], suggested_label_confidence=[0.9] * 5,
        ),
        "exact_duplicate": _result(
            "exact_duplicate", ids, [False, False, False, False, True], [1, 1, 1, 1, 0],
            exact_duplicate_of=[-1, -1, -1, -1, 22],
        ),
        "near_duplicate": _result(
            "near_duplicate", ids, [False, False, True, False, False], [1, 1, 0.1, 1, 1],
            near_duplicate_of=[-1, -1, 20, -1, -1],
        ),
        "knn_outlier": _result("knn_outlier", ids, [False, False, False, True, False],
                               [0.9, 0.8, 0.7, 0.01, 0.6]),  # fmt: skip
        "class_imbalance": _result("class_imbalance", ids, [True] * 5, [0.05] * 5),
    }  # fmt: skip
    issues = combine(ds, results)
    assert list(issues.columns[: len(ISSUE_COLUMNS)]) == list(ISSUE_COLUMNS)
    assert issues["duplicate_of"].tolist() == [-1, -1, 20, -1, 20]
    assert issues["is_exact_duplicate"].tolist() == [False, False, False, False, True]
    assert issues["is_near_duplicate"].tolist() == [False, False, True, False, False]
    assert issues["is_outlier"].tolist() == [False, False, False, True, False]
    assert issues["outlier_score"].argmin() == 3
    # Class imbalance describes the dataset: it does not make samples dirty.
    assert issues["is_dirty"].tolist() == [False, True, True, True, True]
    assert issues["reasons"][0] == ""
    assert issues["reasons"][1] == "label issue (given one, likely zero)"
    assert issues["reasons"][2] == "near duplicate of 20"
    assert issues["reasons"][3] == "outlier in feature space"
    assert issues["reasons"][4] == "exact duplicate of 20"
    assert issues["primary_reason"].tolist() == [
        "", "label", "near_duplicate", "outlier", "exact_duplicate"]  # fmt: skip
    assert issues["outlier_sources"].tolist() == ["", "", "", "knn_outlier", ""]
    # One column per fact: the detectors' own flag columns are folded in, not copied.
    for folded in ("is_knn_outlier_issue", "is_exact_duplicate_issue", "exact_duplicate_score",
                   "is_near_duplicate_issue", "near_duplicate_score", "is_vae_issue"):
        assert folded not in issues.columns
    # Missing detectors: neutral values.
    assert issues["vae_score"].eq(1.0).all()


def test_an_image_reason_is_never_a_label_issue():
    """An image flagged as an outlier or a property failure gets that as its only reason,
    even when the label detector also flagged it with a suggested label."""
    images = np.arange(4 * 4, dtype=np.uint8).reshape(4, 2, 2)
    ds = Dataset.create(images, np.array([0, 1, 0, 1]), ["zero", "one"])
    ids = ds.sample_ids
    results = {
        "label": _result(
            "label", ids, [True, True, True, False], [0.1, 0.1, 0.1, 0.9],
            suggested_label=[1, 0, 1, 1], suggested_label_confidence=[0.9] * 4,
        ),
        "vae": _result("vae", ids, [True, False, False, False], [0.1, 0.9, 0.9, 0.9],
                       vae_error=[9.0, 1.0, 1.0, 1.0]),
        "image_property": _result(
            "image_property", ids, [False, True, False, False], [0.9, 0.0, 0.9, 0.9],
            image_property_kind=["", "blank", "", ""],
        ),
    }  # fmt: skip
    issues = combine(ds, results)
    assert issues["primary_reason"].tolist() == ["outlier", "image_property", "label", ""]
    assert issues["is_label_issue"].tolist() == [False, False, True, False]
    assert issues["reasons"][0] == "poorly explained by the VAE"
    assert issues["reasons"][1] == "image property: blank"
    assert "likely" not in issues["reasons"][0] + issues["reasons"][1]
    assert issues["outlier_sources"].tolist() == ["vae", "image_property", "", ""]
    assert issues["vae_error"].tolist() == [9.0, 1.0, 1.0, 1.0]
