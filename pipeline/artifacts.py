"""The schema of every artifact of a run folder, defined once.

Each JSON artifact is a pydantic model; each table is a column spec (name -> dtype and
meaning). Producers build the model (or check the table) before they write, and
:class:`~assay.pipeline.runfolder.RunFolder` parses with the same model when it reads, so a
producer and its consumers cannot drift apart silently: a mismatch is a
:class:`~assay.pipeline.errors.DataError` naming the file.

=================================  ==========================================
file (in the run folder)           schema
=================================  ==========================================
``run.json``                       :class:`RunRecord`
``validation/validation.json``     :class:`ValidationReport`
``validation/sample_flags.parquet``  :data:`SAMPLE_FLAG_COLUMNS`
``detection/issues.parquet``       :data:`ISSUE_COLUMNS`
``detection/noise_matrix.npy``     float64 ``(K, K)``, ``T[i, j] = P(given j | true i)``
``detection/summary.json``         :class:`DetectionSummary`
``cleaned/decisions.parquet``      :data:`DECISION_COLUMNS`
``cleaned/manifest.parquet``       :data:`CLEANED_COLUMNS`
``gan/metrics.json``               :class:`GanMetrics`
=================================  ==========================================
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from assay.pipeline.errors import DataError
from assay.pipeline.verdict import Verdict

# ----------------------------------------------------------------------------- file names
#: File names inside a run folder (joined by :class:`~assay.pipeline.runfolder.RunPaths`).
DATASET_DIR = "dataset"
VALIDATION_DIR = "validation"
VALIDATION_JSON = "validation.json"
SAMPLE_FLAGS = "sample_flags.parquet"
PROFILE = "profile.parquet"
DATA_DOCS_DIR = "data_docs"
DETECTION_DIR = "detection"
ISSUES = "issues.parquet"
ISSUES_CSV = "issues.csv"
NOISE_MATRIX = "noise_matrix.npy"
DETECTION_SUMMARY = "summary.json"
CLEANED_DIR = "cleaned"
DECISIONS = "decisions.parquet"
REVIEW_CSV = "review.csv"
REVIEW_APPLIED_CSV = "review_applied.csv"
GAN_DIR = "gan"
GAN_METRICS = "metrics.json"
GAN_SAMPLES = "samples_{arm}.png"
GAN_LOSS_CURVES = "loss_curves.png"
REPORT = "report.html"
RUN_JSON = "run.json"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ----------------------------------------------------------------------------- run.json
StageState = Literal[
    "pending", "running", "done", "cached", "skipped", "failed", "critical", "interrupted"
]


class StageRecord(_Model):
    """One stage's entry in ``run.json["stages"]``."""

    state: StageState
    seconds: float | None = None
    compute_seconds: float | None = None
    key: str | None = None
    code: str | None = None
    from_run: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None


class RunRecord(BaseModel):
    """``run.json``: parameters, versions, timings per stage, data hashes, the verdict.

    The flow adds fields as the run goes, so every field is optional; fields this model
    does not name are kept as they are (the flow owns them).
    """

    model_config = ConfigDict(extra="allow")

    run_id: str | None = None
    status: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    updated_at: str | None = None
    flow_run_id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    device: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    code: dict[str, str] = Field(default_factory=dict)
    hashes: dict[str, str] = Field(default_factory=dict)
    stages: dict[str, StageRecord] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)
    seconds: float | None = None
    unchanged_since: str | None = None
    all_cached: bool | None = None
    verdict: Verdict | None = None


# ----------------------------------------------------------------------------- validation
class SuiteInfo(_Model):
    name: str
    path: str
    n_expectations: int


class ExpectationResult(_Model):
    """One expectation of the suite, as it ran."""

    expectation: str = Field(description="the suite's name for the check")
    type: str = Field(description="the Great Expectations expectation type")
    table: str = Field(description="'samples' (one row per sample) or a dataset-level table")
    column: str | None = None
    severity: Literal["critical", "warning"]
    success: bool
    observed_value: Any = None
    element_count: int | None = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    id_column: str | None = None
    first_unexpected_ids: list[Any] = Field(
        default_factory=list,
        description="up to 20 sample ids (class names for the classes table) that failed",
    )
    first_unexpected_values: list[Any] = Field(default_factory=list)
    details: Any = None
    kwargs: dict[str, Any] = Field(default_factory=dict)
    why: str | None = Field(None, description="the suite's curated reason for the check")
    exception: str | None = None


class ValidationReport(_Model):
    """``validation/validation.json``."""

    suite: SuiteInfo
    success_critical: bool
    success: bool
    n_expectations: int
    n_failed: int
    n_failed_critical: int
    critical_failures: list[str]
    n_samples: int
    n_flagged_samples: int
    flag_columns: list[str]
    facts: dict[str, Any]
    reference: dict[str, Any]
    results: list[ExpectationResult]
    data_docs: str | None = Field(None, description="Data Docs index, relative to validation/")
    seconds: dict[str, float]
    great_expectations_version: str


