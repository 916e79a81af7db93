"""Outliers, near duplicates, non-iid ordering and class imbalance with cleanlab's Datalab.

One :class:`cleanlab.Datalab` run per detection run, on the classifier's feature space
(:attr:`DetectionContext.features`: every fold model's normalised penultimate embedding
side by side, so that distances between any two samples are comparable), computes four
issue types that share one k-nearest-neighbour graph:

- ``knn_outlier``: Datalab's ``outlier`` issue: the mean distance to the ``k`` nearest
  neighbours, turned into a score by ``exp(-d / median d)``; flagged above
  ``Q3 + (1 / t - 1) * IQR`` of those distances with ``t = 0.15`` (5.7 IQR; Datalab's
  default ``t = 0.37``, 1.7 IQR, flags 5.5 % of the uninjected MNIST test set and has a
  precision of 0.45 on MNIST with 5 % corrupted images; ``t = 0.15`` flags 0.3 % of
  clean MNIST and, united with the VAE and image-property flags, gives ``is_outlier``
  precision 0.96 at recall 0.87 there). (The final ``outlier_score`` of
  ``issues.parquet`` combines this with the VAE and image properties, see
  :mod:`pipeline.detect.combine`; the Datalab score alone is kept as ``knn_outlier_score``.)
- ``near_duplicate``: Datalab's pairs closer than ``0.13 x`` the median nearest-neighbour
  distance, kept when also closer than ``0.13 x`` the median of *their class* (a tight
  class of simple shapes is held to its own spread), united with the shift-aligned pixel copies of
  :func:`pipeline.detect.duplicate.pixel_near_duplicates` (an embedding trained for
  classification is not guaranteed to keep a lightly noised copy next to its original).
  The pairs are merged into groups; the first member in dataset order is the original,
  later members are flagged and point to it (``near_duplicate_of``).
- ``non_iid``: Datalab's permutation test of whether neighbours in feature space are also
  neighbours in dataset order (a dataset-level verdict, ``info["p_value"]``; at most one
  sample is flagged, the one with the lowest score, and only when the p-value is small).
  When the samples come ordered by class (as an image folder is read, class by class:
  :func:`label_runs`), the summary says so, since that order alone explains the verdict.
- ``class_imbalance``: samples of the rarest class when it holds under ``0.1 / K`` of the
  data.

Datalab needs the ``datasets`` package (``pip install "cleanlab[datalab]"``). Without it,
the same computations run on cleanlab's own building blocks (its k-NN graph and
distance-to-score transform, with Datalab's default thresholds) and ``info["backend"]``
says ``"cleanlab-core"``; ``non_iid`` then reports itself unavailable.
"""

from __future__ import annotations

import contextlib
import io
import sys
import warnings
from typing import Any

import numpy as np
import pandas as pd

from assay.pipeline.chunks import NEIGHBOUR_WORKING_MEMORY_MB
from assay.pipeline.dataset import Dataset
from assay.pipeline.detect.base import DetectorResult, register
from assay.pipeline.detect.duplicate import (
    PIXEL_RATIO,
    class_reference,
    pixel_near_duplicates,
)

__all__ = [
    "DetectorUnavailable",
    "datalab_issues",
    "detect_knn_outlier",
    "detect_near_duplicate",
    "detect_non_iid",
    "detect_class_imbalance",
    "groups_from_pairs",
    "label_runs",
    "outlier_excess",
]

#: Datalab's parameters (its defaults except the outlier threshold, see the module
#: docstring), used by the fallback too.
K_NEIGHBOURS = 10
OUTLIER_THRESHOLD = 0.15
NEAR_DUPLICATE_THRESHOLD = 0.13
IMBALANCE_THRESHOLD = 0.1
ISSUE_TYPES = ("outlier", "near_duplicate", "non_iid", "class_imbalance")


class DetectorUnavailable(RuntimeError):
    """A detector cannot run in this environment (reported as skipped, not as an error)."""


# ----------------------------------------------------------------------------- helpers
def groups_from_pairs(n: int, pairs: list[tuple[int, int]] | np.ndarray) -> np.ndarray:
    """Connected components of the pair graph; each labelled by its smallest row index.

    Parameters
    ----------
    n : int
        Number of rows.
    pairs : array-like of (i, j)
        Undirected links between rows.

    Returns
    -------
    ndarray
        int64 ``(N,)``: ``root[i]`` is the smallest row index in ``i``'s component
        (``root[i] == i`` for rows without links).
    """
    parent = np.arange(n, dtype=np.int64)

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = int(parent[a])
        return a

    for i, j in np.asarray(pairs, dtype=np.int64).reshape(-1, 2):
        ri, rj = find(int(i)), find(int(j))
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return np.array([find(i) for i in range(n)], dtype=np.int64)


