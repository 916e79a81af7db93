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

Review
------
``review.csv`` lists the samples left for a person (:data:`REVIEW_COLUMNS`), with a
``decision`` column pre-filled ``review`` and an empty ``new_label``. The person writes
``keep``, ``drop`` or ``relabel`` (with ``new_label``: a class index or name) in the rows
they decide, and may add rows for any other sample to overrule the policy;
:func:`apply_review` validates the file (:func:`read_review`) and applies it. Every
decision records who or what made it in ``decided_by``: ``"policy"`` or
``"review:<file name>"``.
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
#: Columns of ``review.csv``; a person fills ``decision`` and (to relabel) ``new_label``.
REVIEW_COLUMNS = ("sample_id", "given_label", "given_class", "reason", "decision", "new_label")
#: ``decided_by`` of the policy's decisions; a review's is ``"review:<file name>"``.
POLICY = "policy"

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
        the cleaned dataset, ``-1`` for dropped and review samples), ``decided_by``
        (``"policy"``).
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
            "decided_by": np.full(n, POLICY, dtype=object).astype(str),
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
    meta = {"policy": policy, "relabel_confidence": float(relabel_confidence)}
    return _cleaned_dataset(dataset, issues, decisions, sample_flags, meta), decisions


def _cleaned_dataset(
    dataset: Dataset,
    issues: pd.DataFrame,
    decisions: pd.DataFrame,
    sample_flags: pd.DataFrame | None,
    meta: dict[str, Any],
) -> Dataset:
    """The kept and relabelled samples of ``dataset`` under ``decisions``."""
    keep = decisions["decision"].isin(("keep", "relabel")).to_numpy()
    new_labels = decisions["new_label"].to_numpy(dtype=np.int64)
    stage_columns = _stage_columns(dataset, issues, decisions, sample_flags)
    cleaned = dataset.with_columns(**stage_columns)
    cleaned = cleaned.subset(np.flatnonzero(keep)).with_labels(new_labels[keep])
    return cleaned.with_meta(
        cleaning={
            **meta,
            "counts": decision_counts(decisions),
            "n_before": len(dataset),
            "n_after": int(keep.sum()),
        }
    )


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
    decided = made["decided_by"] if "decided_by" in made.columns else None
    cols["decided_by"] = (
        np.full(len(ids), POLICY, dtype=object)
        if decided is None
        else decided.fillna(POLICY).astype(str).to_numpy(dtype=object)
    )
    return cols


def decision_counts(decisions: pd.DataFrame) -> dict[str, int]:
    """Number of samples per decision, every decision listed."""
    counts = decisions["decision"].value_counts()
    return {d: int(counts.get(d, 0)) for d in DECISIONS}


def review_table(
    decisions: pd.DataFrame, class_names: tuple[str, ...] | None = None
) -> pd.DataFrame:
    """The ``review`` rows, columns :data:`REVIEW_COLUMNS` (``given_class`` only with
    ``class_names``): ``decision`` is ``review`` and ``new_label`` empty, for a person to
    fill (see :func:`apply_review`)."""
    rows = decisions.loc[decisions["decision"] == "review", ["sample_id", "old_label", "reason"]]
    rows = rows.rename(columns={"old_label": "given_label"}).reset_index(drop=True)
    if class_names is not None:
        rows.insert(2, "given_class", [class_names[int(i)] for i in rows["given_label"]])
    rows["decision"] = "review"
    rows["new_label"] = ""
    return rows


