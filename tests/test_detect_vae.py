"""VAE detector: result shape, seeded dirt found above a bar, determinism, reuse."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from assay.pipeline.dataset import Dataset
from assay.pipeline.detect.base import REGISTRY, DetectorResult
from assay.pipeline.detect.vae import LOW_MARGIN, detect_vae, deviation, score_images

FAST = {"epochs": 15}


def _digits(n: int | None = None) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * 255.0 / 16.0).astype(np.uint8)[:n]
    return Dataset.create(images, d.target[:n], source="sklearn digits")


def _dirty_digits(n: int | None = None, seed: int = 0) -> tuple[Dataset, np.ndarray]:
    """Digits with ~3 % of images replaced: constant grey, heavy noise, inverted."""
    ds = _digits(n)
    rng = np.random.default_rng(seed)
    images = ds.images.copy()
    m = max(3, len(images) // 100)
    idx = rng.choice(len(images), 3 * m, replace=False)
    images[idx[:m]] = rng.integers(30, 226, size=m).astype(np.uint8)[:, None, None]
    noisy = images[idx[m : 2 * m]] + rng.normal(0, 90, size=(m, 8, 8))
    images[idx[m : 2 * m]] = np.clip(noisy, 0, 255).astype(np.uint8)
    images[idx[2 * m :]] = 255 - images[idx[2 * m :]]
    dirty = np.zeros(len(images), dtype=bool)
    dirty[idx] = True
    return Dataset.create(images, ds.labels, sample_ids=ds.sample_ids * 2 + 5), dirty


@pytest.fixture(scope="module")
def dirty_result(tmp_path_factory):
    ds, dirty = _dirty_digits()
    out = tmp_path_factory.mktemp("vae")
    ctx = SimpleNamespace(seed=0, device="cpu", progress=False)
    return ds, dirty, REGISTRY["vae"](ds, ctx, out_dir=out, config=FAST), out


def test_result_has_the_agreed_shape(dirty_result):
    ds, _, res, _ = dirty_result
    assert isinstance(res, DetectorResult) and res.name == "vae"
    res.check(ds.sample_ids)
    t = res.table
    assert list(t.columns) == ["sample_id", "is_vae_issue", "vae_score", "vae_error"]
    assert t["is_vae_issue"].dtype == bool
    assert t["vae_score"].between(0, 1).all() and np.isfinite(t["vae_error"]).all()
    # flag iff score < 0.5 (the score is 0.5 exactly at the threshold)
    assert t["is_vae_issue"].equals(t["vae_score"] < 0.5)
    assert res.summary.startswith("vae: ") and "flagged" in res.summary
    assert res.info["k"] == 4.0 and set(res.info["reference"]) == {"log_nelbo", "log_div", "lr",
                                                                 "context"}
    assert res.info["method"] == "per_class_current_or_complexity_two_sided_or_context"


def test_injected_dirt_is_found(dirty_result):
    _, dirty, res, _ = dirty_result
    score = res.table["vae_score"].to_numpy()
    flag = res.table["is_vae_issue"].to_numpy()
    assert roc_auc_score(dirty, -score) >= 0.98
    assert flag[dirty].mean() >= 0.8  # recall at the default threshold
    assert flag[~dirty].mean() <= 0.02  # few clean digits flagged


def test_saved_model_scores_new_images_like_the_run(dirty_result):
    ds, _, res, out = dirty_result
    meta = json.loads((out / "vae.json").read_text())
    assert meta["k"] == 4.0 and meta["threshold"]["rule"] == "d > k"
    assert meta["config"]["kind"] == "mlp" and (out / "vae.pt").is_file()
    scores, flags = score_images(out, ds.images, labels=ds.labels, device="cpu")
    np.testing.assert_allclose(scores, res.table["vae_score"], rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(flags, res.table["is_vae_issue"])
    blank = np.full((2, 8, 8), 140, dtype=np.uint8)
    s, f = score_images(out, blank, device="cpu")
    assert f.all() and (s < 0.5).all()


def test_same_seed_same_result_and_context_none():
    ds, _ = _dirty_digits(400, seed=1)
    a = detect_vae(ds, None, config={"epochs": 5})
    b = detect_vae(ds, SimpleNamespace(seed=0, device="cpu", progress=False), config={"epochs": 5})
    assert a.table.equals(b.table)
    c = detect_vae(ds, SimpleNamespace(seed=1), config={"epochs": 5})
    assert not np.array_equal(c.table["vae_error"], a.table["vae_error"])


@pytest.mark.parametrize("mode", ["continue", "scratch"])
def test_two_pass_refit_runs(mode):
    ds, dirty = _dirty_digits(500, seed=2)
    res = detect_vae(ds, None, refit_drop=0.1, refit_mode=mode, config={"epochs": 6})
    assert res.info["epochs"] == [6, 2] and res.info["n_dropped_for_refit"] == 50
    res.check(ds.sample_ids)
    assert roc_auc_score(dirty, -res.table["vae_score"]) >= 0.9


def test_deviation_rule_on_hand_made_terms():
    ref = {"log_nelbo": {"median": 0.0, "scale": 1.0}, "log_div": {"median": 0.0, "scale": 0.5}}
    e = np.e
    terms = {  # nelbo = recon + kl; div = recon - entropy (kl added back in the signal)
        "nelbo": np.array([1.0, e**2, e**-5, 1.0]),
        "recon": np.array([1.0, e**2, e**-5, 1.0]),
        "kl": np.array([0.0, 0.0, 0.0, 0.0]),
        "entropy": np.array([1.0 - 1e-3, e**2 - 1e-3, 0.0, 1.0 - e**3 + 1e-3]),
    }
    d = deviation(terms, ref)
    assert d[0] == pytest.approx(0.0)  # typical: z_nelbo = 0 is the largest term
    assert d[1] == pytest.approx(2.0)  # z_nelbo = 2 beats z_div = 2 * log(2e-3) < 0
    assert d[2] == pytest.approx(5.0 - LOW_MARGIN)  # too simple: -z_nelbo - margin
    assert d[3] == pytest.approx(2 * 3.0, rel=1e-3)  # reconstruction divergence e^3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "`k` must be a positive number"),
        ({"refit_drop": 0.6}, r"`refit_drop` must be in \[0, 0.5\)"),
        ({"refit_mode": "again"}, "`refit_mode` must be 'continue' or 'scratch'"),
        ({"config": {"kind": "rnn"}}, "`kind` must be 'conv' or 'mlp'"),
    ],
)
def test_bad_options_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        detect_vae(_digits(20), None, **kwargs)


def test_score_images_needs_a_model_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="detect_vae"):
        score_images(tmp_path, np.zeros((1, 8, 8), np.uint8))


@pytest.mark.slow
def test_mnist_subset_corruptions_found(mnist_path, monkeypatch):
    from assay.pipeline import io

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # one busy-waiting-free thread on shared CPUs
    from assay.pipeline.inject import ground_truth, inject

    ds = io.load(str(mnist_path)).subset(np.arange(2000))
    dirty = inject(ds, "corrupt-5", seed=0)
    kind = ground_truth(dirty)["injected"].to_numpy().astype(str)
    bad = kind != "clean"
    res = detect_vae(dirty, SimpleNamespace(seed=0, device="cpu"), config={"epochs": 8})
    assert res.info["config"]["kind"] == "conv"
    assert roc_auc_score(bad, -res.table["vae_score"]) >= 0.95


def test_references_follow_the_classifiers_prediction_not_a_wrong_label():
    """Digits 0 and 1, a tenth of the 1s labelled 0. Against their given class the
    mislabelled 1s are the most atypical "0"s; once the out-of-fold prediction (here: the
    true class) is known they are also compared with the 1s, and are ordinary."""
    from sklearn.datasets import load_digits

    from assay.pipeline.detect.vae import predicted_classes

    d = load_digits()
    keep = np.flatnonzero(d.target < 2)
    images = np.round(d.images[keep] * 255.0 / 16.0).astype(np.uint8)
    true = d.target[keep]
    given = true.copy()
    flipped = np.flatnonzero(true == 1)[::10]
    given[flipped] = 0
    ds = Dataset.create(images, given)
    probs = np.eye(2)[true] * 0.9 + 0.05
    seen = SimpleNamespace(seed=0, device="cpu", has_oof=True, pred_probs=probs)
    np.testing.assert_array_equal(predicted_classes(seen), true)
    assert predicted_classes(SimpleNamespace(has_oof=False)) is None
    # a guess below PREDICTED_MIN_CONFIDENCE is no class: compared with the given one alone
    unsure = SimpleNamespace(has_oof=True, pred_probs=np.array(
        [[0.40, 0.35, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]))  # fmt: skip
    np.testing.assert_array_equal(predicted_classes(unsure), [-1, 1, 2])
    by_label = detect_vae(ds, SimpleNamespace(seed=0, device="cpu"), config=FAST)
    by_prediction = detect_vae(ds, seen, config=FAST)
    wrong = np.isin(np.arange(len(ds)), flipped)
    auc = {name: roc_auc_score(wrong, -res.table["vae_score"]) for name, res in
           (("label", by_label), ("prediction", by_prediction))}  # fmt: skip
    flags = {"label": by_label.table["is_vae_issue"].to_numpy()[wrong].sum(),
             "prediction": by_prediction.table["is_vae_issue"].to_numpy()[wrong].sum()}
    assert auc["label"] > 0.9  # the wrong label makes them the most atypical "0"s
    assert auc["prediction"] < 0.6  # as 1s among 1s they are nothing special
    assert flags["prediction"] == 0 and flags["label"] >= 1


def test_an_unsure_prediction_leaves_the_given_class_reference_alone():
    """``-1`` (no confident class, :func:`predicted_classes`) scores a sample against its
    given class only: the per-class deviations are those without any prediction."""
    from assay.pipeline.detect.vae import variants

    rng = np.random.default_rng(0)
    n = 60
    terms = {"nelbo": rng.uniform(50, 150, n), "recon": rng.uniform(40, 140, n),
             "entropy": rng.uniform(0, 30, n), "kl": rng.uniform(5, 15, n)}  # fmt: skip
    images = rng.integers(0, 256, size=(n, 8, 8), dtype=np.uint8)
    labels = np.repeat([0, 1, 2], n // 3)
    alone = variants(terms, images, labels)
    unsure = variants(terms, images, labels, np.full(n, -1))
    for key in alone:
        np.testing.assert_allclose(unsure[key], alone[key])
    other = variants(terms, images, labels, (labels + 1) % 3)
    assert any(not np.allclose(other[k], alone[k]) for k in alone if k.startswith("per_class_"))


@pytest.mark.slow
@pytest.mark.parametrize("family", ["speckle_noise", "shot_noise"])
def test_noise_on_the_strokes_is_found_by_the_context_term(mnist_path, family):
    """Noise on the strokes alone keeps a digit's shape, which the VAE's own terms are
    nearly blind to; the pixel context model (:mod:`pipeline.detect.pixel_context`) is not."""
    from assay.pipeline import io
    from assay.pipeline.inject.corruptions import corrupt

    ds = io.load(str(mnist_path)).subset(np.arange(2000))
    rng = np.random.default_rng(0)
    idx = rng.choice(len(ds), 100, replace=False)
    images = ds.images.copy()
    images[idx] = corrupt(images[idx], family, severity=3, seed=0)
    bad = np.isin(np.arange(len(ds)), idx)
    dirty = Dataset.create(images, ds.labels)
    res = detect_vae(dirty, SimpleNamespace(seed=0, device="cpu"), config={"epochs": 8})
    with_context = roc_auc_score(bad, -res.table["vae_score"])
    # ``arrays`` hold each variant's negated deviation (higher = more typical)
    without = roc_auc_score(bad, -res.arrays["per_class_current_or_complexity_two_sided"])
    alone = roc_auc_score(bad, -res.arrays["per_class_context"])
    # measured: speckle 0.919 against 0.511 without the term (0.961 the term alone), shot
    # noise 0.922 against 0.734 (0.938)
    assert with_context >= 0.85 and with_context > without + 0.1, (with_context, without)
    assert alone >= with_context - 0.05  # the context term is what finds them
