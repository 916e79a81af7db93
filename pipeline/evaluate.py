"""Measure how good things are: detections against ground truth, GANs against real data.

Detection
---------
:func:`detection_metrics` scores one detector's flags and scores against a ground-truth
mask (precision, recall, F1, AUROC, AUPRC with ``sklearn.metrics``); :func:`detection_table`
does it for every detector of an ``issues`` table against :func:`pipeline.inject.ground_truth`;
:func:`detection_by_kind` counts what ``is_dirty`` caught of each injected kind. These are
the project's one set of detection metrics: the report and the benchmarks use them.
Scores follow cleanlab's convention (LOWER = MORE LIKELY AN ISSUE), so ``1 - score`` ranks.

GANs
----
Everything is measured in the space of a *judge*, a classifier trained on trusted real data
(:mod:`models.judge`), against a held-out real set:

``fid``             Fréchet distance of judge features (torchmetrics'
                    ``FrechetInceptionDistance`` with the judge as its ``feature`` module).
``kid``             kernel inception distance, same features (mean and std over subsets).
``label_accuracy``  GAN-test: the judge's accuracy on conditional samples (does a sample
                    asked for class ``y`` look like ``y``?).
``cas``             GAN-train / classification accuracy score: a fresh classifier of the
                    judge's architecture trained only on generated samples, tested on the
                    real held-out set.
``precision``,      k-NN manifold precision and recall (Kynkäänniemi et al., 2019) with
``recall``          ``k = 3``: the share of generated samples inside the real manifold, and
                    of real samples inside the generated one.
``vae_flag_rate``   the share of generated samples the detection stage's VAE flags as dirty.

FID and KID are reported only where their estimators mean something, otherwise ``None``:
FID needs at least :data:`FID_SAMPLES_PER_DIM` samples per feature dimension in each set
(below that the covariance estimate is dominated by noise and FID mostly measures the
sample size); KID is averaged over subsets of half the smaller set (so the subsets differ)
and needs subsets of at least :data:`KID_MIN_SUBSET`.

Uncertainty
-----------
Each metric of an arm is the mean over several training seeds. :func:`metric_interval`
combines the spread between seeds with a bootstrap over the judged samples
(:func:`bootstrap_accuracy`, :func:`bootstrap_fid`) into a standard error and an
interval; :func:`difference_interval` does the same for the difference of two arms.

Shapes: images uint8 ``(N, H, W[, C])``; labels int64 ``(N,)``; features float ``(N, D)``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats
from sklearn import metrics as skm
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from assay.models.device import seeded_global_rng
from assay.models.judge import Judge, JudgeConfig
from assay.pipeline import artifacts

# ---------------------------------------------------------------------------- detection

#: detector name -> (flag column or outlier source, score column or None, ground-truth
#: column). An outlier source's flags are read from ``outlier_sources``.
DETECTOR_TRUTH: dict[str, tuple[str, str | None, str]] = {
    "label": ("is_label_issue", "label_score", "is_label_noise"),
    "outlier": ("is_outlier", "outlier_score", "is_corrupted"),
    "vae": ("vae", "vae_score", "is_corrupted"),
    "exact_duplicate": ("is_exact_duplicate", None, "is_duplicate"),
    "near_duplicate": ("is_near_duplicate", None, "is_duplicate"),
    "dirty": ("is_dirty", None, "is_dirty"),
}


def detection_metrics(
    truth: np.ndarray, flags: np.ndarray, scores: np.ndarray | None = None
) -> dict[str, float | int | None]:
    """Quality of one detector against ground truth.

    Parameters
    ----------
    truth : bool ``(N,)``, True where the sample really has the issue.
    flags : bool ``(N,)``, True where the detector flagged it.
    scores : float ``(N,)`` or None; LOWER = MORE LIKELY AN ISSUE.

    Returns
    -------
    dict
        ``n``, ``n_true``, ``n_flagged``, ``tp``, ``fp``, ``fn``, ``precision``, ``recall``,
        ``f1`` and, with scores and both classes present, ``auroc`` and ``auprc``
        (average precision); ``None`` where undefined.
    """
    truth = np.asarray(truth, dtype=bool)
    flags = np.asarray(flags, dtype=bool)
    if truth.shape != flags.shape or truth.ndim != 1:
        raise ValueError(
            f"`truth` and `flags` must be 1-D and of equal length. "
            f"Got {truth.shape} and {flags.shape} instead."
        )
    tp = int(np.sum(truth & flags))
    fp = int(np.sum(~truth & flags))
    fn = int(np.sum(truth & ~flags))
    out: dict[str, float | int | None] = {
        "n": int(truth.size),
        "n_true": int(truth.sum()),
        "n_flagged": int(flags.sum()),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": float(skm.precision_score(truth, flags, zero_division=0.0))
        if flags.any()
        else None,
        "recall": float(skm.recall_score(truth, flags, zero_division=0.0)) if truth.any() else None,
        "f1": float(skm.f1_score(truth, flags, zero_division=0.0))
        if (truth.any() or flags.any())
        else None,
        "auroc": None,
        "auprc": None,
    }
    if scores is not None:
        scores = np.asarray(scores, dtype=float)
        if scores.shape != truth.shape:
            raise ValueError(f"`scores` must have shape {truth.shape}. Got {scores.shape}.")
        if 0 < truth.sum() < truth.size:
            rank = 1.0 - scores  # higher = more likely an issue
            out["auroc"] = float(skm.roc_auc_score(truth, rank))
            out["auprc"] = float(skm.average_precision_score(truth, rank))
    return out


def detection_table(issues: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """:func:`detection_metrics` for each detector of :data:`DETECTOR_TRUTH` present.

    Parameters
    ----------
    issues : the detection table (``sample_id`` + flag/score columns).
    truth : :func:`pipeline.inject.ground_truth` output (``sample_id`` + ``is_*`` columns).

    Returns
    -------
    pandas.DataFrame
        One row per detector: ``detector``, ``truth`` (ground-truth column) and the metrics.
    """
    merged = issues.merge(truth, on="sample_id", how="inner", suffixes=("", "_truth"))
    if len(merged) != len(truth):
        raise ValueError("`issues` and `truth` must cover the same sample ids.")
    rows = []
    for name, (flag_col, score_col, truth_col) in DETECTOR_TRUTH.items():
        truth_key = f"{truth_col}_truth" if truth_col in issues.columns else truth_col
        if truth_key not in merged.columns:
            continue
        if flag_col in artifacts.OUTLIER_SOURCES and "outlier_sources" in merged.columns:
            flags = artifacts.source_flags(merged, flag_col)
        elif flag_col in merged.columns:
            flags = merged[flag_col].to_numpy(dtype=bool)
        else:
            continue
        scores = merged[score_col] if score_col and score_col in merged.columns else None
        row = detection_metrics(
            merged[truth_key].to_numpy(dtype=bool),
            flags,
            None if scores is None else scores.to_numpy(dtype=float),
        )
        rows.append({"detector": name, "truth": truth_col, **row})
    return pd.DataFrame(rows)


def detection_by_kind(issues: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """How many samples of each injected kind ``is_dirty`` caught.

    Parameters
    ----------
    issues : the detection table (``sample_id``, ``is_dirty``).
    truth : :func:`pipeline.inject.ground_truth` output (``sample_id``, ``injected``).

    Returns
    -------
    pandas.DataFrame
        One row per injected kind, ``"clean"`` last: ``kind``, ``n`` (samples of that kind),
        ``flagged`` (of them flagged dirty) and ``share`` (``flagged / n``: the recall of
        each kind of dirt, the false-alarm rate for ``"clean"``).
    """
    merged = issues[["sample_id", "is_dirty"]].merge(
        truth[["sample_id", "injected"]], on="sample_id", how="inner"
    )
    if len(merged) != len(truth):
        raise ValueError("`issues` and `truth` must cover the same sample ids.")
    grouped = merged.groupby("injected", sort=True)["is_dirty"].agg(["size", "sum"])
    kinds = [k for k in grouped.index if k != "clean"] + [k for k in grouped.index if k == "clean"]
    grouped = grouped.loc[kinds]
    return pd.DataFrame({
        "kind": grouped.index.astype(str),
        "n": grouped["size"].to_numpy(dtype=np.int64),
        "flagged": grouped["sum"].to_numpy(dtype=np.int64),
        "share": (grouped["sum"] / grouped["size"]).to_numpy(dtype=float),
    })


# ---------------------------------------------------------------------------- features
class FeatureIdentity(nn.Module):
    """Passes ``(N, D)`` feature vectors through, so torchmetrics can score features."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _nchw_uint8(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images))
    return x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance between two feature sets ``(N1, D)`` and ``(N2, D)`` (float64).

    Computed by torchmetrics' ``FrechetInceptionDistance`` with an identity feature module.
    """
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"`real` and `fake` must be (N, D) with the same D. Got {real.shape}, {fake.shape}."
        )
    if min(len(real), len(fake)) < 2:
        raise ValueError("FID needs at least two samples in each set.")
    metric = FrechetInceptionDistance(feature=FeatureIdentity(real.shape[1]))
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(fake), real=False)
    return max(0.0, float(metric.compute()))


def judge_fid(judge: Judge, real: np.ndarray, fake: np.ndarray, *, batch_size: int = 1024) -> float:
    """FID between uint8 image sets in the judge's feature space.

    torchmetrics' ``FrechetInceptionDistance`` takes the judge's feature extractor
    (:meth:`models.judge.Judge.feature_module`) as its ``feature`` argument.
    """
    module = judge.feature_module()
    metric = FrechetInceptionDistance(feature=module).to(judge.device_)
    for images, is_real in ((real, True), (fake, False)):
        for i in range(0, len(images), batch_size):
            metric.update(_nchw_uint8(images[i : i + batch_size]).to(judge.device_), real=is_real)
    return max(0.0, float(metric.compute()))


#: FID is shown only with at least this many samples per feature dimension in each set.
FID_SAMPLES_PER_DIM = 2
#: KID is shown only when its subsets (half the smaller set, at most 1000) reach this size.
KID_MIN_SUBSET = 50


def fid_is_meaningful(n_real: int, n_fake: int, dim: int) -> bool:
    """Whether FID of ``n_real`` and ``n_fake`` ``dim``-dimensional features means anything."""
    return min(n_real, n_fake) >= FID_SAMPLES_PER_DIM * dim


def kid_subset_size(n_real: int, n_fake: int, *, largest: int = 1000) -> int:
    """KID's subset size: half the smaller set (so subsets differ), at most ``largest``."""
    return int(min(largest, min(n_real, n_fake) // 2))


def kid_from_features(
    real: np.ndarray,
    fake: np.ndarray,
    *,
    subsets: int = 50,
    subset_size: int | None = None,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel inception distance ``(mean, std)`` of two feature sets (torchmetrics' KID).

    ``subset_size`` defaults to :func:`kid_subset_size`; it must be smaller than both sets.
    """
    real_t = torch.from_numpy(np.asarray(real, dtype=np.float32))
    fake_t = torch.from_numpy(np.asarray(fake, dtype=np.float32))
    n = min(len(real_t), len(fake_t))
    size = kid_subset_size(len(real_t), len(fake_t)) if subset_size is None else subset_size
    if size < 2 or size >= n:
        raise ValueError(
            f"KID needs subsets of 2+ samples smaller than each set. Got subset_size {size} "
            f"for sets of {len(real_t)} and {len(fake_t)}."
        )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = KernelInceptionDistance(
            feature=FeatureIdentity(real_t.shape[1]), subsets=subsets, subset_size=size
        )
    metric.update(real_t, real=True)
    metric.update(fake_t, real=False)
    with seeded_global_rng(seed), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def _kth_neighbour_radius(x: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """Distance of each row of ``x (N, D)`` to its k-th nearest other row, ``(N,)``."""
    out = []
    for i in range(0, x.shape[0], chunk):
        d = torch.cdist(x[i : i + chunk], x)  # (c, N); includes the zero self-distance
        out.append(d.kthvalue(k + 1, dim=1).values)
    return torch.cat(out)


def _coverage(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> float:
    """Share of ``points`` within ``radii`` of at least one of ``centres``."""
    inside = []
    for i in range(0, points.shape[0], 2048):
        d = torch.cdist(points[i : i + 2048], centres)  # (c, M)
        inside.append((d <= radii[None, :]).any(dim=1))
    return float(torch.cat(inside).float().mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, *, k: int = 3) -> tuple[float, float]:
    """k-NN manifold precision and recall (Kynkäänniemi et al., 2019).

    Each real feature is the centre of a ball reaching its ``k``-th nearest real neighbour;
    precision is the share of fake features inside some real ball. Recall swaps the roles.

    Parameters
    ----------
    real : ``(N1, D)``; fake : ``(N2, D)`` features; both need more than ``k`` rows.
    """
    r = torch.from_numpy(np.asarray(real, dtype=np.float32))
    f = torch.from_numpy(np.asarray(fake, dtype=np.float32))
    if min(len(r), len(f)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples per set.")
    precision = _coverage(f, r, _kth_neighbour_radius(r, k))
    recall = _coverage(r, f, _kth_neighbour_radius(f, k))
    return precision, recall


# ---------------------------------------------------------------------------- GAN metrics
def label_accuracy(judge: Judge, images: np.ndarray, labels: np.ndarray) -> float:
    """GAN-test: the judge's accuracy on ``images`` that were meant to show ``labels``."""
    return judge.score(images, labels)


def cas_correct(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    *,
    config: JudgeConfig | None = None,
    device: str | torch.device | None = "auto",
) -> np.ndarray:
    """GAN-train / CAS: train a judge-architecture classifier on ``train_*`` (generated
    samples only); per real ``test_*`` image, whether it got it right: bool ``(M,)`` (the
    CAS is its mean)."""
    clf = Judge(config, device=device).fit(train_images, train_labels)
    return clf.predict(test_images) == np.asarray(test_labels)


def vae_flag_rate(vae_dir: str | Path, images: np.ndarray) -> float:
    """Share of ``images`` that the detection stage's VAE (saved in ``vae_dir``) flags."""
    from assay.pipeline.detect.vae import score_images

    _, flags = score_images(Path(vae_dir), images)
    return float(np.mean(np.asarray(flags, dtype=bool)))


@dataclass(frozen=True)
class SampleScores:
    """The metrics of one set of generated samples and the per-sample evidence behind them.

    ``metrics``: as :func:`score_samples`. ``correct``: bool ``(M,)``, the judge's verdict on
    each generated sample. ``cas_correct``: bool ``(M_real,)``, the CAS classifier's on
    each real image. ``fake_features``: ``(M, D)`` judge features of the samples.
    """

    metrics: dict[str, Any]
    correct: np.ndarray
    cas_correct: np.ndarray
    fake_features: np.ndarray


def score_samples(
    judge: Judge,
    real_images: np.ndarray,
    real_labels: np.ndarray,
    fake_images: np.ndarray,
    fake_labels: np.ndarray,
    *,
    cas_images: np.ndarray | None = None,
    cas_labels: np.ndarray | None = None,
    vae_dir: str | Path | None = None,
    k: int = 3,
    seed: int = 0,
) -> SampleScores:
    """Every GAN metric of one set of conditional samples against a real held-out set.

    Parameters
    ----------
    judge : a fitted :class:`~models.judge.Judge` (trained on trusted data).
    real_images, real_labels : the held-out real set, ``(M, H, W[, C])`` and ``(M,)``.
    fake_images, fake_labels : generated samples and the labels they were asked for.
    cas_images, cas_labels : generated samples to train the CAS classifier on (default:
        ``fake_*``).
    vae_dir : the detection stage's folder holding ``vae.pt``; adds ``vae_flag_rate``.
    k : neighbourhood size of precision/recall.
    seed : seeds KID's subsets and the CAS classifier.

    Returns
    -------
    SampleScores
        ``metrics``: ``label_accuracy``, ``fid``, ``kid``, ``kid_std``, ``precision``,
        ``recall``, ``cas`` and (with ``vae_dir``) ``vae_flag_rate``; floats, ``fid``/
        ``kid``/``kid_std`` ``None`` where the sets are too small for them (see the module
        docstring); and the per-sample evidence the intervals are computed from.
    """
    real_f = judge.features(real_images)
    fake_f = judge.features(fake_images)
    dim = real_f.shape[1]
    fid = (
        fid_from_features(real_f, fake_f)
        if fid_is_meaningful(len(real_f), len(fake_f), dim)
        else None
    )
    kid: float | None = None
    kid_std: float | None = None
    if kid_subset_size(len(real_f), len(fake_f)) >= KID_MIN_SUBSET:
        kid, kid_std = kid_from_features(real_f, fake_f, seed=seed)
    # Too few samples for k-NN balls (tiny datasets): not measured (NaN -> null in JSON).
    enough = min(len(real_f), len(fake_f)) > k
    precision, recall = precision_recall(real_f, fake_f, k=k) if enough else (math.nan, math.nan)
    cas_x = fake_images if cas_images is None else cas_images
    cas_y = fake_labels if cas_labels is None else cas_labels
    cas_cfg = replace(judge.config_, seed=seed)
    correct = judge.predict(fake_images) == np.asarray(fake_labels)
    cas_ok = cas_correct(
        cas_x, cas_y, real_images, real_labels, config=cas_cfg, device=judge.device_
    )
    out: dict[str, Any] = {
        "label_accuracy": float(correct.mean()),
        "fid": fid,
        "kid": kid,
        "kid_std": kid_std,
        "precision": precision,
        "recall": recall,
        "cas": float(cas_ok.mean()),
    }
    if vae_dir is not None:
        out["vae_flag_rate"] = vae_flag_rate(vae_dir, fake_images)
    return SampleScores(out, correct, cas_ok, fake_f)


# ---------------------------------------------------------------------------- uncertainty
#: Bootstrap resamples of the judged samples (accuracies; FID, dearer, gets half).
N_BOOTSTRAP = 200
#: Confidence level of every interval.
LEVEL = 0.95


def bootstrap_accuracy(
    correct: np.ndarray, *, n_boot: int = N_BOOTSTRAP, seed: int = 0
) -> np.ndarray:
    """Bootstrap distribution of an accuracy averaged over seeds.

    Parameters
    ----------
    correct : bool ``(S, M)``: for each of ``S`` seeds, whether each of the ``M`` judged
        samples was right. Sample ``i`` is the same question for every seed (same label,
        same latent, same real image), so the ``M`` indices are resampled jointly.

    Returns
    -------
    ``(n_boot,)`` seed-mean accuracies of resampled sample sets.
    """
    c = np.atleast_2d(np.asarray(correct, dtype=float))
    per_sample = c.mean(axis=0)  # (M,)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, per_sample.size, size=(n_boot, per_sample.size))
    return per_sample[idx].mean(axis=1)


def bootstrap_fid(
    real: np.ndarray,
    fakes: Sequence[np.ndarray],
    *,
    n_boot: int = N_BOOTSTRAP // 2,
    seed: int = 0,
) -> np.ndarray | None:
    """Bootstrap distribution of FID averaged over seeds; ``None`` where FID is not shown.

    Parameters
    ----------
    real : ``(M, D)`` features of the real held-out set.
    fakes : ``S`` arrays ``(M', D)``, one per seed, the generated samples' features; the
        same resampled indices are used for every seed.
    """
    real = np.asarray(real, dtype=np.float64)
    fakes = [np.asarray(f, dtype=np.float64) for f in fakes]
    if not fakes or not all(fid_is_meaningful(len(real), len(f), real.shape[1]) for f in fakes):
        return None
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    for b in range(n_boot):
        ir = rng.integers(0, len(real), size=len(real))
        jf = rng.integers(0, len(fakes[0]), size=len(fakes[0]))
        out[b] = np.mean([frechet_distance(real[ir], f[jf]) for f in fakes])
    return out


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """The Fréchet distance of :func:`fid_from_features`, in plain numpy.

    ``tr(sqrt(S1 S2))`` is the sum of the square roots of the eigenvalues of ``S1 S2``.
    The bootstrap needs hundreds of FIDs; building a torchmetrics metric for each took
    five times as long (160 x 64 features on two shared CPU cores).
    """
    mu1, mu2 = real.mean(axis=0), fake.mean(axis=0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    eig = np.linalg.eigvals(s1 @ s2)
    covmean = np.sqrt(np.clip(eig.real, 0.0, None)).sum()
    diff = mu1 - mu2
    return max(0.0, float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * covmean))


def is_missing(value: float | None) -> bool:
    """``True`` for a metric that was not measured: ``None`` or NaN."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def metric_interval(
    seed_values: Sequence[float | None],
    bootstrap: np.ndarray | None = None,
    *,
    level: float = LEVEL,
) -> dict[str, Any] | None:
    """Mean over seeds with its standard error and interval.

    The variance of the seed mean is the seeds' variance over ``S`` (training randomness)
    plus the bootstrap variance over the judged samples (``bootstrap``, evaluation
    randomness; ``None`` when the metric has no per-sample form). The interval is
    Student-t with ``S - 1`` degrees of freedom (normal with one seed, when the seed spread
    is unknown). ``None`` when any seed value is missing (``None`` or NaN: not measured).

    Returns
    -------
    dict
        ``mean``, ``n_seeds``, ``seed_std`` (``None`` with one seed), ``bootstrap_se``,
        ``se``, ``df``, ``half_width``, ``low``, ``high``.
    """
    if not seed_values or any(is_missing(v) for v in seed_values):
        return None
    v = np.asarray(seed_values, dtype=float)
    s = v.size
    seed_std = float(v.std(ddof=1)) if s > 1 else None
    boot_se = float(np.std(bootstrap, ddof=1)) if bootstrap is not None else None
    var = (seed_std**2 / s if seed_std is not None else 0.0) + (boot_se or 0.0) ** 2
    se = math.sqrt(var)
    df = s - 1 if s > 1 else None
    half = _quantile(level, df) * se
    mean = float(v.mean())
    return {
        "mean": mean,
        "n_seeds": int(s),
        "seed_std": seed_std,
        "bootstrap_se": boot_se,
        "se": se,
        "df": df,
        "half_width": half,
        "low": mean - half,
        "high": mean + half,
    }


def _quantile(level: float, df: int | None) -> float:
    p = 0.5 + level / 2
    return float(stats.norm.ppf(p) if df is None else stats.t.ppf(p, df))


def difference_interval(
    base: dict[str, Any], other: dict[str, Any], *, level: float = LEVEL
) -> tuple[float, float]:
    """``other - base`` and the half-width of its interval, from two :func:`metric_interval`.

    The two arms are treated as independent (their standard errors add in quadrature; the
    shared latents and real images would only make the true interval narrower); the
    degrees of freedom are the two arms' together (normal when neither measured a seed
    spread).
    """
    diff = float(other["mean"]) - float(base["mean"])
    se = math.sqrt(float(base["se"]) ** 2 + float(other["se"]) ** 2)
    dfs = [d for d in (base.get("df"), other.get("df")) if d]
    return diff, _quantile(level, sum(dfs) if dfs else None) * se
