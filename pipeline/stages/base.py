"""The stages' typed parameters and summaries."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pydantic import BaseModel, Field

from assay.pipeline.limits import MAX_FOLDS, MAX_SEEDS, MAX_STEPS, MIN_FOLDS, MIN_STEPS, check_int

#: The stages, in order.
STAGES: tuple[str, ...] = ("ingest", "validate", "detect", "clean", "generate", "report")

# --------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class IngestParams:
    """What to load. ``inject`` names a preset or an injection config file.

    ``image_size``, ``image_fit``: side of the square images an image folder is scaled to
    (default: the folder's typical size, at most 64 px on the longer side) and how the
    aspect ratio is kept (``"pad"`` or ``"crop"``); see
    :mod:`assay.pipeline.formats.image_folder`.
    """

    data: str = "digits"
    inject: str | None = None
    seed: int = 0
    strict: bool = False
    image_size: int | None = None
    image_fit: str = "pad"


@dataclass(frozen=True)
class ValidateParams:
    """``suite``: a suite JSON (default: the built-in one); ``reference``: a dataset spec."""

    suite: str | None = None
    reference: str | None = None
    data_docs: bool = False


@dataclass(frozen=True)
class DetectParams:
    folds: int = 5
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:  # refused before anything is written
        check_int("folds", self.folds, low=MIN_FOLDS, high=MAX_FOLDS)


@dataclass(frozen=True)
class CleanParams:
    """``decisions``: a person's edited ``review.csv``, applied on top of the policy."""

    policy: str = "relabel"
    decisions: str | None = None


#: What ``steps=None`` means, for help texts.
STEPS_HELP = "auto: 750 steps of 128 images on CPU for images up to 16 px, 1500 otherwise"


@dataclass(frozen=True)
class GenerateParams:
    """``seeds``: training seeds per arm, trained side by side (their spread is part of
    every metric's uncertainty). ``steps``: generator updates per arm; ``None`` leaves the
    budget to the GAN config for the data and the device (:data:`STEPS_HELP`)."""

    steps: int | None = None
    seed: int = 0
    device: str = "auto"
    seeds: int = 3

    def __post_init__(self) -> None:  # refused before anything is written
        if self.steps is not None:
            check_int("steps", self.steps, low=MIN_STEPS, high=MAX_STEPS)
        check_int("seeds", self.seeds, low=1, high=MAX_SEEDS)


def params_dict(params: Any) -> dict[str, Any]:
    """A parameter object as JSON-ready data."""
    return asdict(params)


# --------------------------------------------------------------------------- summaries
class StageSummary(BaseModel):
    """What every stage returns."""

    stage: str
    output_hash: str = Field(description="content hash of what later stages read")
    seconds: float = 0.0


class IngestSummary(StageSummary):
    stage: str = "ingest"
    n: int
    n_classes: int
    image_shape: list[int]
    raw_hash: str = Field(description="content hash of the data as loaded, before injection")
    injected: dict[str, int] = Field(default_factory=dict)


class ValidateSummary(StageSummary):
    stage: str = "validate"
    success_critical: bool
    n_expectations: int
    n_failed: int
    failed: list[dict[str, Any]] = Field(default_factory=list)
    n_flagged_samples: int = 0
    critical_message: str | None = None


class DetectSummary(StageSummary):
    stage: str = "detect"
    n: int
    n_dirty: int
    counts: dict[str, int] = Field(default_factory=dict)


class CleanSummary(StageSummary):
    stage: str = "clean"
    policy: str
    n_in: int
    n_out: int
    decisions: dict[str, int] = Field(default_factory=dict)


class GenerateSummary(StageSummary):
    stage: str = "generate"
    arms: dict[str, dict[str, float | int | str | bool | None]] = Field(default_factory=dict)