def _sets_to_pairs(sets: list[np.ndarray]) -> np.ndarray:
    pairs = [(i, int(j)) for i, s in enumerate(sets) for j in np.asarray(s).ravel() if i != j]
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


def _datalab_available() -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from cleanlab import Datalab  # noqa: F401
            from cleanlab.datalab.datalab import Datalab as _  # noqa: F401
    except ImportError:
        return False
    return True


def _run_datalab(
    labels: np.ndarray, features: np.ndarray, *, k: int, seed: int, verbose: bool
) -> dict[str, Any]:
    from cleanlab.datalab.datalab import Datalab

    # Datalab prints as it goes (also with verbosity 0); keep stdout for the caller.
    sink = contextlib.redirect_stdout(sys.stderr if verbose else io.StringIO())
    with sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lab = Datalab(data={"label": labels}, label_name="label", verbosity=0)
        lab.find_issues(
            features=features,
            issue_types={
                "outlier": {"k": k, "threshold": OUTLIER_THRESHOLD},
                "near_duplicate": {"k": k, "threshold": NEAR_DUPLICATE_THRESHOLD},
                "non_iid": {"k": k, "seed": seed},
                "class_imbalance": {"threshold": IMBALANCE_THRESHOLD},
            },
        )
        return _datalab_results(lab, labels)


def _datalab_results(lab: Any, labels: np.ndarray) -> dict[str, Any]:
    found = set(lab.issue_summary["issue_type"]) if len(lab.issue_summary) else set()
    out: dict[str, Any] = {"backend": "datalab"}
    for name in ISSUE_TYPES:
        if name not in found:
            out[name] = RuntimeError(f"Datalab did not compute the {name!r} issue type.")
            continue
        frame = lab.get_issues(name)
        info = lab.get_info(name)
        entry: dict[str, Any] = {
            "is_issue": frame[f"is_{name}_issue"].to_numpy(dtype=bool),
            "score": frame[f"{name}_score"].to_numpy(dtype=np.float64),
            "info": {},
        }
        if name == "outlier":
            entry["info"] = {"issue_threshold": float(info.get("issue_threshold", np.nan))}
        elif name == "near_duplicate":
            entry["sets"] = [np.asarray(s, dtype=np.int64) for s in info["near_duplicate_sets"]]
            entry["info"] = {
                "median_nn_distance": float(info.get("median_distance_to_nearest_neighbor", 0))
            }
        elif name == "non_iid":
            entry["info"] = {"p_value": float(info.get("p-value", np.nan))}
        elif name == "class_imbalance":
            entry["info"] = {"rarest_class": int(np.argmin(np.bincount(labels)))}
        out[name] = entry
    return out


def _run_core(labels: np.ndarray, features: np.ndarray, *, k: int) -> dict[str, Any]:
    """Datalab's outlier, near-duplicate and class-imbalance rules without Datalab."""
    from cleanlab.internal.neighbor.knn_graph import create_knn_graph_and_index
    from cleanlab.internal.outlier import correct_precision_errors, transform_distances_to_scores

    n = features.shape[0]
    k_eff = max(1, min(k, n - 1))
    graph, knn = create_knn_graph_and_index(features, n_neighbors=k_eff)
    metric = knn.metric if isinstance(knn.metric, str) else knn.metric.__name__
    dist = graph.data.reshape(n, -1)
    idx = graph.indices.reshape(n, -1)
    out: dict[str, Any] = {"backend": "cleanlab-core"}

    avg = dist.mean(axis=1)
    q1, q3 = np.percentile(avg, [25, 75])
    issue_threshold = float(q3 + (1.0 / OUTLIER_THRESHOLD - 1.0) * (q3 - q1))
    scale = float(max(np.median(avg), 100 * np.finfo(np.float64).eps))
    score = transform_distances_to_scores(avg, t=1, scaling_factor=scale)
    score = correct_precision_errors(score, avg, metric)
    out["outlier"] = {
        "is_issue": avg > issue_threshold,
        "score": np.asarray(score, dtype=np.float64),
        "info": {"issue_threshold": issue_threshold},
    }

    nn = dist[:, 0]
    median = float(max(np.median(nn), np.finfo(np.float64).eps))
    mask = dist < NEAR_DUPLICATE_THRESHOLD * median
    sets: list[np.ndarray] = [idx[i][mask[i]] for i in range(n)]
    for i in range(n):
        for j in sets[i]:
            if i not in sets[j]:
                sets[j] = np.append(sets[j], i)
    dup_score = 1.0 - np.exp(-nn / median)
    dup_score[np.isclose(nn, 0)] = 0.0
    out["near_duplicate"] = {
        "is_issue": np.array([s.size > 0 for s in sets]),
        "score": dup_score,
        "sets": sets,
        "info": {"median_nn_distance": median},
    }

    n_classes = int(labels.max()) + 1
    class_probs = np.bincount(labels) / n
    present = class_probs > 0
    rarest = int(np.flatnonzero(present)[np.argmin(class_probs[present])])
    imbalanced = class_probs[rarest] < IMBALANCE_THRESHOLD / max(int(present.sum()), n_classes)
    out["class_imbalance"] = {
        "is_issue": (labels == rarest) & imbalanced,
        "score": np.where(labels == rarest, class_probs[rarest], 1.0),
        "info": {"rarest_class": rarest},
    }
    out["non_iid"] = DetectorUnavailable(
        "the non-iid test needs cleanlab's Datalab (pip install 'cleanlab[datalab]')"
    )
    return out


