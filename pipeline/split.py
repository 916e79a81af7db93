"""The held-out trusted split: real samples set aside for judging generative models.

Before anything is trained, a stratified slice of the data is taken from the samples that
are believed clean -- the ones with ``injected == "clean"`` when the data carries injected
dirt with ground truth, otherwise the ones the detection stage did not flag
(``is_dirty`` false) -- and divided into a *judge-train* part (trains the judge classifier)
and a *judge-test* part (the real reference of every GAN metric). No GAN ever sees either:
use :meth:`TrustedSplit.exclude` to remove them from a GAN's training data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from assay.pipeline.dataset import Dataset
from assay.pipeline.errors import DataError


@dataclass(frozen=True)
class TrustedSplit:
    """Sample ids of the trusted slice, divided into judge-train and judge-test.

    Attributes
    ----------
    judge_train, judge_test : int64 ``(n_train,)``, ``(n_test,)`` sample ids.
    source : ``"injected"`` (ground truth) or ``"detection"`` (not flagged dirty).
    pool_size : number of samples the slice was drawn from.
    """

    judge_train: np.ndarray
    judge_test: np.ndarray
    source: str
    pool_size: int

    @property
    def trusted(self) -> np.ndarray:
        """All trusted ids, ``(n_train + n_test,)``."""
        return np.concatenate([self.judge_train, self.judge_test])

    def exclude(self, dataset: Dataset) -> Dataset:
        """``dataset`` without the trusted samples (what a GAN may train on)."""
        return dataset.subset(~np.isin(dataset.sample_ids, self.trusted))

    def train_set(self, dataset: Dataset) -> Dataset:
        """The judge-train samples of ``dataset``, in split order."""
        return _take(dataset, self.judge_train)

    def test_set(self, dataset: Dataset) -> Dataset:
        """The judge-test samples of ``dataset``, in split order."""
        return _take(dataset, self.judge_test)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "pool_size": int(self.pool_size),
            "n_judge_train": int(self.judge_train.size),
            "n_judge_test": int(self.judge_test.size),
        }


def _take(dataset: Dataset, ids: np.ndarray) -> Dataset:
    pos = pd.Index(dataset.sample_ids).get_indexer(ids)
    if (pos < 0).any():
        raise DataError(
            f"{int((pos < 0).sum())} trusted sample id(s) are not in this dataset, "
            f"e.g. {int(ids[pos < 0][0])}."
        )
    return dataset.subset(pos)


def stratified_take(
    labels: np.ndarray, n: int, *, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Pick ``n`` of ``len(labels)`` positions, class proportions kept (largest remainder).

    Returns ``(taken, rest)``: sorted int64 positions. Each class contributes
    ``n * count / len(labels)`` rounded so that the total is exactly ``n``.
    """
    labels = np.asarray(labels)
    total = labels.size
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n / max(total, 1)
    take = np.floor(quota).astype(int)
    short = n - int(take.sum())
    order = np.argsort(-(quota - take), kind="stable")
    take[order[:short]] += 1
    taken = []
    for cls, k in zip(classes, take, strict=True):
        members = np.flatnonzero(labels == cls)
        taken.append(rng.choice(members, size=int(k), replace=False))
    chosen = np.sort(np.concatenate(taken)).astype(np.int64) if taken else np.zeros(0, int)
    rest = np.setdiff1d(np.arange(total), chosen).astype(np.int64)
    return chosen, rest


def trusted_split(
    dataset: Dataset,
    issues: pd.DataFrame | None = None,
    *,
    fraction: float = 0.1,
    test_fraction: float = 0.3,
    min_per_class: int = 0,
    seed: int = 0,
) -> TrustedSplit:
    """Set aside a stratified slice of believed-clean samples for judging.

    Parameters
    ----------
    dataset : Dataset
        ``N`` samples (the raw, dirty dataset).
    issues : pandas.DataFrame or None
        The detection table (``sample_id``, ``is_dirty``); used when ``dataset`` has no
        ``injected`` column.
    fraction : float, keyword-only
        Size of the slice as a fraction of ``N``, in (0, 1); capped at the number of
        believed-clean samples.
    test_fraction : float, keyword-only
        Share of the slice that becomes judge-test, in (0, 1).
    min_per_class : int, keyword-only
        Raise the slice to at least ``min_per_class * K`` samples (never above a quarter of
        ``N``), so that metrics on a small dataset are not computed on a handful of images
        per class. ``0``: the fraction alone decides.
    seed : int, keyword-only
        Seeds the draw; same inputs, same split.

    Returns
    -------
    TrustedSplit

    Raises
    ------
    DataError
        Bad fractions, no way to tell clean samples (no ``injected`` column and no
        ``issues``), or fewer than two believed-clean samples.
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"`fraction` must be in (0, 1). Got {fraction} instead.")
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"`test_fraction` must be in (0, 1). Got {test_fraction} instead.")
    if "injected" in dataset.columns.columns:
        clean = dataset.columns["injected"].astype(str).to_numpy() == "clean"
        source = "injected"
    elif issues is not None:
        if not {"sample_id", "is_dirty"} <= set(issues.columns):
            raise DataError("`issues` must have columns sample_id and is_dirty.")
        flags = issues.set_index("sample_id")["is_dirty"]
        flagged = flags.reindex(dataset.sample_ids)
        if flagged.isna().any():
            raise DataError(
                f"`issues` has no row for {int(flagged.isna().sum())} sample(s) of the dataset."
            )
        clean = ~flagged.to_numpy(dtype=bool)
        source = "detection"
    else:
        raise DataError(
            "A trusted split needs to know which samples are clean: the dataset has no "
            "`injected` column, so pass the detection table as `issues`."
        )
    pool = np.flatnonzero(clean)
    if pool.size < 2:
        raise DataError(
            f"Only {pool.size} believed-clean sample(s); a trusted split needs at least two."
        )
    n = int(round(fraction * len(dataset)))
    if min_per_class > 0:
        n = max(n, min(min_per_class * dataset.n_classes, len(dataset) // 4))
    n = min(max(2, n), pool.size)
    rng = np.random.default_rng(seed)
    taken, _ = stratified_take(dataset.labels[pool], n, rng=rng)
    trusted_pos = pool[taken]
    n_test = min(max(1, int(round(test_fraction * n))), n - 1)
    test_idx, train_idx = stratified_take(dataset.labels[trusted_pos], n_test, rng=rng)
    ids = dataset.sample_ids
    return TrustedSplit(
        judge_train=ids[trusted_pos[train_idx]].astype(np.int64),
        judge_test=ids[trusted_pos[test_idx]].astype(np.int64),
        source=source,
        pool_size=int(pool.size),
    )
