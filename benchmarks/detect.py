"""Detection quality on data whose dirt is known: one JSON line per scenario.

Each scenario injects dirt into a clean dataset with :func:`pipeline.inject.inject`
(seeded), runs the whole detection stage (:func:`pipeline.detect.run_detection`, every
detector) and scores the result against :func:`pipeline.inject.ground_truth`:

- label issues: precision / recall / F1 of ``is_label_issue`` against injected label
  noise, over the samples that are either clean or only relabelled; where odd images are
  mixed in, also precision and F1 over every sample (``label_*_counting_odd``: an odd
  image reported as a label issue is a false positive);
- outliers: AUROC and AUPRC of ``outlier_score`` and of ``vae_score`` (lower score = more
  outlying) against injected image corruptions + out-of-distribution images, over the
  clean and corrupted samples; the same for every single source and every way of
  combining them (:func:`pipeline.detect.combine.combine_outlier_scores`), and for two
  baselines computed on the same data in the same run: scikit-learn's IsolationForest on
  the raw pixels and cleanlab's kNN outlier score (``OutOfDistribution``) on the raw
  pixels (``knn_outlier`` is cleanlab's kNN score on the classifier's features);
- duplicates: recall of injected exact / near duplicates, and precision of the
  duplicate flags (over the samples that are not corrupted: blank images duplicate one
  another, and that is not counted as a mistake);
- out-of-fold accuracy of the classifier (against the given and the true labels);
- seconds: wall time of ``run_detection`` and the CPU seconds this process used.

Usage::

    python -m benchmarks.detect                         # every scenario
    python -m benchmarks.detect digits-labels-10 mnist-clean
    python -m benchmarks.detect --list
    python -m benchmarks.detect --out results.jsonl mnist-corrupt-5
    python -m benchmarks.detect --lofo --n 10000 --groups 3 --cache scores/
    python -m benchmarks.detect --label-count digits --fast

``--lofo`` is the leave-one-family-out benchmark: the MNIST test set with ``--rate``
(5 %) of its images corrupted at ``--severity`` (3) by the families of
:mod:`pipeline.inject.corruptions`, split among ``--groups`` copies (one detection run
each; the scores are stored in ``--cache`` so that the rules can be chosen again without
detecting again; the cache files are named by the run's settings and a digest of the
project's sources, so changed code detects again). For every family held out, the image
rule (a threshold per outlier source, each a quantile of half of the clean images, the
union's clean false-positive rate kept within 1 %) and the VAE score variant are chosen
on the *other* families and reported on the held-out one, with the clean false-positive
rate on the other half of the clean images; so is the threshold of ``outlier_evidence``
(``is_outlier``'s rule in :mod:`pipeline.detect.combine`: the best mean recall on the
other families within a clean false-positive rate of 0.8 % on the first half). One JSON
line: per family AUROC of ``outlier_score``, ``vae_score`` and each source, ``is_dirty``
recall (the detection's own flags), the tuned rule's and the chosen evidence threshold's
recall, and the targets met or not. With ``--groups 33`` every family is alone in its
copy: 5 % of the images are one kind of dirt, many and alike, as a faulty scanner or a
broken conversion step leaves it, which is harder for the detectors that judge an image
by its nearest neighbours (the histogram property, Datalab's kNN score) than a few
images of each kind. ``--label-count`` compares the rules for how many labels to flag
(flagged / true count and F1 at 5 to 50 % noise).

The colour scenarios recolour the MNIST test set (:func:`recolour`: every image its own
random paper and ink colour, light and dark papers alike, at least 0.4 apart in
luminance), pad it to 32x32 for ``colour32-*`` (or, for ``colour64-*``, takes its first
3,000 images and enlarges them to 64x64, bilinear), write it as an image folder of RGB PNGs
(one folder per class) and load that folder with :func:`pipeline.io.load`, as a user's
folder would be; the dirt is 10 % label noise plus 3 % corrupted or out-of-distribution
images (spread over the kinds of ``corrupt-5``). There an ``inverted`` image is not odd:
paper and ink are drawn independently and uniformly and the contrast rule is symmetric,
so the inverse of a recoloured digit (``1 - paper``, ``1 - ink``) is drawn from exactly
the same distribution as the others. Such kinds (a scenario's ``in_distribution``) are
still injected, but the outlier figures leave them out of both the positives and the
negatives; ``outlier_auroc_by_kind`` gives every injected kind's AUROC against the clean
images, theirs included, and ``outlier_auroc_all_kinds`` the AUROC counting them as odd.

On the unmodified MNIST test set (``mnist-clean``) the record also says how the detection
does on the test set's own label errors: the 15 that Northcutt et al. (2021, "Pervasive
label errors in test sets destabilize machine learning benchmarks", labelerrors.com)
confirmed by crowd review (:data:`MNIST_CONFIRMED_ERRORS`: at least 3 of 5 reviewers did not
choose the given label), how many of them are among the 100 lowest ``label_score`` and
how many are flagged, and how many images are flagged as near duplicates (none of the
test set's images is a copy of another, so each near-duplicate flag is one to check).

MNIST scenarios need the MNIST test set (``pipeline.io.default_mnist_path()``, or the
``ASSAY_MNIST`` environment variable) and are skipped with a note when it is absent.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: MNIST test-set indices whose label crowd reviewers rejected (Northcutt et al., 2021):
#: fewer than 3 of 5 chose the given label.
MNIST_CONFIRMED_ERRORS = (947, 1621, 1901, 2130, 2462, 2597, 2654, 3520, 3558, 5937, 6651,
                          6783, 8527, 9679, 9729)  # fmt: skip


@dataclass(frozen=True)
class Scenario:
    name: str
    data: str  # "digits", "mnist", "mnist-colour" (28x28 RGB folder), "colour32", "colour64"
    preset: str | dict[str, float]  # an injection preset of pipeline.inject.PRESETS or fields
    targets: dict[str, float]
    #: injected kinds that leave an image inside the data's distribution (module docstring)
    in_distribution: tuple[str, ...] = ()


#: Class-pair label noise over 8 of the 10 digits, each flipped to its look-alike and
#: back: at ``label_noise = 0.20`` of all samples, a quarter of each of the 8 classes.
PAIRS_8 = ((1, 7), (7, 1), (3, 5), (5, 3), (4, 9), (9, 4), (2, 8), (8, 2))


def _labels_and_odd(labels: float, odd: float) -> dict[str, float]:
    """Injection fields: ``labels`` label noise plus ``odd`` corrupted/OOD images spread
    over the kinds of the ``corrupt-5`` preset."""
    from assay.pipeline.inject import PRESETS

    kinds = {k: v for k, v in PRESETS["corrupt-5"].to_dict().items() if isinstance(v, float)
             and v > 0}  # fmt: skip
    return {"label_noise": labels, **{k: odd / len(kinds) for k in kinds}}


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("digits-labels-10", "digits", "labels-10", {"label_f1": 0.95}),
        Scenario("digits-labels-30", "digits", "labels-30", {"label_f1": 0.95}),
        Scenario(
            "digits-duplicates-5",
            "digits",
            "duplicates-5",
            {"exact_duplicate_recall": 1.0, "near_duplicate_recall": 0.95,
             "near_duplicate_precision": 0.95},
        ),  # fmt: skip
        Scenario("digits-mixed-mild", "digits", "mixed-mild", {}),
        Scenario("mnist-clean", "mnist", "none",
                 {"oof_accuracy": 0.99, "seconds": 360, "confirmed_errors_in_lowest_100": 15,
                  "confirmed_errors_flagged": 12, "near_duplicate_flags": 2}),  # fmt: skip
        Scenario("mnist-labels-20", "mnist", "labels-20", {"label_f1": 0.95}),
        Scenario("mnist-labels-50", "mnist", "labels-50", {"label_f1": 0.90}),
        Scenario("mnist-labels-20-odd-4", "mnist", _labels_and_odd(0.20, 0.04),
                 {"label_f1_counting_odd": 0.97}),  # fmt: skip
        Scenario("mnist-pairs-25-odd-4", "mnist",
                 {**_labels_and_odd(0.20, 0.04), "label_noise_mode": "asymmetric",
                  "pairs": PAIRS_8}, {"label_f1_counting_odd": 0.97}),  # fmt: skip
        Scenario(
            "mnist-corrupt-5",
            "mnist",
            "corrupt-5",
            {"outlier_auroc": 0.99, "vae_auroc": 0.97},
        ),
        Scenario(
            "mnist-duplicates-5",
            "mnist",
            "duplicates-5",
            {"exact_duplicate_recall": 1.0, "near_duplicate_recall": 0.95,
             "near_duplicate_precision": 0.95},
        ),  # fmt: skip
        Scenario("mnist-colour-mixed", "mnist-colour", _labels_and_odd(0.10, 0.03),
                 {"label_f1": 0.95, "outlier_auroc": 0.98}, ("inverted",)),  # fmt: skip
        Scenario("colour32-mixed", "colour32", _labels_and_odd(0.10, 0.03),
                 {"label_f1": 0.90, "outlier_auroc": 0.97}, ("inverted",)),  # fmt: skip
        Scenario("colour64-mixed", "colour64", _labels_and_odd(0.10, 0.03), {},
                 ("inverted",)),  # fmt: skip
    )
}


# ----------------------------------------------------------------------------- metrics
def prf(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of boolean ``pred`` against boolean ``truth`` ``(N,)``
    (:func:`pipeline.evaluate.detection_metrics`, the report's figures too)."""
    from assay.pipeline.evaluate import detection_metrics

    m = detection_metrics(truth, pred)
    return {
        "precision": round(m["precision"] or 0.0, 4),
        "recall": round(m["recall"] or 0.0, 4),
        "f1": round(m["f1"] or 0.0, 4),
        "n_flagged": int(m["n_flagged"]),
        "n_true": int(m["n_true"]),
    }


