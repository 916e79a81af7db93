"""The run's verdict: how dirty the data is, what cleaning did, and whether it helped the GAN.

Computed once per run by the report stage from the run folder's artifacts, stored in
``run.json`` under ``verdict``, rendered by the report and printed by the CLI.
"""

from __future__ import annotations

from collections.abc import Mapping
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


# ------------------------------------------------------------------------- compute_verdict
#: GAN metrics that vote on the outcome: key -> (words, lower is better, a fraction).
_VOTES = {"fid": ("FID", True, False), "label_accuracy": ("label accuracy", False, True),
          "cas": ("CAS accuracy", False, True)}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _metric(key: str, value: float) -> str:
    return _pct(value) if _VOTES[key][2] else f"{value:.3g}"


def _tolerance(key: str, base: float) -> float:
    """Changes smaller than this count as no change."""
    return max(0.5, 0.02 * abs(base)) if key == "fid" else 0.01


def _compare_arms(base: Mapping[str, float], arm: Mapping[str, float]) -> tuple[int, str]:
    """(+1 better, -1 worse, 0 no clear change) and the evidence, agreeing metrics first."""
    score = 0
    votes: list[tuple[int, str]] = []
    for key, (words, lower, _) in _VOTES.items():
        b, a = float(base[key]), float(arm[key])
        d = a - b
        vote = 0
        if abs(d) > _tolerance(key, b):
            vote = 1 if ((d < 0) if lower else (d > 0)) else -1
        score += vote
        votes.append((vote, f"{words} {_metric(key, b)} → {_metric(key, a)}"))
    outcome = (score > 0) - (score < 0)
    votes.sort(key=lambda v: v[0] != outcome)  # stable: agreeing metrics first
    return outcome, ", ".join(words for _, words in votes)


def compute_verdict(run: RunFolder) -> Verdict:
    """The verdict of a run from its artifacts: validation, detection, cleaning, GAN.

    Each artifact a stage has not written yet is said to be missing in the points.

    Parameters
    ----------
    run : RunFolder

    Returns
    -------
    Verdict
    """
    from assay.pipeline.runfolder import MissingArtifactError

    points: list[str] = []
    head: list[str] = []
    tone: Tone = "neutral"
    dirty_fraction: float | None = None
    decisions: dict[str, int] = {}
    outcome: Outcome = "not_compared"
    fields: dict[str, object] = {}

    try:
        validation = run.validation()
        failed = [r for r in validation.results if not r.success]
        sentence = (f"{validation.n_expectations - len(failed)} of "
                    f"{validation.n_expectations} checks passed.")
        if not validation.success_critical:
            points.append("Validation: a critical check failed — " + sentence)
            head.append("a critical validation check failed")
            tone = "bad"
        else:
            points.append("Validation: " + sentence)
    except MissingArtifactError:
        points.append("Validation: not run.")

    try:
        summary = run.detection_summary()
        dirty_fraction = summary.dirty_fraction
        top = sorted(((c, k) for k, c in summary.counts.items() if c and k != "dirty"),
                     reverse=True)[:4]
        detail = ", ".join(f"{c:,} {k.replace('_', ' ')}" for c, k in top)
        points.append(f"How dirty: {summary.n_dirty:,} of {summary.n:,} samples "
                      f"({_pct(dirty_fraction)}) look dirty"
                      + (f" ({detail}; a sample can have several)." if detail else "."))
        head.append(f"{_pct(dirty_fraction)} of the data looks dirty")
    except MissingArtifactError:
        points.append("How dirty: not measured — the detect stage has not run.")

    try:
        table = run.decisions()
        counts = table["decision"].astype(str).value_counts()
        decisions = {str(k): int(v) for k, v in counts.items()}
        done = [f"{w} {decisions[d]:,}" for d, w in (("relabel", "relabelled"),
                                                     ("drop", "dropped")) if decisions.get(d)]
        points.append("What was done: " + ", ".join(
            f"{v:,} {k}" for k, v in decisions.items()) + ".")
        if done:
            head.append("cleaning " + " and ".join(done) + " samples")
    except MissingArtifactError:
        points.append("What was done: nothing yet — the clean stage has not run.")

    try:
        gan = run.gan_metrics()
        arms = {a: m.model_dump() for a, m in gan.arms.items()}
        if "dirty" in arms and "clean" in arms:
            vote, words = _compare_arms(arms["dirty"], arms["clean"])
            verb = {1: "helped", -1: "hurt", 0: "made no clear difference"}[vote]
            outcome = {1: "helped", -1: "hurt", 0: "no_clear_difference"}[vote]
            points.append(f"Did it help: training on the cleaned data instead of the dirty "
                          f"data {verb} ({words}).")
            head.append(f"cleaning {verb} the GAN ({words.split(', ')[0]})")
            fields = {"metric": "label_accuracy",
                      "dirty_value": arms["dirty"]["label_accuracy"],
                      "clean_value": arms["clean"]["label_accuracy"],
                      "difference": arms["clean"]["label_accuracy"]
                      - arms["dirty"]["label_accuracy"]}
        if "dirty" in arms and "noise_aware" in arms:
            vote, words = _compare_arms(arms["dirty"], arms["noise_aware"])
            verb = {1: "helped", -1: "hurt", 0: "made no clear difference"}[vote]
            points.append("Did it help: the noise-aware loss on the dirty data "
                          f"{verb} ({words}).")
    except MissingArtifactError:
        points.append("Did it help: not measured — the gan stage has not run.")

    record = run.read_run_json()
    failed_stages = [s for s, r in record.stages.items() if r.state in ("failed", "critical")]
    if failed_stages:
        tone = "bad"
        head.insert(0, f"the {' and '.join(failed_stages)} stage"
                       f"{'s' if len(failed_stages) > 1 else ''} failed")
    if tone != "bad":
        if outcome == "helped":
            tone = "good"
        elif outcome == "hurt" or (dirty_fraction is not None and dirty_fraction > 0.05):
            tone = "warn"
        elif dirty_fraction is not None:
            tone = "good"
    if head:
        headline = "; ".join(head) + "."
        headline = headline[0].upper() + headline[1:]
    else:
        headline = "No detection result yet."
    return Verdict(headline=headline, tone=tone, outcome=outcome,
                   dirty_fraction=dirty_fraction, decisions=decisions, points=points,
                   **fields)
