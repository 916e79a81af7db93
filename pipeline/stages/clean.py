"""The clean stage: detections -> decisions and a cleaned dataset -> ``cleaned/``."""

from __future__ import annotations

import time

from assay.pipeline.atomic import atomic_dir
from assay.pipeline.hashing import tree_hash
from assay.pipeline.runfolder import RunFolder
from assay.pipeline.stages.base import CleanParams, CleanSummary


def clean(run: RunFolder, params: CleanParams) -> CleanSummary:
    """Turn the detections into decisions -> ``cleaned/`` (dataset + decisions).

    The validation flags go into the cleaned manifest when the validate stage ran. With
    ``params.decisions`` a person's edited ``review.csv`` is applied on top of the
    policy's decisions (checked first: a bad row is refused, naming the file and row).
    """
    from assay.pipeline.clean import apply_review, write_cleaned
    from assay.pipeline.clean import clean as decide

    start = time.perf_counter()
    dataset = run.dataset()
    issues = run.issues()
    flags = run.sample_flags() if run.paths.sample_flags.exists() else None
    cleaned, decisions = decide(dataset, issues, policy=params.policy, sample_flags=flags)
    if params.decisions:  # a person's decisions, on top of the policy's
        cleaned, decisions = apply_review(dataset, decisions, params.decisions, issues=issues,
                                          sample_flags=flags,
                                          cleaning=cleaned.meta.get("cleaning"))  # fmt: skip
    with atomic_dir(run.paths.cleaned) as tmp:
        write_cleaned(cleaned, decisions, tmp, review_file=params.decisions)
    counts = decisions["decision"].astype(str).value_counts()
    return CleanSummary(
        output_hash=tree_hash(run.paths.cleaned),
        policy=params.policy,
        n_in=len(dataset),
        n_out=len(cleaned),
        decisions={str(k): int(v) for k, v in counts.items()},
        seconds=round(time.perf_counter() - start, 3),
    )
