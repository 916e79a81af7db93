"""Make a dirty copy of a dataset on purpose and record the ground truth per sample."""

from __future__ import annotations

import numbers
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from assay.pipeline.dataset import Dataset
from assay.pipeline.errors import DataError
from assay.pipeline.inject import images as im
from assay.pipeline.inject.config import (
    CORRUPTION_KINDS,
    DIGIT_PAIRS,
    DUPLICATE_KINDS,
    KINDS,
    PRESETS,
    InjectionConfig,
    resolve,
)

GROUND_TRUTH_COLUMNS: tuple[str, ...] = ("injected", "true_label", "duplicate_source")
#: Kinds that count as a corrupted (or out-of-distribution) image.
CORRUPTED_KINDS: tuple[str, ...] = (*CORRUPTION_KINDS, "ood")


# --------------------------------------------------------------------------- label noise
def _class_index(item: int | str, class_names: tuple[str, ...]) -> int:
    if isinstance(item, str):
        if item not in class_names:
            raise DataError(
                f"`pairs` names class {item!r}, which is not a class of this dataset; "
                f"the classes are {list(class_names)}."
            )
        return class_names.index(item)
    if not 0 <= item < len(class_names):
        raise DataError(
            f"`pairs` holds class index {item}; expected 0..{len(class_names) - 1} "
            f"({len(class_names)} classes)."
        )
    return int(item)


def asymmetric_pairs(
    pairs: tuple[tuple[int | str, int | str], ...] | None, class_names: tuple[str, ...]
) -> list[tuple[int, int]]:
    """Resolve asymmetric flip pairs to class indices.

    ``None`` gives the classic digit pairs when every class they name exists, else the
    cycle ``i -> i + 1 (mod K)``.
    """
    k = len(class_names)
    if pairs is None:
        if all(a in class_names and b in class_names for a, b in DIGIT_PAIRS):
            pairs = DIGIT_PAIRS
        else:
            pairs = tuple((i, (i + 1) % k) for i in range(k))
    resolved = [(_class_index(a, class_names), _class_index(b, class_names)) for a, b in pairs]
    seen: set[int] = set()
    for (a, b), raw in zip(resolved, pairs, strict=True):
        if a == b:
            raise DataError(f"`pairs` maps a class to itself: {tuple(raw)!r}.")
        if a in seen:
            raise DataError(
                f"`pairs` gives class {class_names[a]!r} more than one target; "
                "each source class may appear once."
            )
        seen.add(a)
    return resolved