def datalab_issues(
    labels: np.ndarray,
    features: np.ndarray,
    *,
    k: int = K_NEIGHBOURS,
    seed: int = 0,
    backend: str = "auto",
    verbose: bool = False,
) -> dict[str, Any]:
    """Run Datalab's outlier, near-duplicate, non-iid and class-imbalance checks.

    Parameters
    ----------
    labels : ndarray
        int ``(N,)``.
    features : ndarray
        float ``(N, D)``.
    k : int, keyword-only
        Neighbours of the kNN graph.
    seed : int, keyword-only
        Seed of the non-iid permutation test.
    backend : {"auto", "datalab", "cleanlab-core"}, keyword-only
        ``"auto"`` uses Datalab when it can be imported.
    verbose : bool, keyword-only
        Let Datalab print.

    Returns
    -------
    dict
        ``backend`` and, per issue type in ``outlier``, ``near_duplicate``, ``non_iid``,
        ``class_imbalance``, either a dict with ``is_issue`` (bool ``(N,)``), ``score``
        (float ``(N,)``), ``info`` (and ``sets`` for near duplicates) or the exception
        that kept it from being computed.
    """
    if backend not in ("auto", "datalab", "cleanlab-core"):
        raise ValueError(
            f"`backend` must be 'auto', 'datalab' or 'cleanlab-core'. Got {backend!r} instead."
        )
    labels = np.asarray(labels, dtype=np.int64)
    features = np.ascontiguousarray(features, dtype=np.float32)
    if features.ndim != 2 or features.shape[0] != labels.shape[0]:
        raise ValueError(
            f"`features` must have shape ({labels.shape[0]}, D). Got {features.shape} instead."
        )
    if labels.shape[0] < 3:
        raise ValueError(f"kNN issue checks need at least 3 samples. Got {labels.shape[0]}.")
    k = max(1, min(int(k), labels.shape[0] - 1))
    use_datalab = backend == "datalab" or (backend == "auto" and _datalab_available())
    import sklearn

    # distances in blocks of NEIGHBOUR_WORKING_MEMORY_MB, not up to scikit-learn's 1 GB
    with sklearn.config_context(working_memory=NEIGHBOUR_WORKING_MEMORY_MB):
        if use_datalab:
            return _run_datalab(labels, features, k=k, seed=seed, verbose=verbose)
        return _run_core(labels, features, k=k)


def _shared(dataset: Dataset, context: Any, *, k: int, backend: str) -> dict[str, Any]:
    key = ("datalab", k, backend)
    if key not in context.cache:
        try:
            context.cache[key] = datalab_issues(
                dataset.labels,
                context.features,
                k=k,
                seed=context.seed,
                backend=backend,
                verbose=False,
            )
        except Exception as exc:
            context.cache[key] = exc
    shared = context.cache[key]
    if isinstance(shared, Exception):
        raise RuntimeError(f"the Datalab run failed: {shared}") from shared
    return shared


def _entry(shared: dict[str, Any], name: str) -> dict[str, Any]:
    entry = shared[name]
    if isinstance(entry, Exception):
        raise entry
    return entry


def _table(dataset: Dataset, name: str, is_issue: np.ndarray, score: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sample_id": dataset.sample_ids,
            f"is_{name}_issue": np.asarray(is_issue, dtype=bool),
            f"{name}_score": np.clip(np.asarray(score, dtype=np.float64), 0.0, 1.0),
        }
    )


