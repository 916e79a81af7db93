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

Shapes: images uint8 ``(N, H, W[, C])``; labels int64 ``(N,)``; features float ``(N, D)``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn import metrics as skm
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

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


def kid_from_features(
    real: np.ndarray, fake: np.ndarray, *, subsets: int = 50, subset_size: int = 500, seed: int = 0
) -> tuple[float, float]:
    """Kernel inception distance ``(mean, std)`` of two feature sets (torchmetrics' KID)."""
    real_t = torch.from_numpy(np.asarray(real, dtype=np.float32))
    fake_t = torch.from_numpy(np.asarray(fake, dtype=np.float32))
    size = int(min(subset_size, len(real_t), len(fake_t)))
    if size < 2:
        raise ValueError("KID needs at least two samples in each set.")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = KernelInceptionDistance(
            feature=FeatureIdentity(real_t.shape[1]), subsets=subsets, subset_size=size
        )
    metric.update(real_t, real=True)
    metric.update(fake_t, real=False)
    with torch.random.fork_rng(devices=[]):
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


def cas_accuracy(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    *,
    config: JudgeConfig | None = None,
    device: str | torch.device | None = "auto",
) -> float:
    """GAN-train / CAS: train a judge-architecture classifier on ``train_*`` (generated
    samples only), return its accuracy on the real ``test_*``."""
    clf = Judge(config, device=device).fit(train_images, train_labels)
    return clf.score(test_images, test_labels)


def vae_flag_rate(vae_dir: str | Path, images: np.ndarray) -> float:
    """Share of ``images`` that the detection stage's VAE (saved in ``vae_dir``) flags."""
    from assay.pipeline.detect.vae import score_images

    _, flags = score_images(Path(vae_dir), images)
    return float(np.mean(np.asarray(flags, dtype=bool)))


def gan_metrics(
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
) -> dict[str, Any]:
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
    dict
        ``label_accuracy``, ``fid``, ``kid``, ``kid_std``, ``precision``, ``recall``,
        ``cas`` and (with ``vae_dir``) ``vae_flag_rate``; floats.
    """
    real_f = judge.features(real_images)
    fake_f = judge.features(fake_images)
    kid, kid_std = kid_from_features(real_f, fake_f, seed=seed)
    # Too few samples for k-NN balls (tiny datasets): not measured (NaN -> null in JSON).
    enough = min(len(real_f), len(fake_f)) > k
    precision, recall = precision_recall(real_f, fake_f, k=k) if enough else (math.nan, math.nan)
    cas_x = fake_images if cas_images is None else cas_images
    cas_y = fake_labels if cas_labels is None else cas_labels
    cas_cfg = replace(judge.config_, seed=seed)
    out: dict[str, Any] = {
        "label_accuracy": label_accuracy(judge, fake_images, fake_labels),
        "fid": judge_fid(judge, real_images, fake_images),
        "kid": kid,
        "kid_std": kid_std,
        "precision": precision,
        "recall": recall,
        "cas": cas_accuracy(
            cas_x, cas_y, real_images, real_labels, config=cas_cfg, device=judge.device_
        ),
    }
    if vae_dir is not None:
        out["vae_flag_rate"] = vae_flag_rate(vae_dir, fake_images)
    return out
