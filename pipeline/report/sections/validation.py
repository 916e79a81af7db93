"""The validation section: each Great Expectations check, why it exists, what it saw, and
pictures of the samples that failed it."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from assay.pipeline.artifacts import ExpectationResult
from assay.pipeline.report.context import ReportInputs
from assay.pipeline.report.format import fmt_int, fmt_value, plural

#: Thumbnails shown per failed check.
THUMBS = 8


def build(inputs: ReportInputs, stage: dict[str, Any]) -> dict[str, Any]:
    from assay.pipeline.report.sections.run import absent

    report = inputs.validation
    if report is None:
        return {"present": False, "note": absent(stage, "validation result")}
    rows = [_row(r, inputs) for r in report.results]
    failed = [r for r in rows if not r["success"]]
    critical = [r for r in failed if r["severity"] == "critical"]
    warnings = [r for r in failed if r["severity"] == "warning"]
    passed = [r for r in rows if r["success"]]
    if not failed:
        sentence = f"All {len(rows)} checks passed."
    else:
        sentence = f"{len(passed)} of {len(rows)} checks passed."
        if critical:
            sentence += (f" {plural(len(critical), 'critical check')} failed: the data should "
                         "not be used as it is.")
        else:
            sentence += " No critical check failed."
        if warnings:
            sentence += (f" {plural(len(warnings), 'warning')}; "
                         f"{report.n_flagged_samples:,} samples are marked"
                         + (", examples shown below." if inputs.samples.pictures else "."))
    docs = None
    if report.data_docs is not None:
        index = inputs.run.paths.validation / report.data_docs
        if index.is_file():
            docs = "/".join(quote(p) for p in index.relative_to(inputs.run.root).parts)
    return {
        "present": True,
        "sentence": sentence,
        "success_critical": report.success_critical,
        "critical": critical,
        "warnings": warnings,
        "passed": passed,
        "docs_href": docs,
    }


def _row(r: ExpectationResult, inputs: ReportInputs) -> dict[str, Any]:
    thumbs = []
    if not r.success and r.id_column == "sample_id":
        for sid in r.first_unexpected_ids[:THUMBS]:
            uri = inputs.samples.thumb(int(sid))
            if uri:
                thumbs.append({"uri": uri, "sample_id": str(sid)})
    return {
        "expectation": r.expectation,
        "column": r.column,
        "severity": r.severity,
        "success": r.success,
        "why": r.why or _words(r),
        "observed": fmt_value(r.observed_value) if r.observed_value is not None else None,
        "unexpected": fmt_int(r.unexpected_count) if r.unexpected_count is not None else None,
        "thumbs": thumbs,
        "exception": r.exception,
    }


def _words(r: ExpectationResult) -> str:
    """A sentence from the expectation type, for a suite check without a curated ``why``."""
    words = r.type.removeprefix("expect_").replace("_", " ")
    return f"“{r.column}”: {words}." if r.column else words[:1].upper() + words[1:] + "."
