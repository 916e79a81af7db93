"""The detection stage end to end on small seeded data: schema, quality, determinism,
failure isolation and awkward label sets."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from assay.models.classifier import ClassifierConfig
from assay.pipeline import io
from assay.pipeline.clean import clean as clean_dataset
from assay.pipeline.dataset import Dataset
from assay.pipeline.detect import REGISTRY, run_detection
from assay.pipeline.detect.combine import (
    ISSUE_COLUMNS,
    OUTLIER_EVIDENCE,
    OUTLIER_SOURCES,
    REASONS,
)
from assay.pipeline.detect.datalab import _datalab_available, datalab_issues
from assay.pipeline.inject import InjectionConfig, ground_truth, inject

#: A quick CNN for tests (the real one trains for longer).
TINY_CNN = ClassifierConfig.for_images((1, 8, 8), epochs=3, widths=(8, 16), hidden=32)
#: Quick VAE settings (the colleague detector accepts config overrides).
QUICK = {"vae": {"config": {"epochs": 10}}}


@pytest.fixture(autouse=True)
def _one_torch_thread(monkeypatch):
    """Models that size their thread pool from ``OMP_NUM_THREADS`` use one thread here:
    on a machine whose cores are shared, one thread is several times faster than two."""
    import torch

    threads = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return io.load("digits")


@pytest.fixture(scope="module")
def small(digits) -> Dataset:
    """400 digits with label noise, corruptions, OOD and duplicates injected."""
    base = digits.subset(np.arange(400))
    config = InjectionConfig(
        label_noise=0.1, gaussian_noise=0.01, blank=0.01, ood=0.01,
        exact_duplicates=0.02, near_duplicates=0.02,
    )  # fmt: skip
    return inject(base, config, seed=1)


# ----------------------------------------------------------------------------- schema
def test_outputs_schema_and_score_ranges(small, tmp_path):
    result = run_detection(
        small, out_dir=tmp_path, seed=0, progress=False, options=QUICK,
        classifier={"model": "cnn+svc", "config": TINY_CNN},
    )  # fmt: skip
    issues = pd.read_parquet(tmp_path / "issues.parquet")
    pd.testing.assert_frame_equal(issues, result.issues)
    assert list(issues.columns[: len(ISSUE_COLUMNS)]) == list(ISSUE_COLUMNS)
    assert issues["sample_id"].tolist() == small.sample_ids.tolist()
    assert issues["given_label"].tolist() == small.labels.tolist()
    for col in issues.columns:
        if col.endswith("_score") or col == "suggested_label_confidence":
            values = issues[col].to_numpy(dtype=float)
            assert np.all((values >= 0) & (values <= 1)), col
        if col.startswith("is_"):
            assert issues[col].dtype == bool, col
    for col in ("suggested_label", "duplicate_of", "given_label", "sample_id"):
        assert issues[col].dtype == np.int64, col
    assert issues["suggested_label"].between(0, small.n_classes - 1).all()
    clean = ~issues["is_dirty"]
    assert (issues.loc[clean, "reasons"] == "").all()
    assert (issues.loc[~clean, "reasons"] != "").all()
    flags = [c for c in issues.columns if c.startswith("is_") and c != "is_dirty"]
    assert {"is_outlier", "is_near_duplicate", "is_exact_duplicate"} <= set(flags)
    assert set(issues.loc[~clean, "primary_reason"]) <= set(REASONS)
    assert (issues.loc[clean, "primary_reason"] == "").all()
    assert set(issues.loc[issues["duplicate_of"] >= 0, "duplicate_of"]) <= set(issues["sample_id"])

    # The outlier flag is the three sources' evidence added up; each source's excess
    # passes 1 exactly where its own flag does (pipeline.detect.combine).
    res = result.results
    assert set(OUTLIER_SOURCES) <= set(res)
    for name in OUTLIER_SOURCES:
        own = res[name].table[res[name].flag_column].to_numpy(dtype=bool)
        np.testing.assert_array_equal(res[name].excess > 1, own, err_msg=name)
    evidence = sum(np.maximum(res[name].excess, 0.0) for name in OUTLIER_SOURCES)
    np.testing.assert_allclose(issues["outlier_evidence"], np.minimum(evidence, 1e6))
    property_flag = res["image_property"].table["is_image_property_issue"].to_numpy()
    np.testing.assert_array_equal(
        issues["is_outlier"], (evidence > OUTLIER_EVIDENCE) | property_flag
    )
    assert issues["is_outlier"].any() and (issues["outlier_sources"] != "").eq(
        issues["is_outlier"]).all()  # fmt: skip
    # The ranking is that same evidence: 0.5 exactly at the flag's threshold, so the
    # samples flagged by the evidence are the lowest scores.
    score = issues["outlier_score"].to_numpy()
    np.testing.assert_allclose(score, 2.0 ** (-issues["outlier_evidence"] / OUTLIER_EVIDENCE))
    by_evidence = issues["outlier_evidence"].to_numpy() > OUTLIER_EVIDENCE
    np.testing.assert_array_equal(score < 0.5, by_evidence)
    assert score[by_evidence].max() < score[~by_evidence].min()

    noise = np.load(tmp_path / "noise_matrix.npy", allow_pickle=False)
    assert noise.shape == (small.n_classes, small.n_classes)
    np.testing.assert_allclose(noise.sum(axis=1), 1.0)
    np.testing.assert_allclose(noise, result.noise_matrix)

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["counts"]["label"] == int(issues["is_label_issue"].sum())
    assert summary["counts"]["dirty"] == summary["n_dirty"] == int(issues["is_dirty"].sum())
    assert summary["folds"] == 5 and summary["errors"] == {}
    assert 0.5 < summary["oof_accuracy"] <= 1.0
    assert summary["classifier"]["model"] == "cnn+svc"
    assert summary["noise_matrix"]["matrix"] == noise.tolist()
    assert summary["outlier_score"]["method"] == "evidence"
    assert {"label", "total", "shared:classifier"} <= set(summary["timings"])
    if "vae" in REGISTRY:
        assert (tmp_path / "vae.pt").is_file()

    # Odd images flagged as outliers are reported as such, never as label issues, and the
    # relabel policy never gives them a new label.
    odd = ground_truth(small)["is_corrupted"].to_numpy()
    flagged_odd = odd & issues["is_dirty"].to_numpy()
    assert flagged_odd.sum() >= 0.5 * odd.sum()
    assert not issues["is_label_issue"].to_numpy()[issues["is_outlier"].to_numpy()].any()
    reasons = issues["primary_reason"].to_numpy()
    assert set(reasons[flagged_odd]) <= {"outlier", "image_property", "exact_duplicate",
                                         "near_duplicate"}  # fmt: skip
    _, decisions = clean_dataset(small, issues, policy="relabel")
    relabelled = decisions["decision"].to_numpy() == "relabel"
    assert not (relabelled & odd).any()
    assert (reasons[relabelled] == "label").all()


@pytest.mark.parametrize("folds", [1, 0, 2.5, True])
def test_rejects_bad_folds(small, folds):
    with pytest.raises(ValueError, match=r"`folds` must be an integer in \[2, 50\]"):
        run_detection(small, out_dir=None, folds=folds, progress=False)


# ----------------------------------------------------------------------------- quality
@pytest.mark.slow
def test_detection_quality_on_seeded_digits(digits):
    config = InjectionConfig(
        label_noise=0.1, gaussian_noise=0.01, salt_pepper=0.01, blank=0.01, inverted=0.01,
        ood=0.01, exact_duplicates=0.02, near_duplicates=0.02,
    )  # fmt: skip
    dirty = inject(digits, config, seed=0)
    truth = ground_truth(dirty)
    result = run_detection(
        dirty, out_dir=None, seed=0, progress=False, options=QUICK, classifier={"model": "svc"}
    )
    issues = result.issues
    kind = truth["injected"].to_numpy()

    label_zone = np.isin(kind, ["clean", "label_noise"])
    flagged = issues["is_label_issue"].to_numpy()[label_zone]
    noisy = (kind == "label_noise")[label_zone]
    precision = (flagged & noisy).sum() / flagged.sum()
    recall = (flagged & noisy).sum() / noisy.sum()
    assert precision > 0.85 and recall > 0.8, (precision, recall)

    from sklearn.metrics import roc_auc_score

    corrupted = truth["is_corrupted"].to_numpy()
    zone = corrupted | (kind == "clean")
    auroc = roc_auc_score(corrupted[zone], -issues["outlier_score"].to_numpy()[zone])
    assert auroc > 0.95, auroc

    exact = kind == "exact_duplicate"
    near = kind == "near_duplicate"
    assert issues["is_exact_duplicate"].to_numpy()[exact].all()
    assert issues["is_near_duplicate"].to_numpy()[near].mean() >= 0.9
    dup_flag = issues["is_exact_duplicate"].to_numpy() | issues["is_near_duplicate"].to_numpy()
    # Blank images are near duplicates of one another; only flags elsewhere count as wrong.
    dup_flag &= ~corrupted
    assert (exact | near)[dup_flag].mean() >= 0.9
    source = truth["duplicate_source"].to_numpy()
    assert (issues["duplicate_of"].to_numpy()[exact] == source[exact]).all()


# ----------------------------------------------------------------------------- determinism
def test_same_seed_same_issues_whatever_the_worker_count(small):
    kwargs = dict(out_dir=None, seed=3, progress=False, detectors=["label", "knn_outlier"])
    a = run_detection(small, classifier={"model": "cnn", "config": TINY_CNN, "workers": 2},
                      **kwargs)  # fmt: skip
    b = run_detection(small, classifier={"model": "cnn", "config": TINY_CNN, "workers": 1},
                      **kwargs)  # fmt: skip
    pd.testing.assert_frame_equal(a.issues, b.issues)
    np.testing.assert_array_equal(a.oof.pred_probs, b.oof.pred_probs)
    c = run_detection(small, classifier={"model": "cnn", "config": TINY_CNN, "workers": 2},
                      **{**kwargs, "seed": 4})  # fmt: skip
    assert not np.array_equal(a.oof.pred_probs, c.oof.pred_probs)


# ----------------------------------------------------------------------------- isolation
def test_a_failing_detector_is_reported_and_isolated(small, monkeypatch):
    def boom(dataset, context, **_):
        raise RuntimeError("kaboom")

    def wrong_shape(dataset, context, **_):
        from assay.pipeline.detect.base import DetectorResult

        table = pd.DataFrame({"sample_id": dataset.sample_ids[:3], "is_odd_issue": True,
                              "odd_score": 0.5})  # fmt: skip
        return DetectorResult(name="odd", table=table, summary="odd")

    monkeypatch.setitem(REGISTRY, "boom", boom)
    monkeypatch.setitem(REGISTRY, "odd", wrong_shape)
    names = ["exact_duplicate", "boom", "odd", "image_property", "not_a_detector"]
    with_bad = run_detection(small, out_dir=None, detectors=names, progress=False)
    without = run_detection(
        small, out_dir=None, detectors=["exact_duplicate", "image_property"], progress=False
    )
    assert with_bad.summary["errors"]["boom"] == "RuntimeError: kaboom"
    assert "one row per sample" in with_bad.summary["errors"]["odd"]
    assert with_bad.summary["skipped"]["not_a_detector"] == "not registered"
    pd.testing.assert_frame_equal(with_bad.issues, without.issues)


def test_classifier_failure_leaves_pixel_detectors_working(small, monkeypatch):
    import assay.pipeline.detect.context as context_module

    def broken(*args, **kwargs):
        raise MemoryError("no room for a CNN")

    monkeypatch.setattr(context_module, "out_of_fold", broken)
    result = run_detection(
        small,
        out_dir=None,
        detectors=["label", "knn_outlier", "exact_duplicate", "near_duplicate"],
        progress=False,
    )
    errors = result.summary["errors"]
    assert errors["label"] == "MemoryError: no room for a CNN"
    assert "no room for a CNN" in errors["knn_outlier"]
    assert "near_duplicate" not in errors
    info = result.summary["detectors"]["near_duplicate"]["info"]
    assert "no room for a CNN" in info["datalab_error"]
    kind = small.columns["injected"].to_numpy()
    assert result.issues["is_exact_duplicate"].to_numpy()[kind == "exact_duplicate"].all()
    assert result.issues["is_near_duplicate"].to_numpy()[kind == "near_duplicate"].mean() >= 0.75
    assert not result.issues["is_label_issue"].any()
    np.testing.assert_array_equal(result.noise_matrix, np.eye(small.n_classes))
    assert result.summary["noise_matrix"]["estimated"] is False


# ----------------------------------------------------------------------------- label sets
def test_a_class_with_a_single_sample(digits):
    keep = np.flatnonzero(digits.labels != 9)[:200]
    lone = np.flatnonzero(digits.labels == 9)[:1]
    ds = digits.subset(np.concatenate([keep, lone]))
    result = run_detection(
        ds, out_dir=None, progress=False, options=QUICK,
        classifier={"config": TINY_CNN},  # auto: CNN and scikit-learn candidates
    )  # fmt: skip
    assert result.summary["errors"] == {}
    assert len(result.issues) == len(ds)
    assert result.oof.pred_probs.shape == (len(ds), 10)
    np.testing.assert_allclose(result.noise_matrix.sum(axis=1), 1.0)


def test_two_classes(digits):
    ds = digits.subset(np.flatnonzero(digits.labels < 2)[:120])
    ds = Dataset.create(ds.images, ds.labels, ["zero", "one"], source="two-classes")
    result = run_detection(
        ds, out_dir=None, progress=False, options=QUICK, classifier={"config": TINY_CNN}
    )
    assert result.summary["errors"] == {}
    assert result.noise_matrix.shape == (2, 2)
    assert result.summary["oof_accuracy"] > 0.9


def test_absent_class_and_colour_images():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 60, size=(60, 16, 16, 3), dtype=np.uint8)
    labels = np.repeat([0, 2], 30)
    images[labels == 2, 4:12, 4:12, 0] = 220  # a red square marks class 2
    ds = Dataset.create(images, labels, ["a", "b", "c"])
    config = ClassifierConfig.for_images(
        images.shape, epochs=20, widths=(8,), hidden=16, batch_size=16
    )
    result = run_detection(
        ds, out_dir=None, progress=False, options=QUICK, folds=3,
        classifier={"config": config},
    )  # fmt: skip
    assert result.summary["errors"] == {}
    assert result.noise_matrix[1].tolist() == [0.0, 1.0, 0.0]
    assert result.summary["oof_accuracy"] > 0.9


# ----------------------------------------------------------------------------- Datalab
@pytest.mark.skipif(not _datalab_available(), reason="cleanlab[datalab] is not installed")
def test_core_fallback_matches_datalab():
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(300, 16)).astype(np.float32)
    feats[10] = feats[20] + 1e-4
    labels = rng.integers(0, 3, size=300)
    labels[:4] = 3
    lab = datalab_issues(labels, feats, backend="datalab")
    core = datalab_issues(labels, feats, backend="cleanlab-core")
    for name in ("outlier", "near_duplicate", "class_imbalance"):
        np.testing.assert_array_equal(lab[name]["is_issue"], core[name]["is_issue"])
        np.testing.assert_allclose(lab[name]["score"], core[name]["score"], rtol=1e-5, atol=1e-6)
    assert lab["class_imbalance"]["is_issue"][:4].all()
    assert 0 <= lab["non_iid"]["info"]["p_value"] <= 1


# ----------------------------------------------------------------------------- folds in parallel
def test_folds_trained_one_by_one_assemble_to_out_of_fold(small, tmp_path):
    """fit_fold per fold (what parallel workers run) + assemble_oof == out_of_fold, and
    run_detection given the assembled result does not train the classifier again."""
    from assay.pipeline.detect import context as context_module
    from assay.pipeline.detect.oof import FoldResult, assemble_oof, fit_fold, out_of_fold

    whole = out_of_fold(small, n_folds=3, seed=4, device="cpu", config=TINY_CNN, workers=1)
    parts = []
    for fold in (2, 0, 1):  # any order, any process: each saved and loaded back
        fit_fold(small, fold, n_folds=3, seed=4, device="cpu", config=TINY_CNN).save(
            tmp_path / f"fold{fold}.npz"
        )
        parts.append(FoldResult.load(tmp_path / f"fold{fold}.npz"))
    merged = assemble_oof(small, parts, seed=4, config=TINY_CNN)
    assert merged.model == whole.model
    np.testing.assert_allclose(merged.pred_probs, whole.pred_probs, atol=1e-6)
    np.testing.assert_allclose(merged.ensemble_embeddings, whole.ensemble_embeddings, atol=1e-5)
    np.testing.assert_array_equal(merged.folds, whole.folds)

    with pytest.raises(ValueError, match="one result per fold"):
        assemble_oof(small, parts[:2], seed=4, config=TINY_CNN)
    with pytest.raises(ValueError, match="`fold` must be in 0..2"):
        fit_fold(small, 3, n_folds=3, seed=4, config=TINY_CNN)

    def never(*args, **kwargs):
        raise AssertionError("the classifier was trained again")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(context_module, "out_of_fold", never)
        result = run_detection(
            small, out_dir=None, seed=4, folds=3, progress=False, oof=merged,
            detectors=["label", "knn_outlier"],
        )  # fmt: skip
    assert result.summary["oof_accuracy"] == pytest.approx(whole.accuracy)


def test_label_runs_counts_runs_against_a_random_order():
    from assay.pipeline.detect.datalab import label_runs

    runs, expected = label_runs(np.array([0, 0, 1, 1, 2]))
    # P(two samples differ) = 1 - (2*1 + 2*1 + 0) / (5*4) = 0.8
    assert runs == 3 and expected == pytest.approx(1 + 4 * 0.8)
    assert label_runs(np.array([3])) == (1, 1.0)


def test_non_iid_summary_says_when_class_order_explains_it(digits):
    """Read class by class (as an image folder is), the digits look non-iid, and the
    summary names the order; the same images in their own order do not."""
    base = digits.subset(np.arange(300))
    order = np.argsort(base.labels, kind="stable")
    by_class = Dataset.create(base.images[order], base.labels[order], base.class_names)
    results = {}
    for name, ds in (("by_class", by_class), ("own", base)):
        run = run_detection(ds, out_dir=None, detectors=["non_iid"], folds=3, progress=False)
        results[name] = run.results["non_iid"]
    assert "ordered by class (10 runs of one label" in results["by_class"].summary
    assert results["by_class"].info["ordered_by_class"] is True
    assert "ordered by class" not in results["own"].summary
    assert results["own"].info["ordered_by_class"] is False
