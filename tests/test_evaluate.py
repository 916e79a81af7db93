"""Detection metrics, feature-space GAN metrics and the judge."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score

from assay.models.judge import Judge, JudgeConfig, JudgeNet
from assay.pipeline import evaluate


# ---------------------------------------------------------------------------- detection
def test_detection_metrics_exact():
    truth = np.array([1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
    flags = np.array([1, 1, 0, 1, 0, 0, 0, 0], dtype=bool)
    scores = np.array([0.1, 0.2, 0.3, 0.25, 0.9, 0.8, 0.7, 0.6])  # lower = more suspect
    m = evaluate.detection_metrics(truth, flags, scores)
    assert (m["tp"], m["fp"], m["fn"]) == (2, 1, 1)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    # ranking by 1 - score: 0.1, 0.2 (true), 0.25 (false), 0.3 (true), then the rest
    assert m["auroc"] == pytest.approx(14 / 15)
    assert m["auprc"] == pytest.approx((1 + 1 + 3 / 4) / 3)


def test_detection_metrics_undefined_cases():
    m = evaluate.detection_metrics(np.zeros(4, bool), np.zeros(4, bool), np.full(4, 0.5))
    assert m["precision"] is None and m["recall"] is None and m["auroc"] is None
    with pytest.raises(ValueError, match="equal length"):
        evaluate.detection_metrics(np.zeros(3, bool), np.zeros(4, bool))


def test_detection_table_matches_detectors_to_truth():
    issues = pd.DataFrame(
        {
            "sample_id": [10, 11, 12, 13],
            "is_label_issue": [True, False, False, False],
            "label_score": [0.1, 0.9, 0.8, 0.7],
            "is_outlier": [False, False, True, False],
            "outlier_score": [0.9, 0.9, 0.1, 0.8],
            "is_dirty": [True, False, True, False],
        }
    )
    truth = pd.DataFrame(
        {
            "sample_id": [13, 12, 11, 10],
            "is_label_noise": [False, False, True, True],
            "is_corrupted": [False, True, False, False],
            "is_duplicate": [False] * 4,
            "is_dirty": [False, True, True, True],
        }
    )
    table = evaluate.detection_table(issues, truth).set_index("detector")
    assert list(table.index) == ["label", "outlier", "dirty"]
    assert table.loc["label", "precision"] == 1.0 and table.loc["label", "recall"] == 0.5
    assert table.loc["outlier", "f1"] == 1.0 and table.loc["outlier", "auroc"] == 1.0
    assert table.loc["dirty", "tp"] == 2 and table.loc["dirty", "fn"] == 1


# ---------------------------------------------------------------------------- features
def test_fid_of_a_set_with_itself_is_zero_and_grows_with_noise():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(500, 16)) @ rng.normal(size=(16, 16))
    assert evaluate.fid_from_features(feats, feats) == pytest.approx(0.0, abs=1e-6)
    fids = [
        evaluate.fid_from_features(feats, feats + rng.normal(scale=s, size=feats.shape))
        for s in (0.1, 0.5, 1.0, 2.0)
    ]
    assert all(a < b for a, b in zip(fids, fids[1:], strict=False)), fids
    assert fids[0] > 1e-4


def test_fid_matches_the_closed_form_for_shifted_gaussians():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(4000, 4))
    b = a + np.array([3.0, 0.0, 0.0, 0.0])  # same covariance, mean shifted by 3
    assert evaluate.fid_from_features(a, b) == pytest.approx(9.0, rel=1e-6)


def test_kid_and_precision_recall():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(300, 8))
    kid, _ = evaluate.kid_from_features(feats, feats, subset_size=100)
    far_kid, _ = evaluate.kid_from_features(feats, feats + 5.0, subset_size=100)
    assert abs(kid) < 0.1 and far_kid > 10.0
    assert evaluate.kid_from_features(feats, feats, subset_size=100)[0] == kid  # seeded
    p, r = evaluate.precision_recall(feats, feats, k=3)
    assert (p, r) == (1.0, 1.0)
    p, r = evaluate.precision_recall(feats, feats + 100.0, k=3)
    assert (p, r) == (0.0, 0.0)
    # fakes collapsed onto one real point: all inside the real manifold, recall tiny
    p, r = evaluate.precision_recall(feats, np.repeat(feats[:1], 50, axis=0) + 1e-4, k=3)
    assert p == 1.0 and r < 0.1
    with pytest.raises(ValueError, match="more than 3 samples"):
        evaluate.precision_recall(feats[:3], feats, k=3)


# ---------------------------------------------------------------------------- judge
@pytest.fixture(scope="module")
def digits():
    bunch = load_digits()
    images = np.round(bunch.images * 255.0 / 16.0).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(labels))
    train, test = order[:1200], order[1200:]
    return images[train], labels[train], images[test], labels[test]


@pytest.fixture(scope="module")
def judge(digits):
    x, y, _, _ = digits
    return Judge(device="cpu", seed=0, epochs=4, min_steps=300).fit(x, y)


def test_judge_learns_digits(judge, digits):
    _, _, xt, yt = digits
    assert judge.score(xt, yt) > 0.9
    assert judge.features(xt).shape == (len(xt), judge.config_.feature_dim)
    proba = judge.predict_proba(xt)
    assert proba.shape == (len(xt), 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)


def test_label_accuracy_of_real_images_is_the_judges_accuracy(judge, digits):
    _, _, xt, yt = digits
    expected = accuracy_score(yt, judge.predict(xt))
    assert evaluate.label_accuracy(judge, xt, yt) == pytest.approx(expected)
    scores = evaluate.score_samples(judge, xt, yt, xt, yt, cas_images=xt, cas_labels=yt, seed=0)
    metrics = scores.metrics
    assert scores.correct.shape == (len(xt),) and scores.cas_correct.shape == (len(yt),)
    assert metrics["label_accuracy"] == pytest.approx(expected)
    assert metrics["fid"] == pytest.approx(0.0, abs=1e-3)
    assert metrics["precision"] == 1.0 and metrics["recall"] == 1.0


def test_judge_fid_grows_with_pixel_noise(judge, digits):
    _, _, xt, _ = digits
    rng = np.random.default_rng(0)
    fids = []
    for scale in (10, 40, 120):
        noisy = np.clip(xt + rng.normal(scale=scale, size=xt.shape), 0, 255).astype(np.uint8)
        fids.append(evaluate.judge_fid(judge, xt, noisy))
    assert evaluate.judge_fid(judge, xt, xt) == pytest.approx(0.0, abs=1e-3)
    assert fids[0] < fids[1] < fids[2], fids


def test_judge_save_load_round_trip(judge, digits, tmp_path):
    _, _, xt, _ = digits
    judge.save(tmp_path / "judge.pt")
    back = Judge.load(tmp_path / "judge.pt")
    np.testing.assert_allclose(back.predict_proba(xt), judge.predict_proba(xt), atol=1e-6)


def test_judge_budget_follows_min_steps_up_to_max_epochs(digits):
    x, y, _, _ = digits
    small = Judge(device="cpu", seed=0, epochs=1, min_steps=40, max_epochs=6).fit(x[:64], y[:64])
    assert (small.epochs_, small.steps_) == (6, 6)  # one batch per pass; capped at 6 passes
    seen: list[tuple[int, int]] = []
    larger = Judge(device="cpu", seed=0, epochs=1, min_steps=40, max_epochs=6).fit(
        x[:640], y[:640], on_epoch=lambda done, epochs: seen.append((done, epochs))
    )
    assert (larger.epochs_, larger.steps_) == (4, 40)  # 10 batches per pass reach min_steps
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]  # the progress hook, once per epoch


def test_judge_config_is_sized_from_the_image():
    assert JudgeConfig.for_data((28, 28), 10).image_shape == (1, 28, 28)
    assert JudgeConfig.for_data((32, 32, 3), 10).image_shape == (3, 32, 32)
    # from 48 px a stride-2 stem: a 64 px judge has the 32 px judge's blocks (4x4 last map)
    small, large = JudgeConfig.for_data((32, 32, 3), 10), JudgeConfig.for_data((64, 64, 3), 10)
    assert (small.stem_stride, large.stem_stride) == (1, 2)
    blocks = [sum(isinstance(m, torch.nn.MaxPool2d) for m in JudgeNet(c).body)
              for c in (small, large)]  # fmt: skip
    assert blocks == [3, 3]
    assert JudgeNet(large).features(torch.zeros(2, 3, 64, 64)).shape == (2, 128)
    with pytest.raises(ValueError, match="`width` must be a positive integer"):
        JudgeConfig((1, 8, 8), 10, width=0)


def test_detection_by_kind_counts_what_is_dirty_caught():
    issues = pd.DataFrame({"sample_id": [0, 1, 2, 3, 4, 5],
                           "is_dirty": [True, False, True, True, False, True]})
    truth = pd.DataFrame({"sample_id": [5, 4, 3, 2, 1, 0],
                          "injected": ["clean", "clean", "blank", "blank", "label_noise",
                                       "label_noise"]})
    out = evaluate.detection_by_kind(issues, truth)
    assert out["kind"].tolist() == ["blank", "label_noise", "clean"]
    assert out["n"].tolist() == [2, 2, 2]
    assert out["flagged"].tolist() == [2, 1, 1]
    np.testing.assert_allclose(out["share"], [1.0, 0.5, 0.5])
    with pytest.raises(ValueError, match="same sample ids"):
        evaluate.detection_by_kind(issues.iloc[:3], truth)
