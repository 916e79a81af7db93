"""The validate stage: the expectation suites over the snapshot -> ``validation/``."""

from __future__ import annotations

import time

from assay.pipeline import io
from assay.pipeline.atomic import atomic_dir
from assay.pipeline.hashing import file_hash
from assay.pipeline.runfolder import RunFolder
from assay.pipeline.stages.base import ValidateParams, ValidateSummary


def validate(run: RunFolder, params: ValidateParams) -> ValidateSummary:
    """Run the expectation suites on the snapshot -> ``validation/``.

    A failed critical expectation is reported in the summary (``success_critical`` false
    and ``critical_message``); the caller decides to stop.
    """
    from assay.pipeline.validate import critical_failures_message
    from assay.pipeline.validate import validate as run_suites

    start = time.perf_counter()
    dataset = run.dataset()
    reference = io.load(params.reference) if params.reference else None
    with atomic_dir(run.paths.validation) as tmp:
        result = run_suites(
            dataset,
            suite_path=params.suite,
            reference=reference,
            out_dir=tmp,
            data_docs=params.data_docs,
        )
    failed = [r for r in result.results if not r.get("success", False)]
    flags = result.sample_flags
    flag_cols = [c for c in flags.columns if c != "sample_id"]
    n_flagged = int(flags[flag_cols].any(axis=1).sum()) if flag_cols and len(flags) else 0
    return ValidateSummary(
        # what the clean stage reads from this stage is the flags table alone (not the
        # Data Docs, which change with their own option)
        output_hash=file_hash(run.paths.sample_flags),
        success_critical=bool(result.success_critical),
        n_expectations=len(result.results),
        n_failed=len(failed),
        failed=[
            {
                "expectation": str(r.get("expectation", "")),
                "severity": str(r.get("severity", "")),
                "column": r.get("column"),
            }
            for r in failed[:50]
        ],
        n_flagged_samples=n_flagged,
        critical_message=None if result.success_critical else critical_failures_message(result),
        seconds=round(time.perf_counter() - start, 3),
    )