def label_plan(
    config: InjectionConfig, class_names: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Where noisy labels go and which classes may be flipped.

    Returns
    -------
    destination : np.ndarray
        float64 ``(K, K)`` with a zero diagonal; row ``i`` is the distribution of the new
        label of a flipped sample of class ``i`` (all zeros when ``i`` is never flipped).
    weight : np.ndarray
        float64 ``(K,)``; relative chance that a sample of class ``i`` is picked.
    """
    k = len(class_names)
    if k < 2:
        raise DataError(
            f"Label noise needs at least 2 classes; this dataset has {k} ({list(class_names)})."
        )
    mode = config.label_noise_mode
    if mode == "symmetric":
        destination = (1.0 - np.eye(k)) / (k - 1)
        weight = np.ones(k)
    elif mode == "asymmetric":
        destination = np.zeros((k, k))
        for a, b in asymmetric_pairs(config.pairs, class_names):
            destination[a, b] = 1.0
        weight = destination.sum(axis=1)
    else:
        matrix = config.matrix
        assert matrix is not None  # the config refuses matrix mode without one
        if matrix.shape != (k, k):
            raise DataError(
                f"The transition matrix must be {k} x {k} for this dataset's {k} classes. "
                f"Got {matrix.shape[0]} x {matrix.shape[1]} instead."
            )
        off = matrix * (1.0 - np.eye(k))
        weight = off.sum(axis=1)
        destination = np.divide(
            off, weight[:, None], out=np.zeros_like(off), where=weight[:, None] > 0
        )
    return destination, weight


def _flip(labels: np.ndarray, destination: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw a new label for each of ``labels`` from the rows of ``destination``."""
    cum = np.cumsum(destination[labels], axis=1)
    u = 1.0 - rng.random(len(labels))  # (0, 1]
    new = np.minimum((cum < u[:, None] * cum[:, -1:]).sum(axis=1), destination.shape[1] - 1)
    bad = destination[labels, new] <= 0  # floating point edge: fall back to the likeliest
    new[bad] = destination[labels[bad]].argmax(axis=1)
    return new.astype(np.int64)


# --------------------------------------------------------------------------- inject
def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise DataError(f"`seed` must be a non-negative integer. Got {seed!r} instead.")
    return int(seed)


def inject(
    dataset: Dataset,
    config_or_preset: InjectionConfig | str | os.PathLike | Mapping[str, Any],
    *,
    seed: int = 0,
) -> Dataset:
    """Return a dirty copy of ``dataset`` with the ground truth in its manifest.

    Each kind of dirt touches exactly ``round(rate * N)`` samples (``N = len(dataset)``),
    and no sample receives more than one kind. Label noise, corruptions and
    out-of-distribution images change existing samples (in the copy); duplicates are
    appended as new samples with ids after the largest existing id, copying a distinct
    clean original's label. The input is never modified.

    Parameters
    ----------
    dataset : Dataset
        ``N`` samples, images ``(N, H, W)`` or ``(N, H, W, C)``. If it already carries
        injection columns (it was injected before), only samples still ``"clean"`` are
        eligible and the earlier ground truth is kept.
    config_or_preset : InjectionConfig, str, path or dict
        Anything :func:`resolve` accepts: a config, a preset name from :data:`PRESETS`,
        a dict of fields, or a path to a JSON/TOML file of fields.
    seed : int, keyword-only
        Seed of every random choice; same seed, same input -> same bytes.

    Returns
    -------
    Dataset
        ``N + D`` samples (``D`` appended duplicates). Manifest columns: ``injected``
        (str, ``"clean"`` or the kind), ``true_label`` (int64, ``-1`` for out-of-
        distribution images), ``duplicate_source`` (int64 sample id of the original,
        ``-1`` otherwise). ``meta["injection"]`` holds the config, preset, seed and the
        count per kind.

    Raises
    ------
    DataError
        Invalid config or seed, or not enough eligible samples for the requested counts.
    """
    config = resolve(config_or_preset)
    seed = _check_seed(seed)
    n = len(dataset)
    labels = dataset.labels.copy()
    images = dataset.images.copy()
    k = dataset.n_classes

    prior = all(c in dataset.columns.columns for c in GROUND_TRUTH_COLUMNS)
    if prior:
        injected = dataset.columns["injected"].astype(str).to_numpy().astype(object)
        true_label = dataset.columns["true_label"].to_numpy(dtype=np.int64).copy()
        duplicate_source = dataset.columns["duplicate_source"].to_numpy(dtype=np.int64).copy()
        pool = np.flatnonzero(injected == "clean")
    else:
        injected = np.full(n, "clean", dtype=object)
        true_label = labels.copy()
        duplicate_source = np.full(n, -1, dtype=np.int64)
        pool = np.arange(n)

    counts = config.counts(n)
    needed = sum(counts.values())
    if needed > pool.size:
        raise DataError(
            f"The injection needs {needed} distinct samples but only {pool.size} "
            f"{'clean ' if prior else ''}samples are available (N={n})."
        )

    streams = np.random.SeedSequence(seed).spawn(len(KINDS))
    select = np.random.default_rng(streams[0])
    rngs = {kind: np.random.default_rng(s) for kind, s in zip(KINDS[1:], streams[1:], strict=True)}

    # ---- which samples get which kind: disjoint sets, label noise first (it may be
    # restricted to some classes), then a shuffle of the rest cut into consecutive runs.
    chosen: dict[str, np.ndarray] = {}
    if counts["label_noise"]:
        destination, class_weight = label_plan(config, dataset.class_names)
        weight = class_weight[labels[pool]]
        eligible = int(np.count_nonzero(weight))
        if eligible < counts["label_noise"]:
            raise DataError(
                f"`label_noise` asks for {counts['label_noise']} flipped labels but only "
                f"{eligible} samples belong to classes that mode "
                f"{config.label_noise_mode!r} can flip."
            )
        picked = select.choice(
            pool, size=counts["label_noise"], replace=False, p=weight / weight.sum()
        )
        chosen["label_noise"] = np.sort(picked)
        rest = np.setdiff1d(pool, picked, assume_unique=True)
    else:
        destination = np.zeros((k, k))
        chosen["label_noise"] = np.zeros(0, dtype=np.int64)
        rest = pool
    order = select.permutation(rest)
    start = 0
    for kind in (*CORRUPTION_KINDS, "ood", *DUPLICATE_KINDS):
        chosen[kind] = np.sort(order[start : start + counts[kind]])
        start += counts[kind]

    # ---- label noise: images unchanged, labels move off the diagonal.
    idx = chosen["label_noise"]
    if idx.size:
        labels[idx] = _flip(labels[idx], destination, rngs["label_noise"])
        injected[idx] = "label_noise"

    # ---- corruptions: images change in place, labels stay.
    for kind in CORRUPTION_KINDS:
        idx = chosen[kind]
        if idx.size:
            original = images[idx]
            new = im.CORRUPTIONS[kind](original, rngs[kind])
            images[idx] = im.ensure_changed(new, original, rngs[kind])
            injected[idx] = kind

    # ---- out of distribution: a new image, a random label, no true class.
    idx = chosen["ood"]
    ood_styles: dict[str, int] = {}
    if idx.size:
        new, styles = im.ood_images(idx.size, dataset.image_shape, rngs["ood"])
        images[idx] = im.ensure_changed(new, images[idx], rngs["ood"])
        labels[idx] = rngs["ood"].integers(0, k, size=idx.size)
        true_label[idx] = -1
        injected[idx] = "ood"
        values, freq = np.unique(styles, return_counts=True)
        ood_styles = {str(v): int(c) for v, c in zip(values, freq, strict=True)}

    # ---- duplicates: appended, in a shuffled order, with fresh ids.
    sources = np.concatenate([chosen["exact_duplicate"], chosen["near_duplicate"]])
    kinds = np.array(
        ["exact_duplicate"] * chosen["exact_duplicate"].size
        + ["near_duplicate"] * chosen["near_duplicate"].size,
        dtype=object,
    )
    columns = dataset.columns.drop(
        columns=[c for c in GROUND_TRUTH_COLUMNS if c in dataset.columns.columns]
    ).reset_index(drop=True)
    sample_ids = dataset.sample_ids
    if sources.size:
        shuffle = select.permutation(sources.size)
        sources, kinds = sources[shuffle], kinds[shuffle]
        dup_images = images[sources]
        near = np.flatnonzero(kinds == "near_duplicate")
        if near.size:
            changed = im.near_duplicates(dup_images[near], rngs["near_duplicate"])
            dup_images[near] = im.ensure_changed(
                changed, dup_images[near], rngs["near_duplicate"], nudge=True
            )
        start_id = int(sample_ids.max()) + 1
        new_ids = np.arange(start_id, start_id + sources.size, dtype=np.int64)
        images = np.concatenate([images, dup_images])
        labels = np.concatenate([labels, labels[sources]])
        true_label = np.concatenate([true_label, true_label[sources]])
        duplicate_source = np.concatenate([duplicate_source, sample_ids[sources]])
        injected = np.concatenate([injected, kinds])
        sample_ids = np.concatenate([sample_ids, new_ids])
        columns = pd.concat([columns, columns.iloc[sources]], ignore_index=True)

    columns = columns.assign(
        injected=pd.Series(injected, dtype=object).astype(str),
        true_label=true_label.astype(np.int64),
        duplicate_source=duplicate_source.astype(np.int64),
    )
    record: dict[str, Any] = {
        "config": config.to_dict(),
        "preset": _preset_name(config_or_preset, config),
        "seed": seed,
        "counts": {kind: int(chosen[kind].size) for kind in KINDS[1:]},
        "n_original": n,
        "n_total": int(len(images)),
    }
    if ood_styles:
        record["ood_styles"] = ood_styles
    if "injection" in dataset.meta:
        record["previous"] = dataset.meta["injection"]
    return Dataset.create(
        images,
        labels,
        dataset.class_names,
        sample_ids=sample_ids,
        meta={**dataset.meta, "injection": record},
        columns=columns,
        source=str(dataset.meta.get("source", "<memory>")),
    )


def _preset_name(given: Any, config: InjectionConfig) -> str | None:
    if isinstance(given, str) and given in PRESETS:
        return given
    for name, preset in PRESETS.items():
        if preset == config:
            return name
    return None


# --------------------------------------------------------------------------- ground truth
def ground_truth(dataset: Dataset) -> pd.DataFrame:
    """The injected dirt of ``dataset`` as one row per sample.

    Parameters
    ----------
    dataset : Dataset
        A dataset returned by :func:`inject` (or loaded from one that was saved).

    Returns
    -------
    pandas.DataFrame
        ``N`` rows in dataset order: ``sample_id``, ``label`` (given), ``injected``,
        ``true_label``, ``duplicate_source``, and the booleans ``is_label_noise``,
        ``is_corrupted`` (an image corruption or out-of-distribution), ``is_ood``,
        ``is_duplicate`` (exact or near) and ``is_dirty`` (any of them).

    Raises
    ------
    DataError
        If the dataset carries no injection columns.
    """
    missing = [c for c in GROUND_TRUTH_COLUMNS if c not in dataset.columns.columns]
    if missing:
        raise DataError(
            f"This dataset has no injection ground truth (missing columns {missing}); "
            "expected a dataset made by `inject` (assay inject)."
        )
    injected = dataset.columns["injected"].astype(str).to_numpy()
    unknown = sorted(set(injected) - set(KINDS))
    if unknown:
        raise DataError(
            f"Column `injected` holds unknown kinds {unknown}; expected some of {list(KINDS)}."
        )
    frame = pd.DataFrame(
        {
            "sample_id": dataset.sample_ids,
            "label": dataset.labels,
            "injected": injected,
            "true_label": dataset.columns["true_label"].to_numpy(dtype=np.int64),
            "duplicate_source": dataset.columns["duplicate_source"].to_numpy(dtype=np.int64),
        }
    )
    frame["is_label_noise"] = frame["injected"] == "label_noise"
    frame["is_corrupted"] = frame["injected"].isin(CORRUPTED_KINDS)
    frame["is_ood"] = frame["injected"] == "ood"
    frame["is_duplicate"] = frame["injected"].isin(DUPLICATE_KINDS)
    frame["is_dirty"] = frame["injected"] != "clean"
    return frame
