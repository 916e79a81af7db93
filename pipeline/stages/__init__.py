"""One function per stage: a run folder and typed parameters in, a typed summary out.

These are the only entry points the Prefect tasks (``assay.flows.tasks``) and the CLI's
stage commands call, so ``assay validate|detect|clean|gan|report --run-dir R`` one by one
give what ``assay run --run-dir R`` gives. Each stage reads its inputs through the
:class:`~assay.pipeline.runfolder.RunFolder` readers (a missing input names the stage to
run first) and writes its folder atomically: complete or not at all.

Every summary carries ``output_hash``, the content hash of what later stages read; the
flows key the caches of the later stages on it.
"""

from assay.pipeline.stages.base import (
    STAGES,
    CleanParams,
    CleanSummary,
    DetectParams,
    DetectSummary,
    GenerateParams,
    GenerateSummary,
    IngestParams,
    IngestSummary,
    StageSummary,
    ValidateParams,
    ValidateSummary,
    params_dict,
)
from assay.pipeline.stages.clean import clean
from assay.pipeline.stages.detect import detect, fit_fold
from assay.pipeline.stages.generate import finish_generate, generate, prepare_generate, train_arm
from assay.pipeline.stages.ingest import ingest, load_input
from assay.pipeline.stages.report import ReportSummary, report
from assay.pipeline.stages.validate import validate

__all__ = [
    "STAGES", "CleanParams", "CleanSummary", "DetectParams", "DetectSummary",
    "GenerateParams", "GenerateSummary", "IngestParams", "IngestSummary", "ReportSummary",
    "StageSummary", "ValidateParams", "ValidateSummary", "clean", "detect", "finish_generate",
    "fit_fold", "generate", "ingest", "load_input", "params_dict", "prepare_generate", "report",
    "train_arm", "validate",
]  # fmt: skip