# ----------------------------------------------------------------------------- detection
class NoiseMatrixInfo(_Model):
    convention: str
    estimated: bool
    matrix: list[list[float]]
    estimated_noise_rate: float | None = None


class OutlierScoreInfo(_Model):
    method: str
    sources: list[str]


class DetectorInfo(_Model):
    summary: str = Field(description="the detector's one-line summary")
    info: dict[str, Any] = Field(default_factory=dict)


class DetectionSummary(_Model):
    """``detection/summary.json``."""

    n: int
    n_classes: int
    class_names: list[str]
    counts: dict[str, int] = Field(description="detector (and 'dirty') -> flagged samples")
    primary_reasons: dict[str, int] = Field(
        default_factory=dict, description="primary reason -> dirty samples"
    )
    n_dirty: int
    dirty_fraction: float
    folds: int
    seed: int
    device: str
    oof_accuracy: float | None = Field(None, description="out-of-fold classifier accuracy")
    classifier: dict[str, Any] | None = None
    noise_matrix: NoiseMatrixInfo
    outlier_score: OutlierScoreInfo
    dataset_level: list[str]
    detectors: dict[str, DetectorInfo]
    errors: dict[str, str]
    skipped: dict[str, str]
    timings: dict[str, float]


# ----------------------------------------------------------------------------- GAN
class GanArmMetrics(_Model):
    """One arm's entry of ``gan/metrics.json["arms"]`` (see :mod:`pipeline.evaluate`)."""

    label_accuracy: float
    fid: float | None = Field(None, description="null where the estimator is not meaningful")
    kid: float | None = Field(None, description="null where the subsets would be too small")
    kid_std: float | None = None
    precision: float | None = None
    recall: float | None = None
    cas: float
    vae_flag_rate: float | None = None
    uncertainty: dict[str, dict[str, Any] | None] = Field(
        default_factory=dict,
        description="metric -> interval over seeds and judged samples (null: not measured)",
    )
    seed_metrics: dict[str, list[float | None]] = Field(default_factory=dict)
    seeds: list[int] = Field(default_factory=list, description="the training seeds")
    seconds_per_seed: list[float] = Field(default_factory=list)
    n_judged: int | None = None
    steps: int
    seconds: float
    images_per_second: float
    device: str
    batch_size: int
    n_train: int
    train_label_noise: float | None = None
    final_loss_d: float
    final_loss_g: float
    samples_png: str
    checkpoint: str


class GanMetrics(_Model):
    """``gan/metrics.json``."""

    arms: dict[str, GanArmMetrics]
    arms_run: list[str]
    skipped: dict[str, str]
    reference: dict[str, float | int | None]
    judge: dict[str, Any]
    split: dict[str, Any]
    gan_config: dict[str, Any]
    transition: list[list[float]] | None = None
    device: str
    seed: int
    steps: int
    train_seeds: list[int] = Field(default_factory=list, description="the training seeds")
    seconds_total: float
    files: dict[str, str]


# ----------------------------------------------------------------------------- tables
@dataclass(frozen=True)
class Column:
    """One column of a table artifact: its pandas dtype kind and what it means."""

    dtype: Literal["int", "float", "bool", "str"]
    meaning: str


#: ``detection/issues.parquet``: one row per sample, in dataset order. Further detectors
#: add ``is_<name>_issue`` (bool) / ``<name>_score`` (float) and their own extra columns.
ISSUE_COLUMNS: dict[str, Column] = {
    "sample_id": Column("int", "the dataset's ids, in dataset order"),
    "given_label": Column("int", "the label as given"),
    "suggested_label": Column(
        "int", "the classifier's most probable class (given label when it did not run)"
    ),
    "suggested_label_confidence": Column("float", "its out-of-fold probability"),
    "label_score": Column("float", "cleanlab label quality (lower = more likely wrong)"),
    "is_label_issue": Column("bool", "the given label is likely wrong (and no image reason)"),
    "outlier_score": Column(
        "float", "2 ** (-outlier_evidence / 2.25): 'does not belong here' (below 0.5 flagged)"
    ),
    "is_outlier": Column("bool", "out of distribution or corrupted (the sources' evidence)"),
    "outlier_sources": Column("str", "comma list of knn_outlier, vae, image_property ('')"),
    "outlier_evidence": Column("float", "the outlier sources' evidence added up (>= 0)"),
    "knn_outlier_score": Column("float", "Datalab's kNN outlier score (lower = worse)"),
    "vae_score": Column("float", "the VAE's score (lower = worse; below 0.5 flagged)"),
    "vae_error": Column("float", "the VAE's negative ELBO, in nats"),
    "image_property_score": Column("float", "the image-property score (lower = worse)"),
    "image_property_kind": Column("str", "the failed image property ('' if none)"),
    "is_exact_duplicate": Column("bool", "a byte-identical copy of an earlier sample"),
    "is_near_duplicate": Column("bool", "nearly identical to an earlier sample (not exact)"),
    "duplicate_of": Column("int", "sample_id of the first member of its duplicate group; -1"),
    "is_dirty": Column("bool", "any per-sample issue above"),
    "primary_reason": Column(
        "str", "the one reason: image_property, outlier, exact_duplicate, near_duplicate, "
        "label, other ('' if clean)"
    ),
    "reasons": Column("str", "the issues in plain words, '; '-joined ('' if clean)"),
}