def ranking(score: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """AUROC and AUPRC of ``score`` (lower = more likely positive) against ``truth``
    (:func:`pipeline.evaluate.detection_metrics`)."""
    from assay.pipeline.evaluate import detection_metrics

    truth = np.asarray(truth, dtype=bool)
    m = detection_metrics(truth, np.zeros_like(truth), np.asarray(score, dtype=np.float64))
    if m["auroc"] is None:
        return {"auroc": float("nan"), "auprc": float("nan")}
    return {"auroc": round(m["auroc"], 4), "auprc": round(m["auprc"], 4)}


FILTERS = (
    "prune_by_noise_rate",
    "prune_by_class",
    "both",
    "confident_learning",
    "predicted_neq_given",
    "low_normalized_margin",
    "low_self_confidence",
    "calibrated_count",
)


def label_rules(
    labels: np.ndarray, pred_probs: np.ndarray, mask: np.ndarray, noisy: np.ndarray
) -> dict[str, float]:
    """F1 of cleanlab's ``find_label_issues`` with every ``filter_by`` rule, on the same
    out-of-fold ``pred_probs`` (evaluated over ``mask``)."""
    from assay.pipeline.detect.label import label_issues

    return {
        rule: prf(label_issues(labels, pred_probs, filter_by=rule)["is_issue"][mask], noisy)["f1"]
        for rule in FILTERS
    }


def baselines(images: np.ndarray, *, seed: int) -> dict[str, np.ndarray]:
    """Outlier scores (lower = more outlying) of the baselines on the raw pixels."""
    from cleanlab.outlier import OutOfDistribution
    from sklearn.ensemble import IsolationForest

    x = images.reshape(len(images), -1).astype(np.float32) / 255.0
    iso = IsolationForest(n_estimators=200, random_state=seed).fit(x)
    ood = OutOfDistribution().fit_score(features=x, verbose=False)
    return {"isolation_forest_pixels": iso.score_samples(x), "cleanlab_knn_pixels": ood}


def evaluate(
    dataset: Any,
    issues: pd.DataFrame,
    result: Any,
    *,
    seed: int = 0,
    with_baselines: bool = True,
    in_distribution: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Every metric of the module docstring for one detection run; injected kinds in
    ``in_distribution`` are left out of the outlier figures (but reported by kind)."""
    from assay.pipeline import artifacts
    from assay.pipeline.detect.combine import (
        COMBINATIONS,
        OUTLIER_SOURCES,
        RANK_COMBINATIONS,
        combine_outlier_scores,
        evidence_score,
    )
    from assay.pipeline.inject import CORRUPTED_KINDS, ground_truth

    gt = ground_truth(dataset)
    kind = gt["injected"].to_numpy()
    out: dict[str, Any] = {"n": len(dataset), "injected": gt["injected"].value_counts().to_dict()}

    oof = result.oof
    if oof is not None:
        true = gt["true_label"].to_numpy()
        known = true >= 0
        out["oof_accuracy"] = round(float(oof.accuracy), 4)
        out["oof_accuracy_true_labels"] = round(
            float(np.mean(oof.pred_probs[known].argmax(1) == true[known])), 4
        )
        out["classifier"] = oof.model

    label_mask = np.isin(kind, ["clean", "label_noise"])
    if np.any(kind == "label_noise"):
        noisy = (kind == "label_noise")[label_mask]
        m = prf(issues["is_label_issue"].to_numpy()[label_mask], noisy)
        out.update({f"label_{k}": v for k, v in m.items()})
        if not label_mask.all():  # odd images reported as label issues count against it
            m = prf(issues["is_label_issue"].to_numpy(), kind == "label_noise")
            out.update({f"label_{k}_counting_odd": m[k] for k in ("precision", "f1")})
        if oof is not None:
            rules = label_rules(dataset.labels, oof.pred_probs, label_mask, noisy)
            out["label_f1_by_filter"] = rules

    injected_odd = np.isin(kind, list(CORRUPTED_KINDS))
    corrupted = injected_odd & ~np.isin(kind, list(in_distribution))
    if corrupted.any():
        mask = corrupted | (kind == "clean")
        truth = corrupted[mask]
        score = issues["outlier_score"].to_numpy()
        out["outlier_auroc_by_kind"] = {}
        for k in sorted(set(kind[injected_odd])):
            sel = (kind == k) | (kind == "clean")
            out["outlier_auroc_by_kind"][k] = ranking(score[sel], (kind == k)[sel])["auroc"]
        if in_distribution:
            every = injected_odd | (kind == "clean")
            out["outlier_auroc_all_kinds"] = ranking(score[every], injected_odd[every])["auroc"]
        for col in ("outlier_score", "vae_score", "knn_outlier_score", "image_property_score"):
            if col in issues:
                r = ranking(issues[col].to_numpy()[mask], truth)
                out.update({f"{col.removesuffix('_score')}_{k}": v for k, v in r.items()})
        flags = prf(issues["is_outlier"].to_numpy()[mask], truth)
        out.update({f"is_outlier_{k}": v for k, v in flags.items()})
        out["outlier_flags_by_source"] = {
            s: prf(artifacts.source_flags(issues, s)[mask], truth)
            for s in OUTLIER_SOURCES
            if "outlier_sources" in issues and s in artifacts.OUTLIER_SOURCES
        }
        sources = {
            s: issues[f"{s}_score"].to_numpy() for s in OUTLIER_SOURCES if f"{s}_score" in issues
        }
        combined = {"evidence": evidence_score(issues["outlier_evidence"].to_numpy())}
        combined.update({method: combine_outlier_scores(sources, method=method)
                         for method in RANK_COMBINATIONS})  # fmt: skip
        out["combinations"] = {method: ranking(combined[method][mask], truth)
                               for method in COMBINATIONS}  # fmt: skip
        if with_baselines:
            base = baselines(dataset.images, seed=seed)
            out["baselines"] = {name: ranking(s[mask], truth) for name, s in base.items()}
        out["outlier_recall_by_kind"] = {
            k: round(float(issues["is_outlier"].to_numpy()[kind == k].mean()), 4)
            for k in sorted(set(kind[injected_odd]))
        }

    dup_kinds = {"exact_duplicate": "is_exact_duplicate", "near_duplicate": "is_near_duplicate"}
    if np.isin(kind, list(dup_kinds)).any():
        flagged = issues["is_exact_duplicate"].to_numpy() | issues["is_near_duplicate"].to_numpy()
        injected = np.isin(kind, list(dup_kinds))
        # Corrupted images that copy one another (blank ones) are not held against precision.
        not_corrupted = ~corrupted
        for k, col in dup_kinds.items():
            mine = issues[col].to_numpy()
            out[f"{k}_recall"] = round(float(flagged[kind == k].mean()), 4)
            out[f"{k}_recall_as_{k}"] = round(float(mine[kind == k].mean()), 4)
            sel = mine & not_corrupted
            prec = float(np.mean(kind[sel] == k)) if sel.any() else 1.0
            out[f"{k}_precision"] = round(prec, 4)
        sel = flagged & not_corrupted
        prec = float(injected[sel].mean()) if sel.any() else 1.0
        out["duplicate_precision"] = round(prec, 4)
        src = gt["duplicate_source"].to_numpy()
        ok = issues["duplicate_of"].to_numpy()[injected] == src[injected]
        out["duplicate_of_correct"] = round(float(ok.mean()), 4)
    out["is_dirty_count"] = int(issues["is_dirty"].sum())
    out["flag_counts"] = {
        c: int(issues[c].sum()) for c in issues.columns if c.startswith("is_") and c != "is_dirty"
    }
    return out


# ----------------------------------------------------------------------------- running
def recolour(images: np.ndarray, *, seed: int = 0, min_contrast: float = 0.4) -> np.ndarray:
    """Grey digits ``(N, H, W)`` (ink bright on black) as RGB ``(N, H, W, 3)`` uint8.

    Every image gets its own paper and ink colour, each channel uniform in 0..1, redrawn
    until their luminances (Rec. 601) differ by at least ``min_contrast``; a pixel of grey
    level ``g`` becomes ``paper + (ink - paper) * g / 255``.
    """
    rng = np.random.default_rng(seed)
    n = len(images)
    weights = np.array([0.299, 0.587, 0.114])
    paper, ink = rng.random((n, 3)), rng.random((n, 3))
    bad = np.abs((paper - ink) @ weights) < min_contrast
    while bad.any():
        paper[bad], ink[bad] = rng.random((bad.sum(), 3)), rng.random((bad.sum(), 3))
        bad = np.abs((paper - ink) @ weights) < min_contrast
    g = images.astype(np.float64)[..., None] / 255.0
    rgb = paper[:, None, None, :] + (ink - paper)[:, None, None, :] * g
    return np.rint(rgb * 255.0).astype(np.uint8)


def write_png_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """Write ``images`` as ``root/<label>/<i>.png``; returns ``root``."""
    from PIL import Image

    for k in np.unique(labels):
        (root / str(k)).mkdir(parents=True, exist_ok=True)
    for i, (img, k) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(img).save(root / str(k) / f"{i:05d}.png")
    return root


def _load(data: str):
    from assay.pipeline import io

    if data == "digits":
        return io.load("digits")
    path = io.default_mnist_path()
    if not (path.is_dir() and any(path.glob("t10k-images-idx3-ubyte*"))):
        return None
    mnist = io.load(str(path))
    if data == "mnist":
        return mnist
    images, labels = recolour(mnist.images, seed=1), mnist.labels
    if data == "colour32":
        images = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
    if data == "colour64":
        from PIL import Image

        images, labels = images[:3000], labels[:3000]
        images = np.stack([np.asarray(Image.fromarray(im).resize((64, 64), Image.BILINEAR))
                           for im in images])  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_png_folder(Path(tmp) / data, images, labels)
        return io.load(str(folder))


def run_scenario(
    scenario: Scenario, *, seed: int = 0, progress: bool = False, keep: Path | None = None
) -> dict[str, Any]:
    """Inject, detect, evaluate; the scenario's JSON record. With ``keep``, the detection
    outputs and the out-of-fold predictions are kept in ``keep/<scenario>/``."""
    from assay.pipeline.detect import run_detection
    from assay.pipeline.inject import inject

    clean = _load(scenario.data)
    if clean is None:
        return {"scenario": scenario.name, "skipped": "MNIST test set not found"}
    dirty = inject(clean, scenario.preset, seed=seed)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(tmp) if keep is None else keep / scenario.name
        result = run_detection(dirty, out_dir=out_dir, seed=seed, progress=progress)
    seconds = time.perf_counter() - t0
    if keep is not None and result.oof is not None:
        np.savez_compressed(
            keep / scenario.name / "oof.npz",
            pred_probs=result.oof.pred_probs,
            features=result.oof.ensemble_embeddings,
            labels=dirty.labels,
            true_labels=dirty.columns["true_label"].to_numpy(),
            injected=dirty.columns["injected"].to_numpy().astype(str),
        )
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    record: dict[str, Any] = {"scenario": scenario.name, "data": scenario.data,
                              "preset": scenario.preset, "seed": seed}  # fmt: skip
    record.update(evaluate(dirty, result.issues, result, seed=seed,
                           in_distribution=scenario.in_distribution))  # fmt: skip
    if scenario.in_distribution:
        record["in_distribution"] = list(scenario.in_distribution)
    if scenario.data == "mnist" and scenario.preset == "none":
        record.update(confirmed_errors(dirty, result.issues))
    record["seconds"] = round(seconds, 1)
    record["cpu_seconds"] = round(
        (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime), 1
    )
    record["timings"] = result.summary["timings"]
    record["errors"] = result.summary["errors"]
    record["skipped"] = result.summary["skipped"]
    record["targets"] = {
        key: {"target": target, "met": _met(key, record.get(key), target)}
        for key, target in scenario.targets.items()
    }
    return record


#: Targets that are upper bounds.
_AT_MOST = ("seconds", "near_duplicate_flags")


def _met(key: str, value: Any, target: float) -> bool | None:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return None
    return bool(value <= target) if key in _AT_MOST else bool(value >= target)


def confirmed_errors(dataset: Any, issues: pd.DataFrame) -> dict[str, Any]:
    """The figures of the module docstring on the MNIST test set's confirmed label errors."""
    ids = issues["sample_id"].to_numpy()
    if len(ids) != 10_000 or not np.array_equal(ids, dataset.sample_ids):
        return {}
    known = np.asarray(MNIST_CONFIRMED_ERRORS)
    order = np.argsort(issues["label_score"].to_numpy(), kind="stable")
    rank = np.empty(len(order), dtype=int)
    rank[order] = np.arange(len(order))
    flagged = issues["is_label_issue"].to_numpy()
    return {
        "confirmed_errors": len(known),
        "confirmed_errors_in_lowest_100": int((rank[known] < 100).sum()),
        "confirmed_errors_flagged": int(flagged[known].sum()),
        "confirmed_error_ranks": sorted(int(r) for r in rank[known]),
        "label_issues_flagged": int(flagged.sum()),
        "near_duplicate_flags": int(issues["is_near_duplicate"].sum()),
    }


# ----------------------------------------------------------------------------- leave one out
#: Clean false-positive budget of the tuned image rule and the LOFO targets.
FPR_BUDGET = 0.01
LOFO_TARGETS = {
    "is_dirty_recall_min": 0.90,
    "clean_fpr_max": 0.01,
    "outlier_auroc_mean": 0.99,
    "outlier_auroc_min": 0.97,
    "vae_auroc_mean": 0.95,
    "vae_auroc_min": 0.90,
}
#: Per-sample columns kept from each detection run (the scores the rules are chosen on).
_KEPT = ("outlier_score", "vae_score", "knn_outlier_score", "image_property_score",
         "is_dirty", "is_outlier", "is_label_issue", "outlier_evidence")  # fmt: skip
#: Clean false-positive budget, on the selection half, of the chosen evidence threshold.
EVIDENCE_FPR_BUDGET = 0.008
#: Candidate thresholds of ``outlier_evidence`` (``is_outlier``'s rule, see combine).
_EVIDENCE_THRESHOLDS = tuple(round(0.9 + 0.05 * i, 2) for i in range(43))  # 0.9 .. 3.0
#: Candidate per-source thresholds, as quantiles of the clean selection half.
_QUANTILES = (0.0, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01)
_SOURCES = ("knn_outlier_score", "vae_score", "image_property_score")


def corrupted_dataset(clean: Any, names: list[str], *, rate: float, severity: int, seed: int):
    """``clean`` with ``rate`` of its images corrupted, the families in ``names`` sharing
    them equally; returns the dataset and the family per sample (``"clean"`` if none)."""
    from assay.pipeline.dataset import Dataset
    from assay.pipeline.inject.corruptions import corrupt

    rng = np.random.default_rng(seed)
    n = len(clean)
    chosen = rng.choice(n, size=int(round(rate * n)), replace=False)
    family = np.full(n, "clean", dtype=object)
    family[chosen] = np.array(names, dtype=object)[np.arange(chosen.size) % len(names)]
    images = clean.images.copy()
    for i, name in enumerate(names):
        idx = np.flatnonzero(family == name)
        if idx.size:
            images[idx] = corrupt(images[idx], name, severity=severity, seed=seed + i)
    ds = Dataset.create(images, clean.labels, clean.class_names, sample_ids=clean.sample_ids)
    return ds, family.astype(str)


def code_digest(root: Path | None = None) -> str:
    """12 hex digits of the project's Python sources under ``root`` (default: this
    project's package), ``pipeline/`` and ``models/``: a cache of detection scores made by
    other code (another detector, another corruption) is never read back as this code's."""
    import hashlib

    if root is None:
        import assay.pipeline

        root = Path(assay.pipeline.__file__).resolve().parent.parent
    digest = hashlib.blake2b(digest_size=6)
    for part in ("pipeline", "models"):
        for path in sorted((root / part).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def lofo_scores(
    clean: Any, *, groups: int, rate: float, severity: int, seed: int, cache: Path | None,
    classifier: dict[str, Any] | None = None, progress: bool = False,
) -> dict[str, np.ndarray]:
    """Detection scores of every sample of ``groups`` corrupted copies of ``clean`` (the
    families split round-robin between them), concatenated; one detection run per copy,
    stored in ``cache`` when given so that rules can be re-chosen without re-running."""
    from assay.pipeline.detect import run_detection
    from assay.pipeline.inject.corruptions import families

    colour = clean.images.ndim == 4 and clean.images.shape[-1] >= 3
    names = list(families(colour=colour))
    parts: list[dict[str, np.ndarray]] = []
    code = code_digest() if cache is not None else ""
    for g in range(groups):
        mine = names[g::groups]
        path = None
        if cache is not None:
            model = (classifier or {}).get("model", "default")
            key = (f"lofo-n{len(clean)}-g{g}of{groups}-r{rate}-s{severity}-seed{seed}"
                   f"-{model}-{code}.npz")  # fmt: skip
            path = cache / key
            if path.is_file():
                with np.load(path, allow_pickle=False) as f:
                    parts.append({k: f[k] for k in f.files})
                continue
        ds, family = corrupted_dataset(clean, mine, rate=rate, severity=severity, seed=seed + g)
        t0 = time.perf_counter()
        result = run_detection(ds, out_dir=None, seed=seed, progress=progress,
                               classifier=classifier)  # fmt: skip
        part = {col: result.issues[col].to_numpy() for col in _KEPT}
        part["family"] = family
        part["seconds"] = np.array([time.perf_counter() - t0])
        vae = result.results.get("vae")
        for name, values in (vae.arrays if vae is not None else {}).items():
            part[f"vae_variant:{name}"] = np.asarray(values, dtype=np.float64)
        parts.append(part)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(path, **part)
    keys = set.intersection(*(set(p) for p in parts))
    out = {k: np.concatenate([p[k] for p in parts]) for k in keys if k != "seconds"}
    out["seconds"] = np.array([float(p["seconds"][0]) for p in parts])
    out["group"] = np.concatenate([np.full(len(p["family"]), i) for i, p in enumerate(parts)])
    return out


def _auroc(score: np.ndarray, positive: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if positive.all() or not positive.any():
        return float("nan")
    return float(roc_auc_score(positive, -score))


def _image_rule(s: dict[str, np.ndarray], thresholds: dict[str, float]) -> np.ndarray:
    flag = np.zeros(len(s["family"]), dtype=bool)
    for col, t in thresholds.items():
        flag |= s[col] < t
    return flag


def choose_image_rule(
    s: dict[str, np.ndarray], train: np.ndarray, select_clean: np.ndarray
) -> dict[str, float]:
    """Per-source score thresholds (a quantile of the clean selection samples each) that
    maximise the mean per-family recall over the ``train`` families' samples, with the
    union's false-positive rate on ``select_clean`` within :data:`FPR_BUDGET`."""
    import itertools

    fams = sorted(set(s["family"][train]) - {"clean"})
    cands = {
        col: [float(np.quantile(s[col][select_clean], q)) if q > 0 else -np.inf
              for q in _QUANTILES]
        for col in _SOURCES
    }  # fmt: skip
    best, best_key = {c: -np.inf for c in _SOURCES}, (-1.0, 0.0)
    for combo in itertools.product(*(cands[c] for c in _SOURCES)):
        th = dict(zip(_SOURCES, combo, strict=True))
        flag = _image_rule(s, th)
        fpr = float(flag[select_clean].mean())
        if fpr > FPR_BUDGET:
            continue
        rec = float(np.mean([flag[s["family"] == f].mean() for f in fams]))
        key = (rec, -fpr)
        if key > best_key:
            best, best_key = th, key
    return best


def _evidence_rule(s: dict[str, np.ndarray], threshold: float) -> np.ndarray:
    """``is_dirty`` with ``is_outlier`` taken as ``outlier_evidence > threshold`` or an
    image property's own flag (combine's rule at another threshold)."""
    outlier = (s["outlier_evidence"] > threshold) | (s["image_property_score"] < 0.5)
    return outlier | (s["is_dirty"] & ~s["is_outlier"])


def choose_evidence_threshold(
    s: dict[str, np.ndarray], train: np.ndarray, select_clean: np.ndarray
) -> float:
    """The ``outlier_evidence`` threshold with the best mean per-family ``is_dirty`` recall
    over the ``train`` families' samples, within :data:`EVIDENCE_FPR_BUDGET` on
    ``select_clean``."""
    fams = sorted(set(s["family"][train]) - {"clean"})
    best, best_key = _EVIDENCE_THRESHOLDS[-1], (-1.0, 0.0)
    for t in _EVIDENCE_THRESHOLDS:
        flag = _evidence_rule(s, t)
        fpr = float(flag[select_clean].mean())
        if fpr > EVIDENCE_FPR_BUDGET:
            continue
        key = (float(np.mean([flag[s["family"] == f].mean() for f in fams])), -fpr)
        if key > best_key:
            best, best_key = t, key
    return best


def choose_vae_variant(s: dict[str, np.ndarray], train_mask: np.ndarray) -> str:
    """The VAE score variant with the best mean per-family AUROC on the train families."""
    fams = sorted(set(s["family"][train_mask]) - {"clean"})
    clean = s["family"] == "clean"
    variants = [k for k in s if k.startswith("vae_variant:")] or ["vae_score"]
    def mean_auroc(k: str) -> float:
        return float(np.mean([_auroc(s[k][(s["family"] == f) | clean],
                                     (s["family"] == f)[(s["family"] == f) | clean])
                              for f in fams]))  # fmt: skip
    return max(variants, key=mean_auroc)


def lofo_report(s: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per held-out family: AUROCs, default ``is_dirty`` recall, and the recall of the rule
    chosen on the other families; clean false-positive rates on the clean half not used to
    choose."""
    family = s["family"]
    clean = family == "clean"
    half = (np.arange(len(family)) % 2) == 0
    select_clean, report_clean = clean & half, clean & ~half
    fams = sorted(set(family) - {"clean"})
    rows: dict[str, Any] = {}
    for f in fams:
        held = family == f
        zone = held | clean
        train = ~held
        th = choose_image_rule(s, train, select_clean)
        tuned_image = _image_rule(s, th)
        tuned_dirty = tuned_image | (s["is_dirty"] & ~s["is_outlier"])
        variant = choose_vae_variant(s, train)
        evidence = {}
        if "outlier_evidence" in s:  # absent from caches written before it was kept
            t = choose_evidence_threshold(s, train, select_clean)
            chosen = _evidence_rule(s, t)
            evidence = {
                "evidence_threshold": t,
                "evidence_recall": round(float(chosen[held].mean()), 4),
                "evidence_clean_fpr": round(float(chosen[report_clean].mean()), 4),
            }
        rows[f] = {
            "n": int(held.sum()),
            "outlier_auroc": round(_auroc(s["outlier_score"][zone], held[zone]), 4),
            "vae_auroc": round(_auroc(s["vae_score"][zone], held[zone]), 4),
            "vae_variant": variant.removeprefix("vae_variant:"),
            "vae_variant_auroc": round(_auroc(s[variant][zone], held[zone]), 4),
            "knn_auroc": round(_auroc(s["knn_outlier_score"][zone], held[zone]), 4),
            "image_property_auroc": round(_auroc(s["image_property_score"][zone], held[zone]), 4),
            "is_dirty_recall": round(float(s["is_dirty"][held].mean()), 4),
            "label_issue_share": round(float(s["is_label_issue"][held].mean()), 4),
            "tuned_recall": round(float(tuned_dirty[held].mean()), 4),
            "tuned_clean_fpr": round(float(tuned_dirty[report_clean].mean()), 4),
            "tuned_image_clean_fpr": round(float(tuned_image[report_clean].mean()), 4),
            **evidence,
        }
    def col(k: str) -> np.ndarray:
        return np.array([r[k] for r in rows.values()], dtype=float)
    summary = {
        "n": int(len(family)),
        "n_families": len(fams),
        "is_dirty_clean_fpr": round(float(s["is_dirty"][clean].mean()), 4),
        "is_outlier_clean_fpr": round(float(s["is_outlier"][clean].mean()), 4),
        "label_issue_clean_fpr": round(float(s["is_label_issue"][clean].mean()), 4),
        "outlier_auroc_mean": round(float(np.nanmean(col("outlier_auroc"))), 4),
        "outlier_auroc_min": round(float(np.nanmin(col("outlier_auroc"))), 4),
        "vae_auroc_mean": round(float(np.nanmean(col("vae_auroc"))), 4),
        "vae_auroc_min": round(float(np.nanmin(col("vae_auroc"))), 4),
        "vae_variant_auroc_mean": round(float(np.nanmean(col("vae_variant_auroc"))), 4),
        "vae_variant_auroc_min": round(float(np.nanmin(col("vae_variant_auroc"))), 4),
        "is_dirty_recall_min": round(float(np.min(col("is_dirty_recall"))), 4),
        "is_dirty_recall_mean": round(float(np.mean(col("is_dirty_recall"))), 4),
        "tuned_recall_min": round(float(np.min(col("tuned_recall"))), 4),
        "tuned_recall_mean": round(float(np.mean(col("tuned_recall"))), 4),
        "tuned_clean_fpr_max": round(float(np.max(col("tuned_clean_fpr"))), 4),
        "detection_seconds": [round(float(x), 1) for x in s["seconds"]],
    }
    if "outlier_evidence" in s:
        summary["evidence_thresholds"] = sorted({r["evidence_threshold"] for r in rows.values()})
        summary["evidence_recall_mean"] = round(float(np.mean(col("evidence_recall"))), 4)
        summary["evidence_clean_fpr_max"] = round(float(np.max(col("evidence_clean_fpr"))), 4)
    got = {
        "is_dirty_recall_min": summary["is_dirty_recall_min"],
        "clean_fpr_max": summary["is_dirty_clean_fpr"],
        "outlier_auroc_mean": summary["outlier_auroc_mean"],
        "outlier_auroc_min": summary["outlier_auroc_min"],
        "vae_auroc_mean": summary["vae_auroc_mean"],
        "vae_auroc_min": summary["vae_auroc_min"],
    }
    summary["targets"] = {
        k: {"target": t, "value": got[k],
            "met": bool(got[k] <= t) if k.endswith("_max") else bool(got[k] >= t)}
        for k, t in LOFO_TARGETS.items()
    }  # fmt: skip
    return {"summary": summary, "families": rows}


def run_lofo(
    *, n: int, groups: int, rate: float, severity: int, seed: int, cache: Path | None,
    fast: bool = False, progress: bool = False,
) -> dict[str, Any]:
    """The leave-one-family-out benchmark on the first ``n`` MNIST test images."""
    clean = _load("mnist")
    if clean is None:
        return {"benchmark": "lofo", "skipped": "MNIST test set not found"}
    clean = clean.subset(np.arange(min(n, len(clean))))
    t0 = time.perf_counter()
    s = lofo_scores(clean, groups=groups, rate=rate, severity=severity, seed=seed, cache=cache,
                    classifier={"model": "svc"} if fast else None, progress=progress)  # fmt: skip
    record = {"benchmark": "lofo", "n": len(clean), "groups": groups, "rate": rate,
              "severity": severity, "seed": seed,
              "classifier": "svc" if fast else "default"}  # fmt: skip
    record.update(lofo_report(s))
    record["seconds"] = round(time.perf_counter() - t0, 1)
    return record


# ----------------------------------------------------------------------------- label count
#: Rules for how many labels to flag, compared by :func:`run_label_count`.
COUNT_RULES = ("predicted_neq_given", "prune_by_noise_rate", "low_self_confidence",
               "calibrated_count")  # fmt: skip


def label_count_rules(labels: np.ndarray, pred_probs: np.ndarray) -> dict[str, np.ndarray]:
    """Each rule of :data:`COUNT_RULES` applied to the same out-of-fold ``pred_probs``:
    the label-issue flags ``(N,)`` it gives."""
    from assay.pipeline.detect.label import label_issues

    out = {}
    for rule in COUNT_RULES:
        out[rule] = label_issues(labels, pred_probs, filter_by=rule)["is_issue"]
    return out


def run_label_count(*, data: str, n: int, levels: tuple[float, ...], modes: tuple[str, ...],
                    seed: int, fast: bool) -> dict[str, Any]:  # fmt: skip
    """Flagged against true counts of every counting rule at several noise levels."""
    from assay.pipeline.detect.oof import out_of_fold
    from assay.pipeline.inject import InjectionConfig, ground_truth, inject

    clean = _load(data)
    if clean is None:
        return {"benchmark": "label_count", "skipped": "MNIST test set not found"}
    clean = clean.subset(np.arange(min(n, len(clean))))
    rows = []
    t0 = time.perf_counter()
    for mode in modes:
        for level in levels:
            dirty = inject(clean, InjectionConfig(label_noise=level, label_noise_mode=mode),
                           seed=seed)  # fmt: skip
            noisy = ground_truth(dirty)["injected"].to_numpy() == "label_noise"
            oof = out_of_fold(dirty, seed=seed, model="svc" if fast else "auto")
            row: dict[str, Any] = {"mode": mode, "noise": level, "n_true": int(noisy.sum())}
            for rule, flags in label_count_rules(dirty.labels, oof.pred_probs).items():
                m = prf(flags, noisy)
                row[rule] = {"n_flagged": m["n_flagged"], "f1": m["f1"]}
            rows.append(row)
    def ratio(rule: str) -> list[float]:
        return [round(r[rule]["n_flagged"] / max(r["n_true"], 1), 3) for r in rows]
    return {"benchmark": "label_count", "data": data, "n": len(clean), "seed": seed,
            "classifier": "svc" if fast else "default", "rows": rows,
            "flagged_over_true": {rule: ratio(rule) for rule in COUNT_RULES},
            "mean_f1": {rule: round(float(np.mean([r[rule]["f1"] for r in rows])), 4)
                        for rule in COUNT_RULES},
            "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", help="scenario names (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also append the JSON lines to this file")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--progress", action="store_true", help="print detection progress")
    parser.add_argument("--keep", type=Path, help="keep each scenario's outputs in this folder")
    parser.add_argument("--lofo", action="store_true",
                        help="run the leave-one-family-out corruption benchmark instead")
    parser.add_argument("--n", type=int, default=10_000, help="LOFO: MNIST images used")
    parser.add_argument("--groups", type=int, default=3,
                        help="LOFO: corrupted copies (detection runs); families split among them")
    parser.add_argument("--rate", type=float, default=0.05, help="LOFO: corrupted share")
    parser.add_argument("--severity", type=int, default=3, help="LOFO: severity 1..5")
    parser.add_argument("--cache", type=Path, help="LOFO: keep/reuse detection scores here")
    parser.add_argument("--fast", action="store_true", help="LOFO: quick SVC classifier")
    parser.add_argument("--label-count", choices=("digits", "mnist"),
                        help="compare the rules for how many labels to flag on this data")
    args = parser.parse_args(argv)
    if args.label_count:
        _emit(run_label_count(data=args.label_count, n=args.n, levels=(0.05, 0.1, 0.2, 0.35, 0.5),
                              modes=("symmetric", "asymmetric"), seed=args.seed,
                              fast=args.fast), args.out)  # fmt: skip
        return 0
    if args.lofo:
        record = run_lofo(n=args.n, groups=args.groups, rate=args.rate, severity=args.severity,
                          seed=args.seed, cache=args.cache, fast=args.fast,
                          progress=args.progress)  # fmt: skip
        _emit(record, args.out)
        return 0
    if args.list:
        for s in SCENARIOS.values():
            preset = s.preset if isinstance(s.preset, str) else "custom"
            print(f"{s.name:24s} {s.data:12s} {preset:14s} targets {s.targets}")
        return 0
    names = args.scenarios or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}")
    for name in names:
        record = run_scenario(
            SCENARIOS[name], seed=args.seed, progress=args.progress, keep=args.keep
        )
        _emit(record, args.out)
    return 0


def _emit(record: dict[str, Any], out: Path | None) -> None:
    """Print ``record`` as one JSON line (and append it to ``out``)."""
    line = json.dumps(record, default=_json_default)
    print(line, flush=True)
    if out is not None:
        with out.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


if __name__ == "__main__":
    sys.exit(main())