# ----------------------------------------------------------------------------- detectors
@register("knn_outlier")
def detect_knn_outlier(
    dataset: Dataset, context: Any, *, k: int = K_NEIGHBOURS, backend: str = "auto", **_: Any
) -> DetectorResult:
    """Datalab's kNN outlier issue on the classifier's feature space.

    Returns
    -------
    DetectorResult
        ``table``: ``sample_id``, ``is_knn_outlier_issue``, ``knn_outlier_score``.
    """
    shared = _shared(dataset, context, k=k, backend=backend)
    entry = _entry(shared, "outlier")
    table = _table(dataset, "knn_outlier", entry["is_issue"], entry["score"])
    n = int(entry["is_issue"].sum())
    return DetectorResult(
        name="knn_outlier",
        table=table,
        summary=f"kNN outliers: {n} of {len(dataset)} samples far from their {k} nearest "
        f"neighbours in the classifier's feature space",
        info={"backend": shared["backend"], "k": k, **entry["info"]},
        excess=outlier_excess(entry["score"]),
    )


def outlier_excess(score: np.ndarray) -> np.ndarray:
    """Datalab's kNN outlier evidence in units of its own threshold, float ``(N,)``.

    Datalab scores ``exp(-a / median(a))`` with ``a`` the mean distance to the ``k``
    nearest neighbours, and flags ``a > q3 + (1 / OUTLIER_THRESHOLD - 1) * IQR`` over the
    dataset's ``a``; so ``(a - q3) / ((1 / OUTLIER_THRESHOLD - 1) * IQR)``, computed from
    the scores alone (the rule does not depend on the scale of ``a``), passes 1 exactly
    when a sample is flagged.
    """
    a = -np.log(np.clip(np.asarray(score, dtype=np.float64), 1e-300, 1.0))
    if a.size == 0:
        return a
    q1, q3 = np.percentile(a, [25, 75])
    spread = (1.0 / OUTLIER_THRESHOLD - 1.0) * max(float(q3 - q1), 1e-12)
    return (a - q3) / spread


