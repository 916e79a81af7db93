"""The run's verdict: how dirty the data is, what cleaning did, and whether it helped the GAN.

Computed once per run by the report stage from the run folder's artifacts, stored in
``run.json`` under ``verdict``, rendered by the report and printed by the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from assay.pipeline.runfolder import RunFolder

#: What the GAN comparison says about cleaning. ``helped`` and ``hurt`` only when the
#: difference is larger than its uncertainty; ``too_short_to_judge`` when the arms have not
#: reached the quality floor; ``not_compared`` when no GAN comparison ran.
Outcome = Literal["helped", "hurt", "no_clear_difference", "too_short_to_judge", "not_compared"]

#: Colour of the verdict panel.
Tone = Literal["good", "warn", "bad", "neutral"]


class Verdict(BaseModel):
    """The verdict of one run (the ``verdict`` entry of ``run.json``)."""

    model_config = ConfigDict(extra="forbid")

    headline: str = Field(description="one sentence: dirt, decisions, effect on the GAN")
    tone: Tone = "neutral"
    outcome: Outcome = "not_compared"
    dirty_fraction: float | None = Field(None, description="share of samples marked dirty")
    decisions: dict[str, int] = Field(default_factory=dict, description="decision -> count")
    metric: str | None = Field(None, description="the GAN metric that decided the outcome")
    dirty_value: float | None = Field(None, description="that metric on the dirty arm")
    clean_value: float | None = Field(None, description="that metric on the clean arm")
    difference: float | None = Field(None, description="clean minus dirty")
    uncertainty: float | None = Field(
        None, description="half-width of the difference's interval (seeds and bootstrap)"
    )
    points: list[str] = Field(default_factory=list, description="the evidence, one sentence each")


def compute_verdict(run: RunFolder) -> Verdict:
    """The verdict of ``run`` from its artifacts."""
    from assay.pipeline.report.render import compute_verdict as report_verdict

    found = report_verdict(run.root)
    helped = found.get("helped")
    outcome: Outcome = "not_compared" if helped is None else ("helped" if helped else "hurt")
    return Verdict(
        headline=found["headline"],
        tone=found["tone"],
        outcome=outcome,
        dirty_fraction=found.get("dirty_fraction"),
        points=list(found.get("points", [])),
    )