def read_review(path: str | os.PathLike[str], *, dataset: Dataset) -> pd.DataFrame:
    """Read and validate a person's decisions (``review.csv``, edited).

    Parameters
    ----------
    path : the CSV file: a header with at least ``sample_id`` and ``decision`` (and
        ``new_label`` where a row relabels); ``given_label``, when present, must match the
        dataset (it catches a file from another run). Other columns are ignored.
    dataset : keyword-only; the run's ingested dataset (the ids and labels decided on).

    Returns
    -------
    pandas.DataFrame
        One row per decided sample, in file order: ``sample_id`` (int64), ``decision``
        (one of :data:`DECISIONS`; ``review`` leaves the sample undecided), ``new_label``
        (int64, ``-1`` unless ``relabel``), ``row`` (1-based data row of the file).

    Raises
    ------
    DataError
        Naming the file and the row: a file that is missing or not CSV, a missing column,
        an id that is not an integer, not in the dataset or repeated, an unknown decision,
        a given label that does not match, a relabel without a valid new label, or a
        ``keep`` that changes the label.
    """
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; expected an edited review.csv.") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc}).") from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in ("sample_id", "decision") if c not in table.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {missing}; expected a header with at least "
            f"sample_id and decision (the columns of review.csv: {', '.join(REVIEW_COLUMNS)})."
        )
    names = list(dataset.class_names)
    k = len(names)
    position = {int(sid): i for i, sid in enumerate(dataset.sample_ids)}
    seen: dict[int, int] = {}
    out_ids, out_decisions, out_labels, out_rows = [], [], [], []
    for i, rec in enumerate(table.to_dict("records"), start=1):
        where = f"{path}, row {i} (line {i + 1})"
        text = str(rec["sample_id"]).strip()
        try:
            sid = int(text)
        except ValueError:
            raise DataError(f"{where}: sample_id must be an integer. Got {text!r}.") from None
        if sid not in position:
            raise DataError(f"{where}: sample_id {sid} is not in the dataset.")
        if sid in seen:
            raise DataError(f"{where}: sample_id {sid} is already decided in row {seen[sid]}.")
        seen[sid] = i
        given = int(dataset.labels[position[sid]])
        given_text = str(rec.get("given_label", "")).strip()
        if given_text and given_text != str(given):
            raise DataError(
                f"{where}: given_label {given_text} does not match the dataset's label "
                f"{given} of sample {sid}; is the file from another run?"
            )
        decision = str(rec["decision"]).strip().lower()
        if decision not in DECISIONS:
            raise DataError(
                f"{where}: decision must be one of {', '.join(DECISIONS)}. "
                f"Got {rec['decision']!r} instead."
            )
        label_text = str(rec.get("new_label", "")).strip()
        new_label = -1
        if decision == "relabel":
            new_label = _label_value(label_text, names)
            if new_label is None:
                raise DataError(
                    f"{where}: relabel needs new_label, a class index in 0..{k - 1} or a "
                    f"class name. Got {label_text!r} instead."
                )
        elif decision == "keep" and label_text and _label_value(label_text, names) != given:
            raise DataError(
                f"{where}: keep with new_label {label_text!r} would change the label; "
                "write relabel to change it."
            )
        out_ids.append(sid)
        out_decisions.append(decision)
        out_labels.append(new_label)
        out_rows.append(i)
    return pd.DataFrame(
        {
            "sample_id": np.array(out_ids, dtype=np.int64),
            "decision": np.array(out_decisions, dtype=object).astype(str),
            "new_label": np.array(out_labels, dtype=np.int64),
            "row": np.array(out_rows, dtype=np.int64),
        }
    )


def _label_value(text: str, names: list[str]) -> int | None:
    """A class index from its index or its name; ``None`` when it is neither."""
    if text in names:
        return names.index(text)
    try:
        value = int(text)
    except ValueError:
        return None
    return value if 0 <= value < len(names) else None