def _per_class_pairs(pairs: np.ndarray, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The pairs closer than :data:`NEAR_DUPLICATE_THRESHOLD` times their class's median
    nearest-neighbour distance in feature space (the smaller of the two classes'), so a
    tight class (simple shapes) is held to its own spread, not the dataset's."""
    from sklearn.neighbors import NearestNeighbors

    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if len(pairs) == 0 or len(features) < 3:
        return pairs
    x = np.asarray(features, dtype=np.float32)
    dist, _ = NearestNeighbors(n_neighbors=2).fit(x).kneighbors(x)
    ref = class_reference(dist[:, 1], labels)
    d = np.linalg.norm(x[pairs[:, 0]] - x[pairs[:, 1]], axis=1)
    limit = NEAR_DUPLICATE_THRESHOLD * np.minimum(ref[pairs[:, 0]], ref[pairs[:, 1]])
    return pairs[d < limit]


@register("near_duplicate")
def detect_near_duplicate(
    dataset: Dataset,
    context: Any,
    *,
    k: int = K_NEIGHBOURS,
    backend: str = "auto",
    pixel_ratio: float = PIXEL_RATIO,
    max_shift: int = 1,
    **_: Any,
) -> DetectorResult:
    """Near duplicates: Datalab's sets in feature space united with aligned pixel copies.

    Pairs found by either Datalab (classifier features) or
    :func:`pipeline.detect.duplicate.pixel_near_duplicates` (pixels, up to ``max_shift``
    pixels of shift) are merged into groups; the first member in dataset order is the
    original. If the classifier or Datalab fails, the pixel pairs are still reported
    (``info["datalab_error"]`` says why the rest is missing).

    Returns
    -------
    DetectorResult
        ``table``: ``sample_id``, ``is_near_duplicate_issue`` (True for every group
        member after the first), ``near_duplicate_score`` (the lower of Datalab's score
        and the pixel distance relative to the median, clipped to [0, 1]),
        ``near_duplicate_of`` (int64 ``sample_id`` of the group's first member, ``-1``
        for firsts and singletons).
    """
    n = len(dataset)
    pixel_pairs, relative = pixel_near_duplicates(
        dataset.images, labels=dataset.labels, ratio=pixel_ratio, max_shift=max_shift,
        seed=context.seed,
    )  # fmt: skip
    score = np.clip(relative, 0.0, 1.0)
    info: dict[str, Any] = {"k": k, "pixel_ratio": pixel_ratio, "max_shift": max_shift}
    feature_pairs = np.zeros((0, 2), dtype=np.int64)
    try:
        shared = _shared(dataset, context, k=k, backend=backend)
        entry = _entry(shared, "near_duplicate")
        feature_pairs = _per_class_pairs(
            _sets_to_pairs(entry["sets"]), context.features, dataset.labels
        )
        score = np.minimum(score, entry["score"])
        info.update({"backend": shared["backend"], **entry["info"]})
    except Exception as exc:
        info["datalab_error"] = f"{type(exc).__name__}: {exc}"
    root = groups_from_pairs(n, np.concatenate([feature_pairs, pixel_pairs]))
    later = root != np.arange(n)
    table = _table(dataset, "near_duplicate", later, score)
    table["near_duplicate_of"] = np.where(later, dataset.sample_ids[root], -1).astype(np.int64)
    n_groups = int(np.unique(root[later]).size)
    info.update(
        {
            "n_groups": n_groups,
            "n_pairs_features": int(len(np.unique(np.sort(feature_pairs, axis=1), axis=0))),
            "n_pairs_pixels": int(len(pixel_pairs)),
        }
    )
    return DetectorResult(
        name="near_duplicate",
        table=table,
        summary=f"near duplicates: {int(later.sum())} samples nearly identical to an earlier "
        f"one ({n_groups} groups)",
        info=info,
    )


@register("non_iid")
def detect_non_iid(
    dataset: Dataset, context: Any, *, k: int = K_NEIGHBOURS, backend: str = "auto", **_: Any
) -> DetectorResult:
    """Datalab's non-iid test (is the dataset order related to the content?).

    Returns
    -------
    DetectorResult
        ``table``: ``sample_id``, ``is_non_iid_issue``, ``non_iid_score``;
        ``info["p_value"]``.
    """
    shared = _shared(dataset, context, k=k, backend=backend)
    entry = _entry(shared, "non_iid")
    p = entry["info"].get("p_value", float("nan"))
    verdict = "looks non-iid" if np.isfinite(p) and p < 0.05 else "no evidence against iid"
    runs, expected = label_runs(dataset.labels)
    ordered = runs < 0.5 * expected
    summary = f"non-iid: {verdict} (p-value {p:.3g})"
    if ordered:
        summary += (
            f"; the samples come ordered by class ({runs:,} runs of one label where a "
            f"random order would give about {expected:,.0f}, as an image folder read class "
            "by class does), which alone makes neighbours in content neighbours in order"
        )
    return DetectorResult(
        name="non_iid",
        table=_table(dataset, "non_iid", entry["is_issue"], entry["score"]),
        summary=summary,
        info={"backend": shared["backend"], **entry["info"], "label_runs": runs,
              "label_runs_if_random": round(expected, 1), "ordered_by_class": bool(ordered)},
    )  # fmt: skip


def label_runs(labels: np.ndarray) -> tuple[int, float]:
    """Runs of one label along the dataset order, and their expected number when the
    order is random (``1 + (n - 1) * P(two random samples differ in label)``).

    Far fewer runs than expected means the data are ordered by class; Datalab's non-iid
    test, which asks whether neighbours in feature space are neighbours in order, then
    fires whatever the images are.
    """
    y = np.asarray(labels)
    n = y.size
    if n < 2:
        return n, float(n)
    runs = 1 + int(np.count_nonzero(y[1:] != y[:-1]))
    counts = np.unique(y, return_counts=True)[1].astype(np.float64)
    same = float((counts * (counts - 1)).sum() / (n * (n - 1)))
    return runs, 1.0 + (n - 1) * (1.0 - same)


@register("class_imbalance")
def detect_class_imbalance(
    dataset: Dataset, context: Any, *, k: int = K_NEIGHBOURS, backend: str = "auto", **_: Any
) -> DetectorResult:
    """Datalab's class-imbalance issue (the rarest class, when under ``0.1 / K``).

    Returns
    -------
    DetectorResult
        ``table``: ``sample_id``, ``is_class_imbalance_issue``, ``class_imbalance_score``.
    """
    shared = _shared(dataset, context, k=k, backend=backend)
    entry = _entry(shared, "class_imbalance")
    rarest = entry["info"].get("rarest_class", -1)
    n = int(entry["is_issue"].sum())
    name = dataset.class_names[rarest] if 0 <= rarest < dataset.n_classes else "?"
    summary = (
        f"class imbalance: class {name!r} holds only {n} samples"
        if n
        else "class imbalance: none (every class holds at least 0.1 / K of the data)"
    )
    return DetectorResult(
        name="class_imbalance",
        table=_table(dataset, "class_imbalance", entry["is_issue"], entry["score"]),
        summary=summary,
        info={"backend": shared["backend"], **entry["info"]},
    )
