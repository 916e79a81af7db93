"""The tables the expectation suites run over.

``samples``  the per-sample profile (:func:`pipeline.profile.profile`), one row per image
``dataset``  one row of dataset-level facts (:func:`pipeline.profile.dataset_facts`)
``classes``  one row per class: how its share of the data compares with a reference

The class reference is a distribution over class *names*: from a reference dataset, from
a mapping given by the caller, from the suite (a learned suite stores the distribution of
the data it was learned from) or, by default, uniform over the declared classes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from assay.pipeline.dataset import Dataset
from assay.pipeline.errors import DataError
from assay.pipeline.profile import PROFILE_COLUMNS

#: Columns of the one-row dataset table and their dtypes.
DATASET_COLUMNS: dict[str, str] = {
    "n_samples": "int64",
    "n_classes": "int64",
    "n_classes_present": "int64",
    "n_missing_classes": "int64",
    "n_duplicates": "int64",
    "duplicate_fraction": "float64",
    "class_imbalance_ratio": "float64",
    "n_skipped_files": "int64",
    "min_class_fraction": "float64",
    "max_class_fraction": "float64",
}

#: Columns of the per-class table and their dtypes.
CLASS_COLUMNS: dict[str, str] = {
    "class_name": "object",
    "label": "int64",
    "count": "int64",
    "fraction": "float64",
    "reference_fraction": "float64",
    "balance_ratio": "float64",
    "in_reference": "bool",
}

#: Table name -> the columns a suite may name in it.
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "samples": tuple(PROFILE_COLUMNS),
    "dataset": tuple(DATASET_COLUMNS),
    "classes": tuple(CLASS_COLUMNS),
}

#: Table name -> the column that identifies a row in results (None: the row number).
ID_COLUMNS: dict[str, str | None] = {
    "samples": "sample_id",
    "dataset": None,
    "classes": "class_name",
}


def _normalise(weights: Mapping[str, float], what: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in weights.items():
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise DataError(
                f"{what}: class weights must be numbers. Got {value!r} for class {name!r}."
            ) from None
        if not np.isfinite(v) or v < 0:
            raise DataError(
                f"{what}: class weights must be finite and >= 0. Got {v} for class {name!r}."
            )
        out[str(name)] = v
    total = sum(out.values())
    if total <= 0:
        raise DataError(f"{what}: class weights must not all be zero. Got {dict(weights)}.")
    return {k: v / total for k, v in out.items()}


def reference_distribution(
    reference: Dataset | Mapping[str, float] | Sequence[float] | np.ndarray | None,
    class_names: Sequence[str],
    *,
    suite_reference: Mapping[str, Any] | None = None,
) -> tuple[dict[str, float], str]:
    """The class distribution to compare against, and where it came from.

    Parameters
    ----------
    reference : Dataset, mapping, sequence or None
        A reference dataset (its class counts, by class name); a mapping class name ->
        weight; a sequence of ``K`` weights in the order of ``class_names``; or None.
    class_names : sequence of str, length K
        The validated dataset's declared classes.
    suite_reference : mapping, optional
        The suite's stored reference (``{"class_fractions": {...}, "source": ...}``),
        used when ``reference`` is None.

    Returns
    -------
    fractions : dict
        Class name -> fraction, summing to 1.
    source : str
        A few words saying where the distribution came from.
    """
    if isinstance(reference, Dataset):
        counts = reference.class_counts()
        weights = {c: float(v) for c, v in zip(reference.class_names, counts, strict=True)}
        source = f"reference dataset ({len(reference)} samples)"
        return _normalise(weights, "reference dataset"), source
    if isinstance(reference, Mapping):
        return _normalise(reference, "reference"), "reference given by the caller"
    if reference is not None:
        values = np.asarray(reference, dtype=np.float64).ravel()
        if values.shape != (len(class_names),):
            raise DataError(
                f"reference: expected one weight per declared class ({len(class_names)}). "
                f"Got {values.size} weights."
            )
        return (
            _normalise(dict(zip(class_names, values.tolist(), strict=True)), "reference"),
            "reference given by the caller",
        )
    if suite_reference and suite_reference.get("class_fractions"):
        fractions = _normalise(suite_reference["class_fractions"], "suite reference")
        return fractions, str(suite_reference.get("source", "the suite's reference"))
    k = len(class_names)
    return {c: 1.0 / k for c in class_names}, "uniform over the declared classes"


def dataset_table(facts: Mapping[str, Any]) -> pd.DataFrame:
    """One row of dataset-level facts (:data:`DATASET_COLUMNS`)."""
    fractions = list(facts["class_fractions"].values()) or [0.0]
    row = {
        "n_samples": facts["n_samples"],
        "n_classes": facts["n_classes"],
        "n_classes_present": facts["n_classes_present"],
        "n_missing_classes": facts["n_missing_classes"],
        "n_duplicates": facts["n_duplicates"],
        "duplicate_fraction": facts["duplicate_fraction"],
        "class_imbalance_ratio": facts["class_imbalance_ratio"],
        "n_skipped_files": facts["n_skipped_files"],
        "min_class_fraction": min(fractions),
        "max_class_fraction": max(fractions),
    }
    return pd.DataFrame([row]).astype(DATASET_COLUMNS)


def class_table(facts: Mapping[str, Any], reference: Mapping[str, float]) -> pd.DataFrame:
    """One row per class of the dataset or of the reference (:data:`CLASS_COLUMNS`).

    ``balance_ratio`` is ``fraction / reference_fraction``: 1 when the class has exactly
    its reference share, 0 when it is missing, ``inf`` when the reference gives it no
    share. Classes the dataset does not declare get ``label`` -1 and count 0.
    """
    names = list(facts["class_names"])
    extra = [c for c in reference if c not in facts["class_counts"]]
    rows = []
    for label, name in [*enumerate(names), *((-1, c) for c in extra)]:
        fraction = float(facts["class_fractions"].get(name, 0.0))
        ref = float(reference.get(name, 0.0))
        if ref > 0:
            ratio = fraction / ref
        else:
            ratio = float("inf") if fraction > 0 else 0.0
        rows.append(
            {
                "class_name": name,
                "label": label,
                "count": int(facts["class_counts"].get(name, 0)),
                "fraction": fraction,
                "reference_fraction": ref,
                "balance_ratio": ratio,
                "in_reference": name in reference,
            }
        )
    return pd.DataFrame(rows, columns=list(CLASS_COLUMNS)).astype(CLASS_COLUMNS)
