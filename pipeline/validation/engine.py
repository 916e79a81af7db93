"""Run a checked suite over the validation tables with Great Expectations.

One ephemeral GX context per run (creating one takes milliseconds). Each table becomes a
pandas dataframe asset with a whole-dataframe batch definition; the suite's expectations
for that table become a GX ``ExpectationSuite``; a ``ValidationDefinition`` ties the two
and a ``Checkpoint`` runs it. When asked, the Data Docs site is built once at the end.
Results come back as plain dictionaries in the order of the suite file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from assay.pipeline.validation.suites import Suite
from assay.pipeline.validation.tables import ID_COLUMNS

#: How many unexpected ids and values each result keeps.
FIRST_N = 20
_DOCS_SITE = "assay"


def _plain(value: Any) -> Any:
    """numpy scalars and containers -> JSON-ready Python values (non-finite -> None)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        v = float(value)
        return v if math.isfinite(v) else None
    return value


def _context(docs_dir: Path | None) -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    for site in list(context.list_data_docs_sites()):
        context.delete_data_docs_site(site)
    if docs_dir is not None:
        context.add_data_docs_site(
            _DOCS_SITE,
            {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    return context


def _gx_suite(name: str, expectations: list[dict[str, Any]]) -> Any:
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    objs = [
        ExpectationConfiguration(
            type=e["type"],
            kwargs=e["kwargs"],
            meta=e["meta"],
            severity=e["severity"],
            notes=e.get("notes"),
            description=e.get("description"),
        ).to_domain_obj()
        for e in expectations
    ]
    return gx.ExpectationSuite(name=name, expectations=objs)


def _exception_message(info: Any) -> str | None:
    if not info:
        return None
    if isinstance(info, dict) and "raised_exception" in info:
        infos = [info]
    elif isinstance(info, dict):
        infos = list(info.values())
    else:
        infos = [info]
    for item in infos:
        item = item.to_json_dict() if hasattr(item, "to_json_dict") else item
        if isinstance(item, dict) and item.get("raised_exception"):
            return str(item.get("exception_message") or "the expectation raised an error")
    return None


def _observed(
    spec: dict[str, Any], result: Mapping[str, Any], frame: pd.DataFrame, table: str
) -> Any:
    if "observed_value" in result:
        return _plain(result["observed_value"])
    column = spec["kwargs"].get("column")
    if column not in frame.columns:
        return None
    values = frame[column]
    if table == "dataset" and len(frame) == 1:
        return _plain(values.iloc[0])
    if pd.api.types.is_bool_dtype(values):
        return {"n_true": int(values.sum()), "n_false": int((~values).sum())}
    if pd.api.types.is_numeric_dtype(values) and len(values):
        finite = values[np.isfinite(values.to_numpy(dtype=np.float64))]
        return {
            "min": _plain(values.min()),
            "max": _plain(values.max()),
            "median": _plain(finite.median()) if len(finite) else None,
        }
    return None


def _convert(spec: dict[str, Any], evr: Any, frame: pd.DataFrame, table: str) -> dict[str, Any]:
    result = dict(evr.result or {})
    column = spec["kwargs"].get("column")
    id_column = ID_COLUMNS[table]
    unexpected = result.get("unexpected_index_list") or []
    ids: list[Any] = []
    values: list[Any] = []
    for item in unexpected:
        if isinstance(item, Mapping):
            if id_column is not None and id_column in item:
                ids.append(_plain(item[id_column]))
            if column is not None and column in item:
                values.append(_plain(item[column]))
        else:  # a row number when the table has no id column
            ids.append(_plain(item))
    kwargs = {k: v for k, v in (evr.expectation_config.kwargs or {}).items() if k != "batch_id"}
    exception = _exception_message(evr.exception_info)
    return {
        "expectation": spec["meta"]["name"],
        "type": spec["type"],
        "table": table,
        "column": column,
        "severity": spec["severity"],
        "success": bool(evr.success),
        "observed_value": _observed(spec, result, frame, table),
        "element_count": _plain(result.get("element_count", len(frame))),
        "unexpected_count": _plain(result.get("unexpected_count", 0 if evr.success else None)),
        "unexpected_percent": _plain(result.get("unexpected_percent")),
        "id_column": id_column,
        "first_unexpected_ids": ids[:FIRST_N],
        "first_unexpected_values": values[:FIRST_N],
        "details": _plain(result["details"]) if "details" in result else None,
        "kwargs": _plain(kwargs),
        "why": spec["meta"].get("why", ""),
        "exception": exception,
        "_all_unexpected_ids": ids,
    }


def run_suite(
    suite: Suite,
    tables: Mapping[str, pd.DataFrame],
    parameters: Mapping[str, Any],
    *,
    docs_dir: Path | None = None,
) -> list[dict[str, Any]]:
    """Run every expectation of ``suite`` on its table.

    Parameters
    ----------
    suite : Suite
        A checked suite (:func:`pipeline.validation.suites.load_suite`).
    tables : mapping
        Table name -> DataFrame (``samples``, ``dataset``, ``classes``).
    parameters : mapping
        Values for the suite's ``$PARAMETER`` references.
    docs_dir : Path, optional
        Build GX Data Docs into this folder.

    Returns
    -------
    list of dict
        One per expectation, in suite order (see :func:`pipeline.validate.validate`).
        Each also holds ``_all_unexpected_ids`` (every unexpected id), which the caller
        turns into per-sample flags and drops.
    """
    import great_expectations as gx

    context = _context(docs_dir)
    source = context.data_sources.add_pandas("assay")
    by_name: dict[str, dict[str, Any]] = {}
    for table, frame in tables.items():
        specs = suite.for_table(table)
        if not specs:
            continue
        asset = source.add_dataframe_asset(table)
        batch = asset.add_batch_definition_whole_dataframe(f"{table}_all")
        gx_suite = context.suites.add(_gx_suite(f"{suite.name}.{table}", specs))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{suite.name}.{table}", data=batch, suite=gx_suite)
        )
        result_format: dict[str, Any] = {"result_format": "COMPLETE"}
        if ID_COLUMNS[table] is not None and ID_COLUMNS[table] in frame.columns:
            result_format["unexpected_index_column_names"] = [ID_COLUMNS[table]]
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=f"{suite.name}.{table}",
                validation_definitions=[definition],
                actions=[],
                result_format=result_format,
            )
        )
        run = checkpoint.run(
            batch_parameters={"dataframe": frame}, expectation_parameters=dict(parameters)
        )
        specs_by_name = {s["meta"]["name"]: s for s in specs}
        for validation in run.run_results.values():
            for evr in validation.results:
                name = (evr.expectation_config.meta or {}).get("name")
                if name in specs_by_name:
                    by_name[name] = _convert(specs_by_name[name], evr, frame, table)
    if docs_dir is not None:
        # One build renders every stored result and suite (an UpdateDataDocsAction per
        # checkpoint would rebuild the whole site once per table).
        context.build_data_docs(site_names=[_DOCS_SITE])
    return [by_name[e["meta"]["name"]] for e in suite.expectations if e["meta"]["name"] in by_name]
