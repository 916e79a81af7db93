"""The validate stage: Great Expectations suites over a table that describes the images.

:func:`validate` profiles the dataset (:mod:`pipeline.profile`), builds three tables —
``samples`` (one row per image), ``dataset`` (one row of facts) and ``classes`` (each
class's share against a reference distribution) — and runs a suite from
``expectations/`` over them. The default suite (``default.json``) holds generic checks
that fit any labelled image data; ``digits.json`` is an example with hand-set bounds for
MNIST-like digits. Every expectation carries a severity: a failed *critical*
one makes ``success_critical`` False (the command exits with code 3 and the run stops
before detection); *warning* failures are reported and mark the samples they concern.

:func:`learn_suite` fits a suite to a dataset the user trusts, so that new batches of the
same kind of data are checked against what "normal" looked like.

Nothing here raises for a dataset that fails its expectations; bad *suite files* and
bad references raise :class:`pipeline.errors.DataError`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from assay.pipeline import artifacts
from assay.pipeline.artifacts import check_columns
from assay.pipeline.atomic import atomic_dir, write_json, write_parquet
from assay.pipeline.dataset import Dataset
from assay.pipeline.errors import DataError
from assay.pipeline.profile import dataset_facts, profile
from assay.pipeline.validation.suites import (
    DEFAULT_SUITE_PATH,
    DIGITS_SUITE_PATH,
    Suite,
    learn_suite_dict,
    load_suite,
)
from assay.pipeline.validation.tables import class_table, dataset_table, reference_distribution

__all__ = [
    "DEFAULT_SUITE_PATH",
    "DIGITS_SUITE_PATH",
    "ValidationResult",
    "critical_failures_message",
    "learn_suite",
    "load_suite",
    "validate",
]

Reference = Dataset | Mapping[str, float] | Sequence[float] | np.ndarray | None


@dataclass
class ValidationResult:
    """What :func:`validate` found.

    Attributes
    ----------
    success_critical : bool
        No critical expectation failed.
    results : list of dict
        One per expectation, in suite order: ``expectation`` (name), ``type`` (GX type),
        ``table``, ``column``, ``severity``, ``success``, ``observed_value``,
        ``element_count``, ``unexpected_count``, ``unexpected_percent``, ``id_column``,
        ``first_unexpected_ids`` (up to 20 sample ids, or class names for the classes
        table), ``first_unexpected_values``, ``kwargs``, ``why``, ``exception``.
    sample_flags : DataFrame, N rows
        ``sample_id`` plus one bool column ``fails_<name>`` per failed per-sample
        expectation that pointed at samples (True for the samples it flagged).
    profile : DataFrame, N rows
        The per-sample profile the suite ran over.
    facts : dict
        Dataset-level facts (:func:`pipeline.profile.dataset_facts`).
    reference : dict
        ``class_fractions`` and ``source`` of the class distribution compared against.
    suite : dict
        ``name``, ``path`` and number of expectations of the suite that ran.
    seconds : dict
        Wall-clock seconds of ``profile``, ``validate`` and ``data_docs``.
    data_docs : str or None
        Path of the Data Docs index, relative to ``out_dir``, when built.
    """

    success_critical: bool
    results: list[dict[str, Any]]
    sample_flags: pd.DataFrame
    profile: pd.DataFrame
    facts: dict[str, Any]
    reference: dict[str, Any]
    suite: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    data_docs: str | None = None

    @property
    def failed(self) -> list[dict[str, Any]]:
        """Results of the expectations that failed."""
        return [r for r in self.results if not r["success"]]

    @property
    def critical_failures(self) -> list[dict[str, Any]]:
        """Results of the critical expectations that failed."""
        return [r for r in self.failed if r["severity"] == "critical"]

    @property
    def flagged(self) -> np.ndarray:
        """bool ``(N,)``: the sample failed at least one per-sample expectation."""
        cols = [c for c in self.sample_flags.columns if c != "sample_id"]
        if not cols:
            return np.zeros(len(self.sample_flags), dtype=bool)
        return self.sample_flags[cols].to_numpy(dtype=bool).any(axis=1)

    def to_json(self) -> dict[str, Any]:
        """The content of ``validation.json`` as a JSON-ready dict."""
        import great_expectations as gx

        failed = self.failed
        return {
            "suite": self.suite,
            "success_critical": self.success_critical,
            "success": not failed,
            "n_expectations": len(self.results),
            "n_failed": len(failed),
            "n_failed_critical": len(self.critical_failures),
            "critical_failures": [r["expectation"] for r in self.critical_failures],
            "n_samples": len(self.sample_flags),
            "n_flagged_samples": int(self.flagged.sum()),
            "flag_columns": [c for c in self.sample_flags.columns if c != "sample_id"],
            "facts": self.facts,
            "reference": self.reference,
            "results": self.results,
            "data_docs": self.data_docs,
            "seconds": self.seconds,
            "great_expectations_version": gx.__version__,
        }


def _describe(result: Mapping[str, Any]) -> str:
    """One plain-words line about a failed expectation."""
    column = f" (column {result['column']})" if result.get("column") else ""
    line = f"{result['expectation']}{column}: {result.get('why') or result['type']}"
    if result.get("exception"):
        return f"{line} It could not be checked: {result['exception']}"
    count = result.get("unexpected_count")
    ids = [i for i in result.get("first_unexpected_ids") or [] if i is not None]
    mismatched = (result.get("details") or {}).get("mismatched") or {}
    if mismatched.get("missing"):
        return f"{line} Missing: {', '.join(map(str, mismatched['missing']))}."
    if count and result.get("table") != "dataset":
        what = "class" if result.get("id_column") == "class_name" else "sample"
        line += f" {count} {what}{'' if count == 1 else 'es' if what == 'class' else 's'}"
        line += f" fail{'s' if count == 1 else ''} it"
        if ids:
            line += f", e.g. {', '.join(str(i) for i in ids[:5])}"
        return line + "."
    if result.get("observed_value") is not None:
        line += f" Observed: {result['observed_value']}."
    return line


def critical_failures_message(result: ValidationResult) -> str:
    """The failed critical expectations in plain words ("" when there are none)."""
    failures = result.critical_failures
    if not failures:
        return ""
    n = len(failures)
    head = (
        f"Validation failed: {n} critical expectation{'s' if n > 1 else ''} of suite "
        f"{result.suite['name']!r} failed, so the data is not what it claims to be:"
    )
    return "\n".join([head, *(f"  - {_describe(r)}" for r in failures)])


def _flags(sample_ids: np.ndarray, results: list[dict[str, Any]]) -> pd.DataFrame:
    flags = pd.DataFrame({"sample_id": sample_ids.astype(np.int64)})
    for r in results:
        ids = [i for i in r.pop("_all_unexpected_ids", []) if i is not None]
        if r["table"] != "samples" or r["success"] or not ids:
            continue
        flags[f"fails_{r['expectation']}"] = np.isin(sample_ids, np.asarray(ids))
    return flags


def validate(
    dataset: Dataset,
    *,
    suite_path: str | os.PathLike[str] | None = None,
    reference: Reference = None,
    out_dir: str | os.PathLike[str] | None = None,
    data_docs: bool = True,
    profile_table: pd.DataFrame | None = None,
) -> ValidationResult:
    """Run an expectation suite over ``dataset``.

    Parameters
    ----------
    dataset : Dataset
        ``N`` images and labels.
    suite_path : path, optional
        A suite file (default: ``expectations/default.json``).
    reference : Dataset, mapping, sequence or None
        The class distribution to compare the class balance with: a reference dataset,
        class name -> weight, or ``K`` weights in class order. Default: the suite's
        stored reference (learned suites have one), else uniform.
    out_dir : path, optional
        Write ``validation.json``, ``sample_flags.parquet`` and ``profile.parquet`` here
        (and ``data_docs/`` when ``data_docs``).
    data_docs : bool
        Build Great Expectations Data Docs into ``out_dir/data_docs`` (an extra: the
        pages load scripts from the internet).
    profile_table : DataFrame, optional
        A precomputed :func:`pipeline.profile.profile` of ``dataset`` (``N`` rows).

    Returns
    -------
    ValidationResult
        Never raises because the data fails expectations; see ``success_critical``.

    Raises
    ------
    DataError
        The suite file is unreadable or invalid (the message names the file and the
        expectation), or ``reference`` is malformed.
    """
    suite = load_suite(suite_path)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    prof = profile(dataset) if profile_table is None else profile_table
    if len(prof) != len(dataset):
        raise DataError(
            f"profile_table has {len(prof)} rows; expected one per sample ({len(dataset)})."
        )
    timings["profile"] = round(time.perf_counter() - start, 3)

    start = time.perf_counter()
    facts = dataset_facts(dataset, prof)
    fractions, ref_source = reference_distribution(
        reference, dataset.class_names, suite_reference=suite.reference
    )
    tables = {
        "samples": prof,
        "dataset": dataset_table(facts),
        "classes": class_table(facts, fractions),
    }
    parameters = {
        "declared_labels": list(range(dataset.n_classes)),
        "n_classes": dataset.n_classes,
    }
    # Absolute: Great Expectations refuses a relative Data Docs folder.
    out = Path(out_dir).expanduser().resolve() if out_dir is not None else None
    from assay.pipeline.validation.engine import run_suite

    with contextlib.ExitStack() as stack:
        # The whole folder appears at once, or not at all (a full disk leaves nothing).
        tmp = stack.enter_context(atomic_dir(out)) if out is not None else None
        docs_index: str | None = None
        if tmp is not None and data_docs:
            docs_start = time.perf_counter()
            (tmp / "data_docs").mkdir()
            results = run_suite(suite, tables, parameters, docs_dir=tmp / "data_docs")
            timings["validate_and_data_docs"] = round(time.perf_counter() - docs_start, 3)
            if (tmp / "data_docs" / "index.html").exists():
                docs_index = "data_docs/index.html"
        else:
            results = run_suite(suite, tables, parameters)
        timings["validate"] = round(time.perf_counter() - start, 3)

        flags = _flags(dataset.sample_ids, results)
        success_critical = all(r["success"] for r in results if r["severity"] == "critical")
        result = ValidationResult(
            success_critical=success_critical,
            results=results,
            sample_flags=flags,
            profile=prof,
            facts=facts,
            reference={"class_fractions": fractions, "source": ref_source},
            suite={
                "name": suite.name,
                "path": str(suite.path),
                "n_expectations": len(suite.expectations),
            },
            seconds=timings,
            data_docs=docs_index,
        )
        if tmp is not None:
            check_columns(flags, artifacts.SAMPLE_FLAG_COLUMNS,
                          source=out / artifacts.SAMPLE_FLAGS)  # fmt: skip
            write_parquet(tmp / artifacts.SAMPLE_FLAGS, flags)
            write_parquet(tmp / artifacts.PROFILE, prof)
            path = out / artifacts.VALIDATION_JSON
            write_json(tmp / artifacts.VALIDATION_JSON,
                       artifacts.to_json(artifacts.ValidationReport, result.to_json(),
                                         source=path))  # fmt: skip
    return result


def learn_suite(
    dataset: Dataset,
    *,
    out_path: str | os.PathLike[str],
    base_suite: str | os.PathLike[str] | None = None,
) -> Path:
    """Fit a suite to a dataset the user trusts and write it to ``out_path``.

    The suite starts from ``base_suite`` (default: ``expectations/default.json``) and
    adds a warning per image property of
    :data:`pipeline.validation.suites.LEARNED_COLUMNS` (mean, contrast, ink, border
    ink, entropy, edge energy, flatness): the property must lie within robust bounds
    learned from the trusted data's quantiles
    (:func:`pipeline.validation.suites.learned_bounds`); hand-set bounds of the base
    suite marked ``learn: "bounds"`` are replaced by learned ones. Image height, width
    and channels must match the trusted data (critical), and the trusted class
    distribution becomes the reference the class balance is compared with. Validate
    new batches with it through ``validate(..., suite_path=out_path)`` (``--suite``).

    Parameters
    ----------
    dataset : Dataset
        The trusted data, ``N`` samples.
    out_path : path
        Where to write the suite (JSON, written atomically).
    base_suite : path, optional
        The suite to start from.

    Returns
    -------
    Path
        ``out_path``.
    """
    base: Suite = load_suite(base_suite)
    prof = profile(dataset)
    facts = dataset_facts(dataset, prof)
    source = str(dataset.meta.get("source") or "trusted dataset")
    suite = learn_suite_dict(prof, facts, base=base, source=source)
    path = Path(out_path)
    write_json(path, suite)
    load_suite(path)  # the written suite must load
    return path