def apply_review(
    dataset: Dataset,
    decisions: pd.DataFrame,
    review_file: str | os.PathLike[str],
    *,
    issues: pd.DataFrame,
    sample_flags: pd.DataFrame | None = None,
    cleaning: dict[str, Any] | None = None,
) -> tuple[Dataset, pd.DataFrame]:
    """Apply a person's decisions on top of the policy's.

    Parameters
    ----------
    dataset : the run's ingested dataset (``N`` samples); never modified.
    decisions : the current ``decisions.parquet`` (``N`` rows, :data:`DECISION_COLUMNS`;
        ``decided_by`` may be absent in files of older runs: read as ``"policy"``).
    review_file : the edited ``review.csv`` (see :func:`read_review`). Rows whose
        decision is ``review`` change nothing.
    issues : keyword-only; the detection table (for the manifest's stage columns).
    sample_flags : keyword-only; the validation flags, as for :func:`clean`.
    cleaning : keyword-only; the previous cleaned dataset's ``meta["cleaning"]`` (policy,
        threshold), kept and extended with ``review`` (the file name) and ``reviewed``
        (the number of decisions taken from it).

    Returns
    -------
    cleaned : Dataset
        As :func:`clean`; its manifest's ``decided_by`` says ``review:<file name>`` for
        every sample the file decided.
    decisions : pandas.DataFrame
        ``N`` rows, :data:`DECISION_COLUMNS`, the reviewed rows updated.

    Raises
    ------
    DataError
        See :func:`read_review`; also when ``decisions`` does not cover the dataset.
    """
    name = Path(review_file).name
    review = read_review(review_file, dataset=dataset)
    current = decisions.copy()
    if "decided_by" not in current.columns:
        current["decided_by"] = POLICY
    current = current.set_index("sample_id").reindex(dataset.sample_ids)
    if current["decision"].isna().any():
        raise DataError(
            "`decisions` must have one row per sample of the dataset; "
            f"{int(current['decision'].isna().sum())} samples have none."
        )
    names = dataset.class_names
    decided = review[review["decision"] != "review"]
    by = f"review:{name}"
    for sid, decision, new_label in decided[["sample_id", "decision", "new_label"]].itertuples(
        index=False
    ):
        old = int(current.at[sid, "old_label"])
        if decision == "relabel":
            reason = f"relabelled in review: {names[old]} -> {names[int(new_label)]}"
        elif decision == "keep":
            reason = "kept in review"
            new_label = old
        else:
            reason = "dropped in review"
        current.loc[sid, ["decision", "reason", "new_label", "decided_by"]] = [
            decision, reason, int(new_label), by,
        ]  # fmt: skip
    current = current.reset_index().rename(columns={"index": "sample_id"})
    current = current.astype({"new_label": np.int64, "old_label": np.int64})
    current = current.loc[:, list(DECISION_COLUMNS)]
    meta = {**(cleaning or {}), "review": name, "reviewed": len(decided)}
    return _cleaned_dataset(dataset, issues, current, sample_flags, meta), current


def write_cleaned(
    cleaned: Dataset,
    decisions: pd.DataFrame,
    out_dir: str | os.PathLike[str],
    *,
    review_file: str | os.PathLike[str] | None = None,
) -> Path:
    """Write the cleaned dataset (canonical format) + ``decisions.parquet``, atomically.

    When the policy was ``review`` (or any decision is ``review``) ``review.csv`` lists the
    samples left for a person to decide. ``review_file``, the file :func:`apply_review`
    applied, is kept as ``review_applied.csv`` (it may be the folder's own ``review.csv``,
    which is rewritten with the samples still undecided). The folder appears complete or
    not at all.

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
    applied = Path(review_file).read_bytes() if review_file is not None else None
    with atomic.atomic_dir(out_dir) as tmp:
        io.save(cleaned, tmp)
        table = decisions.loc[:, list(DECISION_COLUMNS)]
        artifacts.check_columns(table, artifacts.DECISION_COLUMNS, source=artifacts.DECISIONS)
        atomic.write_parquet(tmp / artifacts.DECISIONS, table)
        if policy == "review" or (decisions["decision"] == "review").any():
            review = review_table(decisions, cleaned.class_names)
            atomic.write_text(tmp / artifacts.REVIEW_CSV, review.to_csv(index=False))
        if applied is not None:
            atomic.write_bytes(tmp / artifacts.REVIEW_APPLIED_CSV, applied)
    return out_dir
