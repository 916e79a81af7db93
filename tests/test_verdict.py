"""The verdict: helped / hurt only beyond the uncertainty, a quality floor, honest estimators."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import make_tiny_dataset

from assay.pipeline import evaluate
from assay.pipeline.generate import compare_gans
from assay.pipeline.runfolder import RunFolder
from assay.pipeline.verdict import QUALITY_MARGIN, Verdict, compare_arms, compute_verdict


# ---------------------------------------------------------------------------- the decision
def _arm(p: float, *, seeds: int = 3, n: int = 160, spread: float = 0.02, seed: int = 0) -> dict:
    """The real interval code on ``seeds`` x ``n`` judged samples, right with probability
    ``p`` (moved by up to ``spread`` between seeds, as training seeds move it)."""
    rng = np.random.default_rng(seed)
    p_seed = np.clip(p + rng.uniform(-spread, spread, seeds), 0, 1)
    correct = rng.random((seeds, n)) < p_seed[:, None]
    interval = evaluate.metric_interval(
        correct.mean(axis=1).tolist(), evaluate.bootstrap_accuracy(correct, seed=seed)
    )
    assert interval is not None
    return interval


def test_equal_arms_are_no_clear_difference():
    for seed in range(5):
        c = compare_arms(_arm(0.9, seed=seed), _arm(0.9, seed=100 + seed), floor=0.7)
        assert c.outcome == "no_clear_difference", (seed, c)
        assert abs(c.difference) <= c.half_width


def test_a_large_difference_helps_and_its_reverse_hurts():
    dirty, clean = _arm(0.55, seed=1), _arm(0.95, seed=2)
    c = compare_arms(dirty, clean, floor=0.7)
    assert c.outcome == "helped"
    assert c.difference - c.half_width > 0  # the interval excludes zero
    assert compare_arms(clean, dirty, floor=0.7).outcome == "hurt"
    # lower-is-better metrics (FID) flip the direction
    assert compare_arms(dirty, clean, floor=None, higher_is_better=False).outcome == "hurt"


def test_arms_below_the_floor_are_too_short_to_judge():
    c = compare_arms(_arm(0.12, seed=3), _arm(0.30, seed=4), floor=0.72)
    assert c.outcome == "too_short_to_judge"
    # the same values without a floor would have been called
    assert compare_arms(_arm(0.12, seed=3), _arm(0.30, seed=4), floor=None).outcome == "helped"


def test_one_seed_uses_the_bootstrap_alone():
    one = _arm(0.8, seeds=1)
    assert one["seed_std"] is None and one["df"] is None
    assert one["half_width"] == pytest.approx(1.959964 * one["bootstrap_se"], rel=1e-5)
    three = _arm(0.8, seeds=3)
    assert three["df"] == 2 and three["se"] >= three["bootstrap_se"]
    assert evaluate.metric_interval([0.5, None]) is None
    assert evaluate.metric_interval([0.5, float("nan")]) is None  # not measured


def test_frechet_distance_matches_torchmetrics():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 8)), rng.normal(size=(200, 8)) * 1.3 + 0.2
    assert evaluate.frechet_distance(a, b) == pytest.approx(evaluate.fid_from_features(a, b),
                                                            rel=1e-6)  # fmt: skip


def test_fid_and_kid_only_where_meaningful():
    assert not evaluate.fid_is_meaningful(100, 100, 64)
    assert evaluate.fid_is_meaningful(128, 160, 64)
    assert evaluate.kid_subset_size(160, 160) == 80  # subsets of half: they differ
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="smaller than each set"):
        evaluate.kid_from_features(rng.normal(size=(20, 4)), rng.normal(size=(20, 4)),
                                   subset_size=20)  # fmt: skip
    assert evaluate.bootstrap_fid(rng.normal(size=(50, 64)), [rng.normal(size=(50, 64))]) is None


# ---------------------------------------------------------------------------- real runs
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> RunFolder:
    """The real generate stage, two seeds per arm, a few steps, cleaned == dirty."""
    dataset = make_tiny_dataset(40)  # 3 classes of bars: the judge learns them at once
    issues = pd.DataFrame({"sample_id": dataset.sample_ids, "is_dirty": False})
    run = RunFolder(tmp_path_factory.mktemp("run") / "run")
    compare_gans(
        dataset, dataset, issues, noise_matrix=None, out_dir=run.paths.gan, steps=3, seeds=2,
        device="cpu", progress=False, arms=("dirty", "clean"), grid_columns=2,
        gan_options={"width": 4, "z_dim": 8, "batch_size": 16, "log_every": 1},
        judge_options={"epochs": 1, "min_steps": 60},
    )  # fmt: skip
    return run


def test_metrics_carry_seeds_and_intervals(tiny_run: RunFolder):
    metrics = tiny_run.gan_metrics().model_dump()
    assert metrics["train_seeds"] == [0, 1000]
    for arm in ("dirty", "clean"):
        m = metrics["arms"][arm]
        assert m["seeds"] == [0, 1000] and len(m["seed_metrics"]["label_accuracy"]) == 2
        la = m["uncertainty"]["label_accuracy"]
        assert la["n_seeds"] == 2 and la["bootstrap_se"] > 0 and la["half_width"] > 0
        assert m["label_accuracy"] == pytest.approx(np.mean(m["seed_metrics"]["label_accuracy"]))
        # a dozen judged images: FID and KID would mean nothing, so they are not shown
        assert m["n_judged"] < 50 and m["fid"] is None and m["kid"] is None
        assert m["uncertainty"]["fid"] is None
    assert metrics["reference"]["fid"] is None and metrics["reference"]["kid"] is None


def test_a_few_steps_are_too_short_to_judge(tiny_run: RunFolder):
    metrics = tiny_run.gan_metrics().model_dump()
    judge = metrics["reference"]["label_accuracy"]
    assert judge - QUALITY_MARGIN > max(
        metrics["arms"][a]["label_accuracy"] for a in ("dirty", "clean")
    ), "the tiny GAN must stay below the floor for this test to mean anything"
    verdict = compute_verdict(tiny_run)
    assert verdict.outcome == "too_short_to_judge" and verdict.tone == "neutral"
    assert verdict.headline.startswith("Too short to judge the GAN")
    assert verdict.floor == pytest.approx(judge - QUALITY_MARGIN)
    assert Verdict.model_validate_json(verdict.model_dump_json()) == verdict
    assert any("the detect stage has not run" in p for p in verdict.points)


def test_equal_arms_of_a_real_run_are_no_clear_difference(tiny_run: RunFolder):
    verdict = compute_verdict(tiny_run, margin=1.0)  # floor off: judge the tiny GANs anyway
    assert verdict.outcome == "no_clear_difference"
    assert verdict.difference == pytest.approx(0.0)  # same data, same seeds, same numbers
    assert verdict.uncertainty > 0
    assert verdict.headline.startswith("No clear difference in the GAN (±")
    assert verdict.seeds == 2 and verdict.metric == "label_accuracy"


def test_a_run_without_gan_metrics_is_not_compared(tmp_path):
    verdict = compute_verdict(RunFolder(tmp_path / "empty"))
    assert verdict.outcome == "not_compared"
    assert verdict.headline == "This run folder holds no results yet."
