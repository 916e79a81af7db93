"""Turn detections into decisions and a cleaned dataset.

Every sample gets one decision:

``keep``     not flagged dirty; kept with its label.
``relabel``  a label issue with strong evidence and nothing else wrong: kept with the
             suggested label.
``drop``     dirty and not relabelled; left out of the cleaned dataset.
``review``   (``policy="review"`` only) an ambiguous case: left out of the cleaned dataset
             and listed in ``review.csv`` for a person to decide.

Policies
--------
``drop``     every dirty sample is dropped.
``relabel``  dirty samples whose only problem is their label, with a suggested label that
             differs from the given one and ``suggested_label_confidence >=
             relabel_confidence`` (default :data:`RELABEL_CONFIDENCE`), are relabelled;
             every other dirty sample is dropped.
``review``   the strong label-only cases are relabelled; dirty samples with clear evidence
             -- flagged by two or more detectors, or a redundant exact duplicate -- are
             dropped; the rest (a single detector's flag, or a label issue with weak
             evidence) go to review.

When the issues table has a ``primary_reason`` column (every table the detection stage
writes), only a sample whose primary reason is ``label`` can be relabelled: an image that
is out of distribution, corrupted or fails an image property is dropped (or, under
``review``, sent to review or dropped), never given a new label. The sources named in
``outlier_sources`` count as one signal each.

A sample flagged as a duplicate counts as a problem only when it is the redundant copy,
i.e. ``duplicate_of`` names another sample; the copy that the others point at is not
penalised for having copies. Dataset-level flags (:data:`DATASET_LEVEL`) never count, and
``is_outlier`` (a summary of :data:`OUTLIER_SOURCES`) counts only when none of its sources
is set, so one detector's flag is one signal. The raw dataset is never modified:
:func:`clean` returns a new :class:`~pipeline.dataset.Dataset`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from assay.pipeline import artifacts, atomic
from assay.pipeline.dataset import Dataset
from assay.pipeline.errors import DataError

POLICIES = ("drop", "relabel", "review")
DECISIONS = ("keep", "drop", "relabel", "review")
DECISION_COLUMNS = tuple(artifacts.DECISION_COLUMNS)

#: Minimum ``suggested_label_confidence`` (the out-of-sample probability of the suggested
#: class) for a label issue to be relabelled rather than dropped or sent to review.
RELABEL_CONFIDENCE = 0.5

#: Detectors that describe the dataset rather than a sample (a sample of a rare class is not
#: dirty): their flags never count against a sample.
DATASET_LEVEL = ("non_iid", "class_imbalance")
#: Detectors whose flags ``is_outlier`` summarises; ``is_outlier`` counts as a separate
#: signal only when none of them is set.
OUTLIER_SOURCES = ("knn_outlier", "vae", "image_property")

_DUPLICATE_FLAGS = {"is_exact_duplicate": "exact duplicate", "is_near_duplicate": "near duplicate"}
_NAMED_FLAGS = {"is_outlier": "outlier", **_DUPLICATE_FLAGS}
_NOT_PROBLEMS = {"is_dirty", "is_label_issue", *(f"is_{name}_issue" for name in DATASET_LEVEL)}
_OUTLIER_SOURCE_FLAGS = {f"is_{name}_issue" for name in OUTLIER_SOURCES}
#: Plain names of the entries of ``outlier_sources``.
_SOURCE_NAMES = {
    "knn_outlier": "outlier in feature space",
    "vae": "vae outlier",
    "image_property": "image property",
}


def _problem_flags(issues: pd.DataFrame) -> dict[str, str]:
    """Flag column -> plain name, for every flag other than the label issue."""
    out: dict[str, str] = {}
    for col in issues.columns:
        if col in _NOT_PROBLEMS:
            continue
        if col in _NAMED_FLAGS:
            out[col] = _NAMED_FLAGS[col]
        elif col.startswith("is_") and col.endswith("_issue"):
            out[col] = col[3 : -len("_issue")].replace("_", " ")
    return out


def _aligned(dataset: Dataset, issues: pd.DataFrame) -> pd.DataFrame:
    """``issues`` rows in dataset order; DataError when a sample has no row."""
    if not isinstance(issues, pd.DataFrame):
        raise DataError(f"`issues` must be a pandas DataFrame. Got {type(issues).__name__}.")
    missing_cols = {"sample_id", "is_dirty"} - set(issues.columns)
    if missing_cols:
        raise DataError(
            f"The issues table has no column(s) {sorted(missing_cols)}; expected the table "
            "written by the detection stage (issues.parquet)."
        )
    if issues["sample_id"].duplicated().any():
        raise DataError("The issues table has repeated sample_id values; expected one row each.")
    table = issues.set_index("sample_id")
    missing = np.setdiff1d(dataset.sample_ids, table.index.to_numpy())
    if missing.size:
        raise DataError(
            f"The issues table has no row for {missing.size} sample(s) of the dataset, "
            f"e.g. sample_id {int(missing[0])}; was it computed on another dataset?"
        )
    return table.loc[dataset.sample_ids].reset_index()


def _bool(frame: pd.DataFrame, col: str) -> np.ndarray:
    if col not in frame.columns:
        return np.zeros(len(frame), dtype=bool)
    return frame[col].fillna(False).to_numpy(dtype=bool)


def decide(
    dataset: Dataset,
    issues: pd.DataFrame,
    *,
    policy: str = "relabel",
    relabel_confidence: float = RELABEL_CONFIDENCE,
) -> pd.DataFrame:
    """One decision per sample, in dataset order (see the module docstring).

    Returns
    -------
    pandas.DataFrame
        ``N`` rows: ``sample_id`` (int64), ``decision`` (str), ``reason`` (str, plain words,
        ``""`` for kept samples), ``old_label`` (int64), ``new_label`` (int64: the label in
        the cleaned dataset, ``-1`` for dropped and review samples).
    """
    if policy not in POLICIES:
        raise DataError(f"`policy` must be one of {POLICIES}. Got {policy!r} instead.")
    if not 0.0 <= float(relabel_confidence) <= 1.0:
        raise DataError(
            f"`relabel_confidence` must be in [0, 1]. Got {relabel_confidence} instead."
        )
    table = _aligned(dataset, issues)
    names = dataset.class_names
    k = len(names)
    n = len(dataset)
    old = dataset.labels.astype(np.int64)
    dirty = _bool(table, "is_dirty")
    label_issue = _bool(table, "is_label_issue")
    suggested = (
        table["suggested_label"].fillna(-1).to_numpy(dtype=np.int64)
        if "suggested_label" in table.columns
        else np.full(n, -1, dtype=np.int64)
    )
    confidence = (
        table["suggested_label_confidence"].fillna(0.0).to_numpy(dtype=float)
        if "suggested_label_confidence" in table.columns
        else np.zeros(n)
    )
    own = table["sample_id"].to_numpy(dtype=np.int64)
    dup_of = (
        table["duplicate_of"].fillna(-1).to_numpy(dtype=np.int64)
        if "duplicate_of" in table.columns
        else None
    )
    flags = _problem_flags(table)
    flag_values = {col: _bool(table, col) for col in flags}
    primary = (
        table["primary_reason"].fillna("").astype(str).to_numpy()
        if "primary_reason" in table.columns
        else None
    )
    outlier_sources = (
        table["outlier_sources"].fillna("").astype(str).to_numpy()
        if "outlier_sources" in table.columns
        else None
    )
    given_reasons = (
        table["reasons"].fillna("").astype(str).to_numpy()
        if "reasons" in table.columns
        else np.full(n, "", dtype=object)
    )

    decisions: list[str] = []
    reasons: list[str] = []
    new = old.copy()
    for i in range(n):
        if not dirty[i]:
            decisions.append("keep")
            reasons.append("")
            continue
        problems: list[str] = []
        exact_copy = False
        sourced = any(flag_values[c][i] for c in _OUTLIER_SOURCE_FLAGS if c in flag_values)
        if outlier_sources is not None and outlier_sources[i]:
            sourced = True
            problems += [_SOURCE_NAMES.get(x, x) for x in outlier_sources[i].split(",")]
        for col, name in flags.items():
            if not flag_values[col][i] or (col == "is_outlier" and sourced):
                continue
            if col in _DUPLICATE_FLAGS:
                if dup_of is not None and (dup_of[i] < 0 or dup_of[i] == own[i]):
                    continue  # the original that others copy: not a problem in itself
                if dup_of is not None:
                    name = f"{name} of sample {int(dup_of[i])}"
                exact_copy = exact_copy or col == "is_exact_duplicate"
            problems.append(name)
        has_suggestion = 0 <= suggested[i] < k and suggested[i] != old[i]
        label_text = ""
        if label_issue[i]:
            if has_suggestion:
                label_text = (
                    f"label issue: given {names[old[i]]}, suggested {names[suggested[i]]} "
                    f"(confidence {confidence[i]:.2f})"
                )
            else:
                label_text = f"label issue: given {names[old[i]]}"
        label_first = primary is None or primary[i] in ("", "label")
        strong = bool(
            label_first
            and label_issue[i]
            and has_suggestion
            and confidence[i] >= relabel_confidence
        )
        evidence = ([label_text] if label_text else []) + problems
        if not evidence:
            evidence = [given_reasons[i] or "flagged dirty"]
        described = "; ".join(evidence)

        if policy == "drop":
            decisions.append("drop")
            reasons.append(described)
        elif strong and not problems:
            decisions.append("relabel")
            reasons.append(label_text)
            new[i] = suggested[i]
        elif policy == "relabel":
            decisions.append("drop")
            if label_issue[i] and not problems:
                reasons.append(f"{label_text}; evidence too weak to relabel")
            else:
                reasons.append(described)
        else:  # review
            n_signals = len(problems) + int(bool(label_issue[i]))
            if exact_copy or n_signals >= 2:
                decisions.append("drop")
                reasons.append(described)
            else:
                decisions.append("review")
                if label_issue[i] and not problems:
                    reasons.append(f"{label_text}; evidence too weak to relabel")
                else:
                    reasons.append(f"{described}; only one detector flagged it")
    decision_arr = np.array(decisions, dtype=object)
    new[np.isin(decision_arr, ("drop", "review"))] = -1
    return pd.DataFrame(
        {
            "sample_id": dataset.sample_ids.astype(np.int64),
            "decision": decision_arr.astype(str),
            "reason": np.array(reasons, dtype=object).astype(str),
            "old_label": old,
            "new_label": new,
        }
    )


def clean(
    dataset: Dataset,
    issues: pd.DataFrame,
    *,
    policy: str = "relabel",
    relabel_confidence: float = RELABEL_CONFIDENCE,
    sample_flags: pd.DataFrame | None = None,
) -> tuple[Dataset, pd.DataFrame]:
    """Apply a cleaning policy to ``dataset`` using the detection table ``issues``.

    Parameters
    ----------
    dataset : Dataset
        ``N`` samples; never modified.
    issues : pandas.DataFrame
        The detection stage's table (``issues.parquet``): one row per sample keyed by
        ``sample_id`` with at least ``is_dirty``; uses ``is_label_issue``,
        ``suggested_label``, ``suggested_label_confidence``, ``duplicate_of``,
        ``is_outlier``, ``is_exact_duplicate``, ``is_near_duplicate`` and every other
        ``is_<type>_issue`` column when present.
    policy : {"drop", "relabel", "review"}, keyword-only
        See the module docstring.
    relabel_confidence : float, keyword-only
        Minimum ``suggested_label_confidence`` to relabel.
    sample_flags : pandas.DataFrame, optional, keyword-only
        The validation stage's per-sample flags (``sample_id`` + one boolean ``fails_*``
        column per failed per-sample expectation); carried into the cleaned manifest.

    Returns
    -------
    cleaned : Dataset
        The kept and relabelled samples (ids, images and per-sample columns carried over;
        ``meta["cleaning"]`` records the policy, threshold and counts). Its manifest gains
        the per-stage columns: the validation flags, ``is_dirty`` and ``reasons`` of the
        detection, and ``decision``, ``reason`` and ``original_label`` of the cleaning.
    decisions : pandas.DataFrame
        ``N`` rows, columns :data:`DECISION_COLUMNS` (see :func:`decide`).

    Raises
    ------
    DataError
        Unknown policy, threshold outside [0, 1], an issues table without ``sample_id`` /
        ``is_dirty``, or one that misses samples of the dataset.
    """
    decisions = decide(dataset, issues, policy=policy, relabel_confidence=relabel_confidence)
    keep = decisions["decision"].isin(("keep", "relabel")).to_numpy()
    new_labels = decisions["new_label"].to_numpy(dtype=np.int64)
    stage_columns = _stage_columns(dataset, issues, decisions, sample_flags)
    cleaned = dataset.with_columns(**stage_columns)
    cleaned = cleaned.subset(np.flatnonzero(keep)).with_labels(new_labels[keep])
    cleaned = cleaned.with_meta(
        cleaning={
            "policy": policy,
            "relabel_confidence": float(relabel_confidence),
            "counts": decision_counts(decisions),
            "n_before": len(dataset),
            "n_after": int(keep.sum()),
        }
    )
    return cleaned, decisions


def _stage_columns(
    dataset: Dataset,
    issues: pd.DataFrame,
    decisions: pd.DataFrame,
    sample_flags: pd.DataFrame | None,
) -> dict[str, np.ndarray]:
    """Per-sample columns of the validation, detection and cleaning stages, in dataset order."""
    ids = dataset.sample_ids
    cols: dict[str, np.ndarray] = {}
    if sample_flags is not None and "sample_id" in sample_flags.columns:
        flags = sample_flags.set_index("sample_id").reindex(ids)
        for name in flags.columns:
            if str(name).startswith("fails_"):
                cols[str(name)] = flags[name].fillna(False).to_numpy(dtype=bool)
    found = issues.set_index("sample_id").reindex(ids)
    cols["is_dirty"] = found["is_dirty"].fillna(False).to_numpy(dtype=bool)
    if "reasons" in found.columns:
        cols["reasons"] = found["reasons"].fillna("").astype(str).to_numpy(dtype=object)
    made = decisions.set_index("sample_id").reindex(ids)
    cols["decision"] = made["decision"].astype(str).to_numpy(dtype=object)
    cols["reason"] = made["reason"].astype(str).to_numpy(dtype=object)
    cols["original_label"] = made["old_label"].to_numpy(dtype=np.int64)
    return cols


def decision_counts(decisions: pd.DataFrame) -> dict[str, int]:
    """Number of samples per decision, every decision listed."""
    counts = decisions["decision"].value_counts()
    return {d: int(counts.get(d, 0)) for d in DECISIONS}


def review_table(
    decisions: pd.DataFrame, class_names: tuple[str, ...] | None = None
) -> pd.DataFrame:
    """The ``review`` rows: sample_id, given label (and its name), reason."""
    rows = decisions.loc[decisions["decision"] == "review", ["sample_id", "old_label", "reason"]]
    rows = rows.rename(columns={"old_label": "given_label"}).reset_index(drop=True)
    if class_names is not None:
        rows.insert(2, "given_class", [class_names[int(i)] for i in rows["given_label"]])
    return rows


def write_cleaned(
    cleaned: Dataset, decisions: pd.DataFrame, out_dir: str | os.PathLike[str]
) -> Path:
    """Write the cleaned dataset (canonical format) + ``decisions.parquet``, atomically.

    When the policy was ``review`` (or any decision is ``review``) ``review.csv`` lists the
    samples left for a person to decide. The folder appears complete or not at all.

    Returns
    -------
    Path
        ``out_dir``.
    """
    from assay.pipeline import io

    missing = set(DECISION_COLUMNS) - set(decisions.columns)
    if missing:
        raise DataError(f"`decisions` has no column(s) {sorted(missing)}.")
    out_dir = Path(out_dir)
    policy: Any = cleaned.meta.get("cleaning", {}).get("policy")
    with atomic.atomic_dir(out_dir) as tmp:
        io.save(cleaned, tmp)
        table = decisions.loc[:, list(DECISION_COLUMNS)]
        artifacts.check_columns(table, artifacts.DECISION_COLUMNS, source=artifacts.DECISIONS)
        atomic.write_parquet(tmp / artifacts.DECISIONS, table)
        if policy == "review" or (decisions["decision"] == "review").any():
            review = review_table(decisions, cleaned.class_names)
            atomic.write_text(tmp / artifacts.REVIEW_CSV, review.to_csv(index=False))
    return out_dir
