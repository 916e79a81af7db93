"""Out-of-sample predicted probabilities and embeddings by stratified K-fold training.

Every sample's ``pred_probs`` row comes from a model that never saw it, which is what
cleanlab's label-issue methods need. The fold split is stratified by label and keeps
byte-identical images in one fold, so a copy in the training folds cannot vouch for its
twin's label.

Which model
-----------
- Images of 16 px and up: the small CNN of :mod:`models.classifier` (light affine
  augmentation, label smoothing), one per fold.
- Tiny images (under 16 px, e.g. 8x8 digits): the CNN and scikit-learn candidates on the
  pixels (an RBF support vector machine with sigmoid calibration, multinomial logistic
  regression) are all cross-validated on the same folds, plus the average of the CNN and
  the best scikit-learn model; the candidate with the highest out-of-fold accuracy against
  the given labels wins (ties: lower log loss). Under label noise that does not depend on
  the image, accuracy against the given labels is an increasing function of accuracy
  against the true labels, so the noisy labels can pick the model.

Embeddings
----------
Each fold's CNN also embeds *every* sample (its penultimate layer, ``D`` wide). Two views
are kept:

- ``embeddings``: each sample's own out-of-fold embedding, ``(N, D)``;
- ``ensemble_embeddings``: the L2-normalised embeddings of all ``F`` fold models side by
  side, ``(N, F * D)``. Every sample is embedded by the same ``F`` networks, so distances
  between any two samples are comparable, which out-of-fold embeddings from different
  networks are not. The kNN detectors (outliers, near duplicates) use this view.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from assay.models.classifier import Classifier, ClassifierConfig
from assay.models.device import pick_device
from assay.models.tensors import ImageBatches
from assay.pipeline.dataset import Dataset
from assay.pipeline.progress import Ticker
from assay.pipeline.progress import say as progress_line

__all__ = [
    "OOFResult",
    "FoldResult",
    "make_folds",
    "dataset_folds",
    "out_of_fold",
    "fit_fold",
    "assemble_oof",
    "image_groups",
    "TINY_SIDE",
]

#: Images with a side under this many pixels count as tiny (scikit-learn candidates run).
TINY_SIDE = 16


@dataclass
class OOFResult:
    """Out-of-fold predictions of one cross-validated classifier.

    Attributes
    ----------
    pred_probs : ndarray
        float64 ``(N, K)``; row ``i`` from the model that did not train on sample ``i``.
    embeddings : ndarray
        float32 ``(N, D)``, each sample's out-of-fold penultimate-layer embedding.
    ensemble_embeddings : ndarray
        float32 ``(N, F * D)``, every fold model's normalised embedding side by side.
    folds : ndarray
        int64 ``(N,)``, the fold that held each sample out.
    model : str
        Name of the chosen candidate (``"cnn"``, ``"svc"``, ``"logreg"``, ``"cnn+svc"``…).
    accuracy : float
        Out-of-fold accuracy of ``pred_probs`` against the given labels.
    candidates : dict
        Name -> ``{"accuracy", "log_loss", "seconds"}`` of every candidate tried.
    seconds : float
        Wall time of the whole cross-validation.
    config : dict
        The CNN config used.
    """

    pred_probs: np.ndarray
    embeddings: np.ndarray
    ensemble_embeddings: np.ndarray
    folds: np.ndarray
    model: str
    accuracy: float
    candidates: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "accuracy": float(self.accuracy),
            "n_folds": int(self.folds.max()) + 1 if self.folds.size else 0,
            "candidates": self.candidates,
            "seconds": round(self.seconds, 2),
            "cnn_config": self.config,
        }


# ----------------------------------------------------------------------------- folds
def image_groups(images: np.ndarray) -> np.ndarray:
    """Group id per image: byte-identical images share one (the first one's row).

    Parameters
    ----------
    images : ndarray
        ``(N, ...)`` any dtype.

    Returns
    -------
    ndarray
        int64 ``(N,)``; ``groups[i]`` is the smallest row index holding the same bytes.
    """
    flat = np.ascontiguousarray(images).reshape(len(images), -1)
    first: dict[bytes, int] = {}
    out = np.empty(len(images), dtype=np.int64)
    for i, row in enumerate(flat):
        key = hashlib.blake2b(row.tobytes(), digest_size=16).digest()
        out[i] = first.setdefault(key, i)
    return out


def make_folds(
    labels: np.ndarray,
    *,
    n_folds: int = 5,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Stratified fold assignment that keeps each group in a single fold.

    Parameters
    ----------
    labels : ndarray
        int ``(N,)``.
    n_folds : int
        Requested number of folds; fewer are used when there are fewer groups.
    seed : int
        Shuffling seed.
    groups : ndarray, optional
        int ``(N,)`` group ids (e.g. :func:`image_groups`); members share a fold and the
        group is stratified by its first member's label.

    Returns
    -------
    ndarray
        int64 ``(N,)`` fold index per sample, in ``0..F-1``; every fold holds at least one
        sample. Classes with fewer members than folds land in as many folds as they have
        members (scikit-learn's stratification, no error).
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    labels = np.asarray(labels)
    n = labels.shape[0]
    if n_folds < 2:
        raise ValueError(f"`n_folds` must be >= 2. Got {n_folds} instead.")
    if groups is None:
        groups = np.arange(n)
    _, rep, inverse = np.unique(groups, return_index=True, return_inverse=True)
    rep_labels = labels[rep]
    k = min(n_folds, rep.size)
    if k < 2:
        raise ValueError(
            f"cross-validation needs at least 2 distinct images; got {rep.size} distinct."
        )
    counts = np.bincount(rep_labels)
    counts = counts[counts > 0]
    rep_fold = np.empty(rep.size, dtype=np.int64)
    if counts.max() >= k:
        splitter: Any = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            split = list(splitter.split(np.zeros(rep.size), rep_labels))
    else:
        split = list(KFold(n_splits=k, shuffle=True, random_state=seed).split(rep_labels))
    for f, (_, test) in enumerate(split):
        rep_fold[test] = f
    return rep_fold[inverse.reshape(-1)]


def dataset_folds(dataset: Dataset, *, n_folds: int = 5, seed: int = 0) -> np.ndarray:
    """The fold of every sample of ``dataset``: :func:`make_folds` stratified by label,
    byte-identical images kept together. Same dataset and seed, same folds."""
    return make_folds(
        dataset.labels, n_folds=n_folds, seed=seed, groups=image_groups(dataset.images)
    )


# ----------------------------------------------------------------------------- metrics
def _accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(probs.argmax(axis=1) == labels))


def _log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(probs[np.arange(labels.size), labels], 1e-12, 1.0)
    return float(-np.mean(np.log(p)))


def _normalise_rows(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def _full_probs(probs: np.ndarray, classes: np.ndarray, n_classes: int) -> np.ndarray:
    """Spread ``(n, len(classes))`` probabilities into ``(n, n_classes)`` columns."""
    out = np.zeros((probs.shape[0], n_classes), dtype=np.float64)
    out[:, classes] = probs
    return out


# ----------------------------------------------------------------------------- candidates
def cpu_workers() -> int:
    """Folds trained at once on CPU: ``ASSAY_WORKERS`` when set, else the number of cores
    this process may run on (each fold uses one thread)."""
    env = os.environ.get("ASSAY_WORKERS", "")
    n = int(env) if env.isdigit() else len(os.sched_getaffinity(0))
    return max(1, n)


def _fit_fold(
    images: ImageBatches,
    labels: np.ndarray,
    train: np.ndarray,
    n_classes: int,
    config: ClassifierConfig,
    seed: int,
    ticker: Ticker | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Train one fold's CNN and predict every sample: ``(probs (N, K), emb (N, D), s)``.

    ``ticker`` counts the fold's epochs (progress lines over all folds)."""
    t0 = time.perf_counter()
    model = Classifier(config, n_classes=n_classes, seed=seed, device=images.device)
    on_epoch = None if ticker is None else (lambda *_: ticker.tick())
    model.fit(images.subset(train), labels[train], on_epoch=on_epoch)
    probs, emb = model.predict_with_embedding(images)
    return probs, emb, time.perf_counter() - t0


def _run_folds(
    jobs: list[dict[str, Any]], *, workers: int, cpu: bool
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Run :func:`_fit_fold` for every job.

    On CPU, torch runs single-threaded meanwhile and ``workers`` folds train at once in
    Python threads (torch releases the GIL inside its kernels). One intra-op thread per
    fold scales with the cores without OpenMP barriers, which stall badly when the
    cores are shared with other processes, and gives the same numbers whatever
    ``workers`` is. On CUDA the folds run one after another.
    """
    if not cpu:
        return [_fit_fold(**job) for job in jobs]
    from assay.models.threads import side_by_side

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # interrupted (Ctrl+C, SIGTERM): the running folds stop at their next step and
        # the ones not begun are dropped, instead of trained before the command can stop
        return side_by_side([lambda job=job: _fit_fold(**job) for job in jobs], workers=workers)
    finally:
        torch.set_num_threads(threads)


def _cv_cnn(
    dataset: Dataset,
    folds: np.ndarray,
    *,
    config: ClassifierConfig,
    seed: int,
    device: torch.device,
    workers: int,
    log: Callable[[str], None],
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_folds = int(folds.max()) + 1
    images = ImageBatches(dataset.images, device=device, channels_last=True)
    jobs = [
        {
            "images": images,
            "labels": dataset.labels,
            "train": np.flatnonzero(folds != f),
            "n_classes": dataset.n_classes,
            "config": config,
            "seed": _fold_seed(seed, f),
        }
        for f in range(n_folds)
    ]
    cpu = device.type == "cpu"
    workers = max(1, min(workers, n_folds)) if cpu else 1
    log(f"cnn: {n_folds} folds, {workers} at a time, {config.epochs} epochs each")
    ticker = Ticker("[detect] cnn epochs", n_folds * config.epochs, enabled=progress)
    for job in jobs:
        job["ticker"] = ticker
    outputs = _run_folds(jobs, workers=workers, cpu=cpu)
    return _merge_folds(dataset.labels, folds, outputs, log=log)


def _fold_seed(seed: int, fold: int) -> int:
    return seed * 1000 + fold


def _merge_folds(
    labels: np.ndarray,
    folds: np.ndarray,
    outputs: list[tuple[np.ndarray, np.ndarray, float]],
    *,
    log: Callable[[str], None],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fold models' ``(probs (N, K), emb (N, D), seconds)`` -> out-of-fold probs,
    out-of-fold embeddings and the side-by-side ensemble embeddings."""
    n_folds = len(outputs)
    n, k = outputs[0][0].shape
    d = outputs[0][1].shape[1]
    probs = np.zeros((n, k), dtype=np.float64)
    emb_oof = np.zeros((n, d), dtype=np.float32)
    emb_all = np.zeros((n, n_folds * d), dtype=np.float32)
    for f, (p, z, seconds) in enumerate(outputs):
        test = folds == f
        probs[test] = p[test]
        emb_oof[test] = z[test]
        emb_all[:, f * d : (f + 1) * d] = _normalise_rows(z)
        log(
            f"cnn fold {f + 1}/{n_folds}: accuracy {_accuracy(p[test], labels[test]):.4f} "
            f"({seconds:.1f}s)"
        )
    return probs, emb_oof, emb_all


def _sklearn_candidates(seed: int) -> dict[str, Any]:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC

    return {
        "svc": CalibratedClassifierCV(
            SVC(C=3.0, gamma="scale", random_state=seed), method="sigmoid", cv=3
        ),
        "logreg": LogisticRegression(C=0.3, max_iter=500),
    }


def _cv_sklearn(
    estimator: Any, x: np.ndarray, labels: np.ndarray, folds: np.ndarray, n_classes: int
) -> np.ndarray:
    from sklearn.base import clone

    probs = np.zeros((x.shape[0], n_classes), dtype=np.float64)
    for f in range(int(folds.max()) + 1):
        train, test = folds != f, folds == f
        y = labels[train]
        classes = np.unique(y)
        if classes.size == 1:
            probs[np.ix_(test, classes)] = 1.0
            continue
        est = clone(estimator)
        # The calibrator's inner CV needs every class at least ``cv`` times; fall back to
        # a plain logistic model on folds where a class is too small for it.
        if hasattr(est, "cv") and np.bincount(y)[classes].min() < int(est.cv):
            from sklearn.linear_model import LogisticRegression

            est = LogisticRegression(C=0.3, max_iter=500)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(x[train], y)
            probs[test] = _full_probs(est.predict_proba(x[test]), est.classes_, n_classes)
    probs /= probs.sum(axis=1, keepdims=True)
    return probs


def _pca_features(images: np.ndarray, *, seed: int) -> np.ndarray:
    """Unsupervised feature space for scikit-learn-only runs: up to 32 principal
    components of the pixels, float32 ``(N, d)``."""
    from sklearn.decomposition import PCA

    x = images.reshape(len(images), -1).astype(np.float32) / 255.0
    n_comp = max(1, min(32, x.shape[0] - 1, x.shape[1]))
    return PCA(n_components=n_comp, random_state=seed).fit_transform(x).astype(np.float32)


# ----------------------------------------------------------------------------- main
def out_of_fold(
    dataset: Dataset,
    *,
    n_folds: int = 5,
    seed: int = 0,
    device: str | torch.device | None = "auto",
    model: str = "auto",
    config: ClassifierConfig | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> OOFResult:
    """Cross-validate a classifier on ``dataset``; return out-of-fold predictions.

    Parameters
    ----------
    dataset : Dataset
        ``N`` images of ``K`` classes.
    n_folds : int
        Folds (5 by default; fewer when there are fewer distinct images).
    seed : int
        Seeds the split and every model.
    device : str or torch.device
        Where the CNN trains (``"auto"``: CUDA when present).
    model : {"auto", "cnn", "svc", "logreg", "cnn+svc", "cnn+logreg"}
        ``"auto"`` follows the rule in the module docstring.
    config : ClassifierConfig, optional
        CNN settings (default :meth:`ClassifierConfig.for_images`).
    workers : int, optional
        On CPU, this many folds train at once, each single-threaded (default
        :func:`cpu_workers`). Results do not depend on it.
    progress : bool
        Print one line per fold and candidate.

    Returns
    -------
    OOFResult
    """
    valid = ("auto", "cnn", "svc", "logreg", "cnn+svc", "cnn+logreg")
    if model not in valid:
        raise ValueError(f"`model` must be one of {valid}. Got {model!r} instead.")
    t_start = time.perf_counter()
    dev = pick_device(None if device is None else str(device))
    n_workers = cpu_workers() if workers is None else int(workers)

    def log(msg: str) -> None:
        if progress:
            progress_line(f"[detect] {msg}")

    folds = dataset_folds(dataset, n_folds=n_folds, seed=seed)
    if config is None:
        config = ClassifierConfig.for_images(dataset.images.shape)

    cnn = None
    if model == "auto" or "cnn" in model.split("+"):
        t0 = time.perf_counter()
        outputs = _cv_cnn(
            dataset, folds, config=config, seed=seed, device=dev, workers=n_workers, log=log,
            progress=progress,
        )
        cnn = (*outputs, time.perf_counter() - t0)
    return _choose(dataset, folds, cnn, model=model, config=config, seed=seed, log=log,
                   t_start=t_start)  # fmt: skip


def _choose(
    dataset: Dataset,
    folds: np.ndarray,
    cnn: tuple[np.ndarray, np.ndarray, np.ndarray, float] | None,
    *,
    model: str,
    config: ClassifierConfig,
    seed: int,
    log: Callable[[str], None],
    t_start: float,
) -> OOFResult:
    """Cross-validate the scikit-learn candidates on the same folds, pick the model.

    ``cnn`` is the CNN's ``(probs, emb_oof, emb_all, seconds)``, or None without a CNN.
    """
    labels = dataset.labels
    k = dataset.n_classes
    candidates: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    use_cnn = cnn is not None
    if cnn is not None:
        candidates["cnn"], emb_oof, emb_all, seconds["cnn"] = cnn
    else:
        emb_oof = emb_all = _pca_features(dataset.images, seed=seed)

    tiny = min(dataset.image_shape[:2]) < TINY_SIDE
    wanted = {model} if model != "auto" else ({"svc", "logreg"} if tiny else set())
    sk_names = sorted({name for w in wanted for name in w.split("+") if name != "cnn"})
    if sk_names:
        x = dataset.images.reshape(len(dataset), -1).astype(np.float64) / 255.0
        for name, est in _sklearn_candidates(seed).items():
            if name in sk_names:
                t0 = time.perf_counter()
                candidates[name] = _cv_sklearn(est, x, labels, folds, k)
                seconds[name] = time.perf_counter() - t0
        if use_cnn:
            sk_best = max(
                sk_names,
                key=lambda m: (_accuracy(candidates[m], labels), -_log_loss(candidates[m], labels)),
            )
            candidates[f"cnn+{sk_best}"] = (candidates["cnn"] + candidates[sk_best]) / 2.0
            seconds[f"cnn+{sk_best}"] = seconds["cnn"] + seconds[sk_best]

    scores = {
        name: {
            "accuracy": _accuracy(p, labels),
            "log_loss": _log_loss(p, labels),
            "seconds": round(seconds[name], 2),
        }
        for name, p in candidates.items()
    }
    for name, s in scores.items():
        log(f"candidate {name}: out-of-fold accuracy {s['accuracy']:.4f}")
    if model == "auto":
        chosen = max(scores, key=lambda m: (scores[m]["accuracy"], -scores[m]["log_loss"]))
    else:
        chosen = model
    pred_probs = candidates[chosen]
    return OOFResult(
        pred_probs=pred_probs,
        embeddings=emb_oof,
        ensemble_embeddings=emb_all,
        folds=folds,
        model=chosen,
        accuracy=_accuracy(pred_probs, labels),
        candidates=scores,
        seconds=time.perf_counter() - t_start,
        config=config.to_dict(),
    )


# ----------------------------------------------------------------------------- one fold at a time
@dataclass
class FoldResult:
    """One fold model's predictions for every sample (the unit of parallel training).

    Attributes
    ----------
    fold, n_folds : int
        Which fold was held out, of how many (after :func:`make_folds` has capped them).
    probs : ndarray
        float64 ``(N, K)``, the fold model's predicted probabilities for every sample.
    embeddings : ndarray
        float32 ``(N, D)``, its penultimate-layer embedding of every sample.
    seconds : float
        Training and prediction time.
    """

    fold: int
    n_folds: int
    probs: np.ndarray
    embeddings: np.ndarray
    seconds: float = 0.0

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write an ``.npz`` (plain arrays, no pickles)."""
        np.savez(
            path,
            fold=np.int64(self.fold),
            n_folds=np.int64(self.n_folds),
            probs=self.probs,
            embeddings=self.embeddings,
            seconds=np.float64(self.seconds),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FoldResult:
        with np.load(path, allow_pickle=False) as z:
            return cls(
                fold=int(z["fold"]),
                n_folds=int(z["n_folds"]),
                probs=z["probs"],
                embeddings=z["embeddings"],
                seconds=float(z["seconds"]),
            )


def fit_fold(
    dataset: Dataset,
    fold: int,
    *,
    n_folds: int = 5,
    seed: int = 0,
    device: str | torch.device | None = "auto",
    config: ClassifierConfig | None = None,
    progress: bool = False,
) -> FoldResult:
    """Train the CNN of one fold of :func:`out_of_fold` and predict every sample.

    The folds, seeds and settings are those of :func:`out_of_fold`, so
    :func:`assemble_oof` over all folds gives its result, whichever process or machine
    trained each fold. On CPU the fold trains with one torch thread (as each fold does in
    :func:`out_of_fold`), so folds can run side by side and still give the same numbers.

    Raises
    ------
    ValueError
        ``fold`` outside ``0..F-1`` for the ``F`` folds the data allows.
    """
    dev = pick_device(None if device is None else str(device))
    folds = dataset_folds(dataset, n_folds=n_folds, seed=seed)
    n_used = int(folds.max()) + 1
    if not 0 <= fold < n_used:
        raise ValueError(f"`fold` must be in 0..{n_used - 1} for this dataset. Got {fold}.")
    if config is None:
        config = ClassifierConfig.for_images(dataset.images.shape)
    job = {
        "images": ImageBatches(dataset.images, device=dev, channels_last=True),
        "labels": dataset.labels,
        "train": np.flatnonzero(folds != fold),
        "n_classes": dataset.n_classes,
        "config": config,
        "seed": _fold_seed(seed, fold),
    }
    if dev.type == "cpu":
        torch.set_num_threads(1)
    probs, emb, seconds = _fit_fold(**job)
    if progress:
        held = folds == fold
        progress_line(
            f"[detect] cnn fold {fold + 1}/{n_used}: accuracy "
            f"{_accuracy(probs[held], dataset.labels[held]):.4f} ({seconds:.1f}s)"
        )
    return FoldResult(fold=fold, n_folds=n_used, probs=probs, embeddings=emb, seconds=seconds)


def assemble_oof(
    dataset: Dataset,
    fold_results: list[FoldResult],
    *,
    seed: int = 0,
    model: str = "auto",
    config: ClassifierConfig | None = None,
    progress: bool = False,
) -> OOFResult:
    """Merge every fold's :class:`FoldResult` into the :class:`OOFResult` that
    :func:`out_of_fold` would have returned (scikit-learn candidates included).

    Raises
    ------
    ValueError
        Missing or repeated folds, or results made for another dataset or fold count.
    """
    t_start = time.perf_counter()
    if not fold_results:
        raise ValueError("`fold_results` is empty.")
    n_used = fold_results[0].n_folds
    folds = dataset_folds(dataset, n_folds=n_used, seed=seed)
    got = sorted(r.fold for r in fold_results)
    if got != list(range(int(folds.max()) + 1)):
        raise ValueError(f"need one result per fold 0..{int(folds.max())}; got folds {got}.")
    n, k = len(dataset), dataset.n_classes
    if any(r.probs.shape != (n, k) for r in fold_results):
        raise ValueError(f"fold results must hold ({n}, {k}) probabilities for this dataset.")
    if config is None:
        config = ClassifierConfig.for_images(dataset.images.shape)

    def log(msg: str) -> None:
        if progress:
            progress_line(f"[detect] {msg}")

    ordered = sorted(fold_results, key=lambda r: r.fold)
    outputs = [(r.probs, r.embeddings, r.seconds) for r in ordered]
    merged = _merge_folds(dataset.labels, folds, outputs, log=log)
    cnn = (*merged, float(sum(r.seconds for r in ordered)))
    return _choose(dataset, folds, cnn, model=model, config=config, seed=seed, log=log,
                   t_start=t_start)  # fmt: skip