#: The issue types of :data:`ISSUE_COLUMNS`: name -> (flag column, score column or None).
#: The VAE and kNN verdicts are the entries of ``outlier_sources`` (one column per fact).
ISSUE_TYPES: dict[str, tuple[str, str | None]] = {
    "label": ("is_label_issue", "label_score"),
    "outlier": ("is_outlier", "outlier_score"),
    "exact_duplicate": ("is_exact_duplicate", None),
    "near_duplicate": ("is_near_duplicate", None),
}

#: The outlier sources named in ``outlier_sources``: name -> their score column.
OUTLIER_SOURCES: dict[str, str] = {
    "knn_outlier": "knn_outlier_score",
    "vae": "vae_score",
    "image_property": "image_property_score",
}


def source_flags(issues: pd.DataFrame, source: str) -> np.ndarray:
    """bool ``(N,)``: the samples that outlier ``source`` (a key of
    :data:`OUTLIER_SOURCES`) flagged, read from the ``outlier_sources`` column."""
    if source not in OUTLIER_SOURCES:
        raise ValueError(f"`source` must be one of {sorted(OUTLIER_SOURCES)}. Got {source!r}.")
    listed = issues["outlier_sources"].fillna("").astype(str).str.split(",")
    return np.fromiter((source in names for names in listed), dtype=bool, count=len(issues))

#: Issue columns beyond :data:`ISSUE_COLUMNS`: a further detector's flag and score.
ISSUE_FLAG_PATTERN = re.compile(r"is_(?P<name>.+)_issue")
ISSUE_SCORE = "{name}_score"

#: ``validation/sample_flags.parquet``: ``sample_id`` plus ``fails_<expectation>`` (bool).
SAMPLE_FLAG_COLUMNS: dict[str, Column] = {
    "sample_id": Column("int", "the dataset's ids"),
}
SAMPLE_FLAG_PREFIX = "fails_"

#: ``cleaned/decisions.parquet``: one row per sample of the dataset.
DECISION_COLUMNS: dict[str, Column] = {
    "sample_id": Column("int", "the dataset's ids"),
    "decision": Column("str", "keep, drop, relabel or review"),
    "reason": Column("str", "why, in plain words"),
    "old_label": Column("int", "the label as given"),
    "new_label": Column("int", "the label in the cleaned dataset (old_label unless relabelled)"),
    "decided_by": Column("str", "'policy', or 'review:<file name>' for a person's decision"),
}

#: The cleaned dataset's manifest: ``sample_id`` and ``label`` (the new label), the columns
#: the input carried (e.g. the injection ground truth), the validation flags
#: (``fails_<expectation>``) and these per-stage columns.
CLEANED_COLUMNS: dict[str, Column] = {
    "sample_id": Column("int", "the dataset's ids"),
    "label": Column("int", "the label after cleaning"),
    "is_dirty": Column("bool", "flagged dirty by detection"),
    "reasons": Column("str", "detection's reasons"),
    "decision": Column("str", "keep or relabel (dropped samples are not in the dataset)"),
    "reason": Column("str", "the cleaning decision's reason"),
    "original_label": Column("int", "the label as given"),
    "decided_by": Column("str", "'policy', or 'review:<file name>' for a person's decision"),
}

_KIND_CHECK = {
    "int": pd.api.types.is_integer_dtype,
    "float": pd.api.types.is_float_dtype,
    "bool": pd.api.types.is_bool_dtype,
    "str": lambda s: pd.api.types.is_object_dtype(s) or pd.api.types.is_string_dtype(s),
}


def check_columns(frame: pd.DataFrame, spec: Mapping[str, Column], *, source: Path | str) -> None:
    """Raise :class:`DataError` naming ``source`` unless ``frame`` has ``spec``'s columns.

    Parameters
    ----------
    frame : DataFrame
        The table as read or about to be written.
    spec : mapping of str to Column
        Required columns and their dtype kinds.
    source : path or str
        Named in the message.
    """
    missing = [c for c in spec if c not in frame.columns]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {missing}; expected {list(spec)}."
        )
    wrong = [
        f"{c} ({frame[c].dtype}, expected {col.dtype})"
        for c, col in spec.items()
        if not _KIND_CHECK[col.dtype](frame[c])
    ]
    if wrong:
        raise DataError(f"{source}: column(s) of the wrong type: {', '.join(wrong)}.")


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], data: Any, *, source: Path | str) -> M:
    """``model.model_validate(data)``, with a :class:`DataError` naming ``source``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise DataError(
            f"{source}: does not match the {model.__name__} schema: {exc}"
        ) from exc


def to_json(model: type[BaseModel], data: Any, *, source: Path | str) -> dict[str, Any]:
    """``data`` checked against ``model``, as the JSON-ready dict a producer writes."""
    return parse(model, data, source=source).model_dump(mode="json")
