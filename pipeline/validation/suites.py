"""Suite files: Great Expectations suites stored as JSON in ``expectations/``.

A suite file is a GX ``ExpectationSuite`` in its JSON form (``name``, ``expectations``,
``meta``). Each expectation is ``{"type", "kwargs", "severity", "meta"}`` where ``meta``
carries assay's own keys:

``name``   short unique name used in ``validation.json`` and as the flag column
``table``  ``samples`` (default), ``dataset`` or ``classes`` (see
           :mod:`pipeline.validation.tables`)
``why``    one sentence saying why the expectation exists
``learn``  optional: how :func:`learn_suite_dict` refits it (``bounds``, ``shape``,
           ``duplicates``)

Values may be ``{"$PARAMETER": name}`` for the parameters in :data:`PARAMETERS`, which
:func:`pipeline.validate.validate` fills in from the dataset.
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from assay.pipeline.errors import DataError
from assay.pipeline.validation.tables import TABLE_COLUMNS

#: The suite used when none is given: generic checks that fit any labelled image data.
DEFAULT_SUITE_PATH = Path(str(files("assay.expectations").joinpath("default.json")))
#: An example suite with hand-set bounds for MNIST-like digits (bright ink on dark).
DIGITS_SUITE_PATH = Path(str(files("assay.expectations").joinpath("digits.json")))

#: Suite parameters filled in from the dataset being validated.
PARAMETERS: dict[str, str] = {
    "declared_labels": "the labels 0..K-1 of the dataset's declared classes",
    "n_classes": "K, the number of declared classes",
}

SEVERITIES = ("critical", "warning", "info")
_COLUMN_KWARGS = ("column", "column_A", "column_B")
_COLUMN_LIST_KWARGS = ("column_list", "column_set")


@dataclass(frozen=True)
class Suite:
    """A checked suite file.

    Attributes
    ----------
    path : Path
        Where it was read from.
    name : str
        The suite's name.
    expectations : list of dict
        The expectations as in the file, each with ``meta.name`` and ``meta.table`` set.
    meta : dict
        The suite's ``meta`` (``meta["assay"]`` holds assay's own keys).
    raw : dict
        The whole file's JSON.
    """

    path: Path
    name: str
    expectations: list[dict[str, Any]]
    meta: dict[str, Any]
    raw: dict[str, Any]

    def for_table(self, table: str) -> list[dict[str, Any]]:
        return [e for e in self.expectations if e["meta"]["table"] == table]

    @property
    def reference(self) -> dict[str, Any] | None:
        """The stored class reference of a learned suite, else None."""
        return (self.meta.get("assay") or {}).get("reference")


def _parameters_in(value: Any) -> list[str]:
    if isinstance(value, dict):
        if set(value) == {"$PARAMETER"}:
            return [str(value["$PARAMETER"])]
        return [p for v in value.values() for p in _parameters_in(v)]
    if isinstance(value, list):
        return [p for v in value for p in _parameters_in(v)]
    return []


def _label(index: int, entry: Any) -> str:
    if isinstance(entry, dict):
        meta = entry.get("meta")
        if isinstance(meta, dict) and meta.get("name"):
            return f"expectation #{index + 1} ({meta['name']!r})"
        if entry.get("type"):
            return f"expectation #{index + 1} ({entry['type']})"
    return f"expectation #{index + 1}"


def _check_expectation(index: int, entry: Any, where: str) -> dict[str, Any]:
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    label = _label(index, entry)
    if not isinstance(entry, dict):
        raise DataError(f"{where}: {label} must be a JSON object. Got {type(entry).__name__}.")
    etype, kwargs = entry.get("type"), entry.get("kwargs", {})
    if not isinstance(etype, str) or not etype:
        raise DataError(
            f"{where}: {label} has no 'type' (e.g. 'expect_column_values_to_be_between')."
        )
    if not isinstance(kwargs, dict):
        raise DataError(f"{where}: {label}: 'kwargs' must be a JSON object.")
    meta = entry.get("meta") or {}
    if not isinstance(meta, dict):
        raise DataError(f"{where}: {label}: 'meta' must be a JSON object.")
    meta = dict(meta)
    column = kwargs.get("column")
    if not meta.get("name"):
        # GX's own suites carry no names: number them so they stay unique.
        meta["name"] = f"{etype}:{column}#{index + 1}" if column else f"{etype}#{index + 1}"
    meta.setdefault("table", "samples")
    table = meta["table"]
    if table not in TABLE_COLUMNS:
        raise DataError(
            f"{where}: {label}: meta.table must be one of {sorted(TABLE_COLUMNS)}. Got {table!r}."
        )
    severity = str(entry.get("severity", "critical")).lower()
    if severity not in SEVERITIES:
        raise DataError(
            f"{where}: {label}: severity must be one of {list(SEVERITIES)}. Got {severity!r}."
        )
    known = TABLE_COLUMNS[table]
    named = [kwargs[k] for k in _COLUMN_KWARGS if k in kwargs]
    for key in _COLUMN_LIST_KWARGS:
        if isinstance(kwargs.get(key), list):
            named += kwargs[key]
    missing = [c for c in named if not isinstance(c, str) or c not in known]
    if missing:
        raise DataError(
            f"{where}: {label} names column {missing[0]!r}, which the {table!r} table "
            f"does not have. Its columns are: {', '.join(known)}."
        )
    unknown = [p for p in _parameters_in(kwargs) if p not in PARAMETERS]
    if unknown:
        raise DataError(
            f"{where}: {label} uses suite parameter {unknown[0]!r}; the parameters "
            f"available are {sorted(PARAMETERS)}."
        )
    checked = {**entry, "type": etype, "kwargs": kwargs, "severity": severity, "meta": meta}
    try:
        ExpectationConfiguration(
            type=etype,
            kwargs=kwargs,
            meta=meta,
            severity=severity,
            notes=entry.get("notes"),
            description=entry.get("description"),
        ).to_domain_obj()
    except Exception as exc:  # GX raises several unrelated types for a bad configuration
        message = " ".join(str(exc).split())
        raise DataError(f"{where}: {label} is not a valid expectation: {message}") from None
    return checked


def load_suite(path: str | os.PathLike[str] | None = None) -> Suite:
    """Read and check a suite file (default: ``expectations/default.json``).

    Raises
    ------
    DataError
        The file is missing or not valid JSON, is not a suite, or one of its expectations
        is unknown to Great Expectations, is badly configured, names a column its table
        lacks, uses an unknown suite parameter, or repeats another's name. The message
        names the file and the expectation.
    """
    path = Path(path) if path is not None else DEFAULT_SUITE_PATH
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{where}: suite file not found.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{where}: cannot read the suite file ({exc}).") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{where}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            f"expected a Great Expectations suite."
        ) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("expectations"), list):
        raise DataError(
            f"{where}: expected a Great Expectations suite: a JSON object with a 'name' "
            f"and a list of 'expectations'."
        )
    name = raw.get("name") or path.stem
    if not isinstance(name, str):
        raise DataError(f"{where}: the suite's 'name' must be a string. Got {name!r}.")
    meta = raw.get("meta") or {}
    if not isinstance(meta, dict):
        raise DataError(f"{where}: the suite's 'meta' must be a JSON object.")
    expectations = [_check_expectation(i, e, where) for i, e in enumerate(raw["expectations"])]
    seen: dict[str, int] = {}
    for i, e in enumerate(expectations):
        n = e["meta"]["name"]
        if n in seen:
            raise DataError(
                f"{where}: expectation #{i + 1} repeats the name {n!r} of expectation "
                f"#{seen[n] + 1}; names must be unique (set meta.name)."
            )
        seen[n] = i
    return Suite(path=path, name=name, expectations=expectations, meta=meta, raw=raw)


# ------------------------------------------------------------------------------ learning
#: Profile columns whose range a learned suite fits, with the range each can take.
LEARNED_COLUMNS: dict[str, tuple[float, float]] = {
    "pixel_mean": (0.0, 255.0),
    "pixel_std": (0.0, 127.5),
    "ink_fraction": (0.0, 1.0),
    "border_ink_fraction": (0.0, 1.0),
    "pixel_entropy": (0.0, 8.0),
    "total_variation": (0.0, 1.0),
    "flat_fraction": (0.0, 1.0),
}
#: Quantiles that span the trusted data, and how far beyond them the bounds go, as a
#: fraction of the distance between them.
LEARN_QUANTILES = (0.0005, 0.9995)
LEARN_MARGIN = 0.25

_WHY_LEARNED = {
    "pixel_mean": "mean brightness",
    "pixel_std": "contrast (standard deviation of the grey levels)",
    "ink_fraction": "share of bright ink pixels",
    "border_ink_fraction": "share of bright pixels on the border",
    "pixel_entropy": "histogram entropy",
    "total_variation": "edge energy (mean difference between neighbouring pixels)",
    "flat_fraction": "share of equal neighbouring pixels",
}


def learned_bounds(values: np.ndarray, limits: tuple[float, float]) -> tuple[float, float]:
    """Robust bounds for one column of trusted data.

    The ``LEARN_QUANTILES`` quantiles widened by ``LEARN_MARGIN`` times their distance
    (at least 1% of the column's possible range), clipped to ``limits`` and rounded
    outwards to 4 decimals.
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    lo_q, hi_q = (float(v) for v in np.quantile(values, LEARN_QUANTILES))
    margin = max(LEARN_MARGIN * (hi_q - lo_q), 0.01 * (limits[1] - limits[0]))
    lo = max(limits[0], lo_q - margin)
    hi = min(limits[1], hi_q + margin)
    return math.floor(lo * 1e4) / 1e4, math.ceil(hi * 1e4) / 1e4


def learn_suite_dict(
    profile: pd.DataFrame,
    facts: dict[str, Any],
    *,
    base: Suite,
    source: str,
) -> dict[str, Any]:
    """A suite fitted to trusted data, as JSON-ready dict.

    Starts from ``base`` and
    - replaces every ``learn: "bounds"`` expectation by one on the same column with
      bounds learned from the data, and adds learned bounds for the other columns of
      :data:`LEARNED_COLUMNS`;
    - replaces ``learn: "shape"`` expectations by critical ones that require the trusted
      image height, width and channels;
    - sets a ``learn: "duplicates"`` bound to twice the trusted duplicate fraction (at
      least the base bound);
    - stores the trusted class distribution as the suite's class reference.
    """
    n = len(profile)
    kept: list[dict[str, Any]] = []
    bound_columns: list[str] = []
    for e in base.expectations:
        learn = e["meta"].get("learn")
        if learn == "bounds":
            bound_columns.append(e["kwargs"]["column"])
            continue
        if learn == "shape":
            continue
        e = copy.deepcopy(e)
        if learn == "duplicates":
            e["kwargs"]["max_value"] = max(
                float(e["kwargs"].get("max_value") or 0.0),
                round(2.0 * facts["duplicate_fraction"], 6),
            )
        kept.append(e)

    learned: dict[str, list[float]] = {}
    for column in [*bound_columns, *[c for c in LEARNED_COLUMNS if c not in bound_columns]]:
        limits = LEARNED_COLUMNS.get(column, (-math.inf, math.inf))
        lo, hi = learned_bounds(profile[column].to_numpy(), limits)
        learned[column] = [lo, hi]
        what = _WHY_LEARNED.get(column, column)
        kept.append(
            {
                "type": "expect_column_values_to_be_between",
                "kwargs": {"column": column, "min_value": lo, "max_value": hi},
                "severity": "warning",
                "meta": {
                    "name": f"{column}_in_learned_range",
                    "table": "samples",
                    "learn": "bounds",
                    "why": (
                        f"The {what} of an image should lie where it lay in the trusted "
                        f"data ({source}, {n} samples): between {lo:g} and {hi:g}."
                    ),
                },
            }
        )
    for column, value in (
        ("height", facts["image_shape"][0]),
        ("width", facts["image_shape"][1]),
        ("channels", facts["channels"]),
    ):
        kept.append(
            {
                "type": "expect_column_values_to_be_in_set",
                "kwargs": {"column": column, "value_set": [int(value)]},
                "severity": "critical",
                "meta": {
                    "name": f"{column}_as_trusted",
                    "table": "samples",
                    "learn": "shape",
                    "why": (
                        f"Images must have the trusted data's {column} ({int(value)}); "
                        f"another size is another kind of data or a loading error."
                    ),
                },
            }
        )

    meta = copy.deepcopy(base.meta)
    assay = dict(meta.get("assay") or {})
    assay.update(
        {
            "description": (
                f"Learned from {n} trusted samples ({source}), starting from suite {base.name!r}."
            ),
            "learned_from": {"source": source, "n_samples": n, "base_suite": base.name},
            "learned_bounds": learned,
            "learn_quantiles": list(LEARN_QUANTILES),
            "learn_margin": LEARN_MARGIN,
            "reference": {
                "class_fractions": facts["class_fractions"],
                "source": f"class distribution of the trusted data ({source}, {n} samples)",
            },
        }
    )
    meta["assay"] = assay
    return {"name": f"{base.name}_learned", "meta": meta, "expectations": kept}
