"""The trusted split and the GAN comparison stage."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from assay.pipeline.dataset import Dataset
from assay.pipeline.errors import DataError
from assay.pipeline.gan_figures import grid_image
from assay.pipeline.generate import ARMS, compare_gans
from assay.pipeline.noise_transition import transition_for_training, transition_from_noise_matrix
from assay.pipeline.split import stratified_take, trusted_split


# ---------------------------------------------------------------------------- split
def _toy(n_per_class: int = 40, k: int = 4, *, injected: bool = True) -> Dataset:
    rng = np.random.default_rng(1)
    n = n_per_class * k
    images = rng.integers(0, 256, size=(n, 8, 8), dtype=np.uint8)
    labels = np.repeat(np.arange(k), n_per_class)
    ds = Dataset.create(images, labels, sample_ids=np.arange(100, 100 + n))
    if injected:
        ds = ds.with_columns(injected=np.where(np.arange(n) % 2 == 0, "clean", "label_noise"))
    return ds


def test_stratified_take_keeps_proportions():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    taken, rest = stratified_take(labels, 10, rng=np.random.default_rng(0))
    assert np.bincount(labels[taken]).tolist() == [5, 3, 2]
    assert sorted(np.concatenate([taken, rest]).tolist()) == list(range(100))


def test_split_from_injected_clean_samples():
    ds = _toy()
    split = trusted_split(ds, fraction=0.25, test_fraction=0.25, seed=0)
    assert split.source == "injected" and split.pool_size == 80
    trusted = split.trusted
    assert trusted.size == 40 and np.unique(trusted).size == 40
    assert split.judge_test.size == 10 and split.judge_train.size == 30
    pos = np.searchsorted(ds.sample_ids, trusted)
    assert (ds.columns["injected"].to_numpy()[pos] == "clean").all()
    assert np.bincount(ds.labels[pos]).tolist() == [10, 10, 10, 10]  # stratified
    rest = split.exclude(ds)
    assert len(rest) == len(ds) - 40 and not np.isin(rest.sample_ids, trusted).any()
    assert split.train_set(ds).sample_ids.tolist() == split.judge_train.tolist()
    again = trusted_split(ds, fraction=0.25, test_fraction=0.25, seed=0)
    np.testing.assert_array_equal(again.judge_train, split.judge_train)
    other = trusted_split(ds, fraction=0.25, test_fraction=0.25, seed=1)
    assert not np.array_equal(other.judge_train, split.judge_train)


def test_split_from_detection_when_no_injection():
    ds = _toy(injected=False)
    dirty = np.arange(len(ds)) % 4 == 0
    issues = pd.DataFrame({"sample_id": ds.sample_ids, "is_dirty": dirty})
    split = trusted_split(ds, issues, fraction=0.5, seed=0)
    assert split.source == "detection"
    assert not dirty[np.searchsorted(ds.sample_ids, split.trusted)].any()
    assert split.trusted.size == 80
    assert trusted_split(_toy(), fraction=0.9, seed=0).trusted.size == 80  # capped by the pool


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fraction": 0.0}, r"`fraction` must be in \(0, 1\)"),
        ({"fraction": 1.0}, r"`fraction` must be in \(0, 1\)"),
        ({"test_fraction": 1.5}, r"`test_fraction` must be in \(0, 1\)"),
    ],
)
def test_split_bad_fractions(kwargs, match):
    with pytest.raises(DataError, match=match):
        trusted_split(_toy(), **kwargs)


def test_split_needs_a_way_to_tell_clean_samples():
    with pytest.raises(DataError, match="pass the detection table"):
        trusted_split(_toy(injected=False))


# ---------------------------------------------------------------------------- transition
def test_transition_from_noise_matrix_in_either_convention():
    t = np.array([[0.9, 0.1], [0.3, 0.7]])  # T[y, s] = P(given s | true y); rows sum to 1
    np.testing.assert_allclose(transition_from_noise_matrix(t), t)
    np.testing.assert_allclose(transition_from_noise_matrix(t.T), t)  # cleanlab's layout
    with pytest.raises(DataError, match="must sum to 1"):
        transition_from_noise_matrix(np.array([[0.5, 0.1], [0.3, 0.2]]))
    with pytest.raises(DataError, match=r"must be a \(K, K\) array"):
        transition_from_noise_matrix(np.ones((2, 3)) / 2)


def test_transition_for_training_takes_held_out_clean_samples_off_the_diagonal():
    t = np.array([[0.8, 0.2], [0.2, 0.8]])
    observed = np.repeat([0, 1], 100)  # 100 true per class -> joint [[80, 20], [20, 80]]
    removed = np.zeros(40, dtype=int)  # 40 clean samples of class 0 held out
    out = transition_for_training(t, observed, removed)
    np.testing.assert_allclose(out, [[40 / 60, 20 / 60], [0.2, 0.8]], atol=1e-9)
    np.testing.assert_allclose(transition_for_training(t, observed, []), t, atol=1e-9)


def test_grid_image_tiles_rows_and_columns():
    tiles = np.arange(6, dtype=np.uint8).repeat(4).reshape(6, 2, 2) * 10
    grid = grid_image(tiles, 2, 3, pad=1)
    assert grid.shape == (2 * 3 + 1, 3 * 3 + 1)
    assert grid[1, 1] == 0 and grid[1, 4] == 10 and grid[4, 1] == 30 and grid[4, 7] == 50
    assert grid[0, 0] == 96  # padding


# ---------------------------------------------------------------------------- the stage
@pytest.fixture(scope="module")
def digits_pair() -> tuple[Dataset, Dataset, pd.DataFrame, np.ndarray]:
    bunch = load_digits()
    images = np.round(bunch.images * 255.0 / 16.0).astype(np.uint8)
    true = bunch.target.astype(np.int64)
    rng = np.random.default_rng(0)
    flip = rng.random(true.size) < 0.3
    given = true.copy()
    given[flip] = (true[flip] + rng.integers(1, 10, flip.sum())) % 10
    dirty = Dataset.create(images, given, [str(i) for i in range(10)]).with_columns(
        injected=np.where(flip, "label_noise", "clean"), true_label=true
    )
    issues = pd.DataFrame({"sample_id": dirty.sample_ids, "is_dirty": flip})
    cleaned = dirty.subset(~flip)
    nm = np.zeros((10, 10))
    np.add.at(nm, (true, given), 1.0)
    nm /= nm.sum(axis=1, keepdims=True)  # T[true, given], as detection writes it
    return dirty, cleaned, issues, nm


def test_compare_gans_end_to_end(digits_pair, tmp_path):
    dirty, cleaned, issues, nm = digits_pair
    lines: list[str] = []
    metrics = compare_gans(
        dirty,
        cleaned,
        issues,
        noise_matrix=nm,
        out_dir=tmp_path / "gan",
        steps=12,
        device="cpu",
        seed=0,
        seeds=2,
        log=lines.append,
        grid_columns=4,
        gan_options={"width": 8, "z_dim": 16, "batch_size": 32, "log_every": 4},
        judge_options={"epochs": 1, "min_steps": 20},
    )
    out = tmp_path / "gan"
    stored = json.loads((out / "metrics.json").read_text())
    assert stored["arms_run"] == list(ARMS) == list(metrics["arms"])
    for arm in ARMS:
        m = stored["arms"][arm]
        for key in ("label_accuracy", "fid", "kid", "precision", "recall", "cas"):
            assert isinstance(m[key], float) and np.isfinite(m[key]), (arm, key)
        assert m["steps"] == 12 and m["device"] == "cpu" and m["images_per_second"] > 0
        assert m["seeds"] == [0, 1000] and len(m["seconds_per_seed"]) == 2
        la = m["uncertainty"]["label_accuracy"]
        assert la["n_seeds"] == 2 and la["low"] <= m["label_accuracy"] <= la["high"]
        assert m["uncertainty"]["fid"]["bootstrap_se"] > 0  # 160 judged images: FID shown
        assert 0.0 <= m["label_accuracy"] <= 1.0
        picture = Image.open(out / f"samples_{arm}.png")
        assert picture.size[1] > picture.size[0]  # 10 class rows, 4 columns
        assert (out / m["checkpoint"]).exists()
    # no arm trains on the trusted slice
    n_trusted = stored["split"]["n_judge_train"] + stored["split"]["n_judge_test"]
    assert stored["arms"]["dirty"]["n_train"] == len(dirty) - n_trusted
    assert stored["arms"]["clean"]["n_train"] == len(cleaned) - n_trusted
    assert stored["arms"]["dirty"]["train_label_noise"] > 0.3  # clean samples were held out
    assert stored["arms"]["clean"]["train_label_noise"] == 0.0
    t = np.array(stored["transition"])
    np.testing.assert_allclose(t.sum(axis=1), 1.0, atol=1e-5)
    assert np.diag(t).mean() < np.diag(transition_from_noise_matrix(nm)).mean()
    assert 0.0 <= stored["reference"]["label_accuracy"] <= 1.0
    losses = pd.read_csv(out / "losses.csv")
    assert sorted(losses["arm"].unique()) == sorted(ARMS)
    assert len(losses) == 3 * 3  # steps 4, 8, 12 per arm
    for name in ("comparison.png", "loss_curves.png", "losses.json", "judge.pt"):
        assert (out / name).exists(), name
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert any(line.startswith("[gan] judge epochs") and "(100%)" in line for line in lines)
    assert any("judge trained" in line for line in lines)


def test_arms_trained_separately_match_compare_gans(digits_pair, tmp_path):
    """prepare_comparison + train_arm per arm (any order, own folders, what parallel
    workers run) + finish_comparison gives the metrics of compare_gans."""
    from assay.pipeline.generate import finish_comparison, prepare_comparison, train_arm

    dirty, cleaned, issues, nm = digits_pair
    opts = {"gan_options": {"width": 8, "z_dim": 16, "batch_size": 32, "log_every": 4},
            "judge_options": {"epochs": 1, "min_steps": 20}, "grid_columns": 4}  # fmt: skip
    common = {"noise_matrix": nm, "steps": 8, "device": "cpu", "seed": 3, "seeds": 2,
              "progress": False}  # fmt: skip
    whole = compare_gans(dirty, cleaned, issues, out_dir=tmp_path / "whole", **common, **opts)
    plan = prepare_comparison(dirty, cleaned, issues, out_dir=tmp_path / "plan", **common, **opts)
    assert plan["arms"] == list(ARMS)
    for arm in reversed(plan["arms"]):
        train_arm(arm, dirty, cleaned, plan_dir=tmp_path / "plan", out_dir=tmp_path / arm,
                  steps=8, device="cpu", seed=3, progress=False)  # fmt: skip
    parts = finish_comparison(tmp_path / "plan", {a: tmp_path / a for a in ARMS},
                              out_dir=tmp_path / "gathered")  # fmt: skip
    for arm in ARMS:
        for key in ("label_accuracy", "fid", "precision", "recall", "cas"):
            assert parts["arms"][arm][key] == pytest.approx(whole["arms"][arm][key], abs=1e-6)
    assert parts["reference"] == whole["reference"]
    assert (tmp_path / "gathered" / "comparison.png").exists()
    with pytest.raises(DataError, match="was made for steps=8"):
        train_arm("dirty", dirty, cleaned, plan_dir=tmp_path / "plan", out_dir=tmp_path / "x",
                  steps=9, device="cpu", seed=3, progress=False)  # fmt: skip
    with pytest.raises(DataError, match="No trained result"):
        finish_comparison(tmp_path / "plan", {"dirty": tmp_path / "dirty"},
                          out_dir=tmp_path / "y")  # fmt: skip


def test_plan_without_steps_takes_the_configs_budget(digits_pair, tmp_path):
    """steps=None: the plan records the GAN config's budget for the data and the device,
    and an arm asked for another count is refused."""
    from assay.models.gan import GANConfig
    from assay.pipeline.generate import prepare_comparison, train_arm

    dirty, cleaned, issues, nm = digits_pair
    plan = prepare_comparison(dirty, cleaned, issues, noise_matrix=nm, out_dir=tmp_path / "plan",
                              steps=None, device="cpu", seed=0, seeds=1, progress=False,
                              judge_options={"epochs": 1, "min_steps": 10})  # fmt: skip
    budget = GANConfig.for_data(dirty.image_shape, dirty.n_classes, device="cpu").steps
    assert plan["steps"] == plan["gan_config"]["steps"] == budget
    with pytest.raises(DataError, match=f"was made for steps={budget}"):
        train_arm("dirty", dirty, cleaned, plan_dir=tmp_path / "plan", out_dir=tmp_path / "x",
                  steps=budget + 1, device="cpu", seed=0, progress=False)  # fmt: skip


def test_compare_gans_without_noise_matrix_skips_that_arm(digits_pair, tmp_path):
    dirty, cleaned, issues, _ = digits_pair
    metrics = compare_gans(
        dirty,
        cleaned,
        issues,
        noise_matrix=None,
        out_dir=tmp_path,
        steps=2,
        seeds=1,
        device="cpu",
        progress=False,
        arms=("clean", "noise_aware"),
        grid_columns=2,
        gan_options={"width": 4, "z_dim": 8, "batch_size": 16, "log_every": 1},
        judge_options={"epochs": 1, "min_steps": 10},
    )
    assert metrics["arms_run"] == ["clean"]
    assert "noise_aware" in metrics["skipped"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"arms": ("dirty", "sparkly")}, "`arms` must be a non-empty subset"),
        ({"steps": 0}, r"`steps` must be an integer in \[1, "),
    ],
)
def test_compare_gans_bad_options(digits_pair, tmp_path, kwargs, match):
    dirty, cleaned, issues, nm = digits_pair
    options = {"steps": 1, **kwargs}
    with pytest.raises(DataError, match=match):
        compare_gans(dirty, cleaned, issues, noise_matrix=nm, out_dir=tmp_path, **options)


def test_compare_gans_needs_matching_datasets(digits_pair, tmp_path):
    dirty, cleaned, issues, nm = digits_pair
    other = Dataset.create(cleaned.images, cleaned.labels, [f"c{i}" for i in range(10)])
    with pytest.raises(DataError, match="same class names"):
        compare_gans(dirty, other, issues, noise_matrix=nm, out_dir=tmp_path, steps=1)
