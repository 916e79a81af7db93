"""The run's verdict: how dirty the data is, what cleaning did, and whether it helped the GAN.

Computed once per run by the report stage from the run folder's artifacts
(:func:`compute_verdict`), stored in ``run.json`` under ``verdict``, rendered by the report
and printed by the CLI.

How the GAN outcome is decided
------------------------------
The deciding metric is the label accuracy of generated samples (:data:`DECIDING_METRIC`,
GAN-test: does a sample asked for class ``y`` look like ``y`` to the judge?), the metric
dirty labels damage first. Each arm's value is the mean over its training seeds, with an
interval from the seeds' spread and a bootstrap over the judged samples
(:func:`assay.pipeline.evaluate.metric_interval`); the difference clean minus dirty gets
its own interval (:func:`assay.pipeline.evaluate.difference_interval`, 95%).

``too_short_to_judge``
    neither arm reached the quality floor: the judge's accuracy on real held-out images
    minus :data:`QUALITY_MARGIN`. Below it the GANs have not learnt the classes yet and
    their differences say nothing about the data.
``helped`` / ``hurt``
    the difference is larger than its interval's half-width, in favour of the cleaned /
    the dirty arm.
``no_clear_difference``
    otherwise; the headline gives the half-width ("± x points").
``not_compared``
    no GAN comparison ran, or it recorded no uncertainty (written by an older version).

FID, CAS, precision and recall are given as evidence with their own intervals, and do not
decide the outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from assay.pipeline.runfolder import RunFolder

#: What the GAN comparison says about cleaning. ``helped`` and ``hurt`` only when the
#: difference is larger than its uncertainty; ``too_short_to_judge`` when the arms have not
#: reached the quality floor; ``not_compared`` when no GAN comparison ran.
Outcome = Literal["helped", "hurt", "no_clear_difference", "too_short_to_judge", "not_compared"]

#: Colour of the verdict panel.
Tone = Literal["good", "warn", "bad", "neutral"]

#: The metric that decides the outcome (higher is better).
DECIDING_METRIC = "label_accuracy"
#: The quality floor is the judge's accuracy on real held-out images minus this margin.
QUALITY_MARGIN = 0.25
#: A dirty share above this colours a verdict without a GAN gain "warn".
DIRTY_WARN = 0.05

#: Evidence metrics: name, words, higher is better, shown as percentage points.
_EVIDENCE = (
    ("label_accuracy", "label accuracy", True, True),
    ("fid", "FID", False, False),
    ("cas", "CAS", True, True),
    ("precision", "precision", True, True),
    ("recall", "recall", True, True),
)


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
    floor: float | None = Field(
        None, description="the quality floor of the deciding metric (judge accuracy - margin)"
    )
    seeds: int | None = Field(None, description="training seeds per arm")
    level: float | None = Field(None, description="confidence level of the intervals")


@dataclass(frozen=True)
class Comparison:
    """The outcome of comparing two arms on one metric (see :func:`compare_arms`)."""

    outcome: Outcome
    base_value: float
    other_value: float
    difference: float
    half_width: float


def compare_arms(
    base: dict[str, Any],
    other: dict[str, Any],
    *,
    floor: float | None,
    higher_is_better: bool = True,
    level: float | None = None,
) -> Comparison:
    """Decide whether ``other`` is better than ``base`` beyond the uncertainty.

    Parameters
    ----------
    base, other : :func:`~assay.pipeline.evaluate.metric_interval` results of the two arms.
    floor : keyword-only; when neither arm's mean reaches it (for a higher-is-better
        metric), the outcome is ``too_short_to_judge``; ``None`` sets no floor.
    higher_is_better : keyword-only; ``False`` for distances such as FID.
    level : keyword-only; confidence level of the difference's interval (default
        :data:`assay.pipeline.evaluate.LEVEL`).
    """
    from assay.pipeline.evaluate import LEVEL, difference_interval

    diff, half = difference_interval(base, other, level=LEVEL if level is None else level)
    gain = diff if higher_is_better else -diff
    best = max(base["mean"], other["mean"]) if higher_is_better else None
    if floor is not None and best is not None and best < floor:
        outcome: Outcome = "too_short_to_judge"
    elif gain > half:
        outcome = "helped"
    elif gain < -half:
        outcome = "hurt"
    else:
        outcome = "no_clear_difference"
    return Comparison(outcome, float(base["mean"]), float(other["mean"]), diff, half)


def compute_verdict(
    run: RunFolder, *, margin: float = QUALITY_MARGIN, level: float | None = None
) -> Verdict:
    """The verdict of a run folder, read through its typed readers.

    Parameters
    ----------
    run : :class:`~assay.pipeline.runfolder.RunFolder`.
    margin : keyword-only; the quality floor is the judge's accuracy on real held-out
        images minus ``margin`` (see the module docstring).
    level : keyword-only; confidence level of the intervals (default
        :data:`assay.pipeline.evaluate.LEVEL`).

    Returns
    -------
    Verdict
        Missing artifacts are said in the points, not raised.
    """
    from assay.pipeline.clean import decision_counts
    from assay.pipeline.evaluate import LEVEL
    from assay.pipeline.runfolder import MissingArtifactError

    level = LEVEL if level is None else level
    points: list[str] = []
    parts: list[str] = []
    dirty_fraction = None
    try:
        summary = run.detection_summary().model_dump()
        dirty_fraction = float(summary["dirty_fraction"])
        parts.append(f"{_pct(dirty_fraction)} of the data looks dirty")
        points.append(
            f"How dirty: {summary.get('n_dirty', '?')} samples are marked dirty "
            f"({_pct(dirty_fraction)})."
        )
    except MissingArtifactError:
        points.append("How dirty: not measured (the detect stage has not run).")
    counts: dict[str, int] = {}
    try:
        counts = decision_counts(run.decisions())
        done = [f"{w} {counts[d]}" for d, w in (("relabel", "relabelled"), ("drop", "dropped"))
                if counts.get(d)]  # fmt: skip
        pending = f"; {counts['review']} wait for review" if counts.get("review") else ""
        points.append(
            "What was done: " + (" and ".join(done) + " samples" if done else "nothing changed")
            + pending + "."
        )
        if done:
            parts.append("cleaning " + " and ".join(done) + " samples")
    except MissingArtifactError:
        points.append("What was done: nothing yet (the clean stage has not run).")

    verdict: dict[str, Any] = {"outcome": "not_compared"}
    try:
        metrics = run.gan_metrics().model_dump()
    except MissingArtifactError:
        metrics = None
        points.append("Did it help: not measured (the gan stage has not run).")
    if metrics is not None:
        verdict = _gan_verdict(metrics, margin=margin, level=level, points=points)
        if verdict.get("part"):
            parts.append(verdict.pop("part"))
    outcome = verdict["outcome"]
    if outcome == "helped":
        tone: Tone = "good"
    elif outcome == "hurt" or (dirty_fraction is not None and dirty_fraction > DIRTY_WARN):
        tone = "warn"
    elif dirty_fraction is not None:
        tone = "good" if outcome != "too_short_to_judge" else "neutral"
    else:
        tone = "neutral"
    headline = "; ".join(parts) + "." if parts else "This run folder holds no results yet."
    return Verdict(
        headline=headline[0].upper() + headline[1:],
        tone=tone,
        dirty_fraction=dirty_fraction,
        decisions=counts,
        points=points,
        level=level,
        **verdict,
    )


def _gan_verdict(
    metrics: dict[str, Any], *, margin: float, level: float, points: list[str]
) -> dict[str, Any]:
    arms = metrics.get("arms", {})
    if "dirty" not in arms or "clean" not in arms:
        points.append("Did it help: the dirty and the cleaned arm were not both trained.")
        return {"outcome": "not_compared"}
    dirty, clean = arms["dirty"], arms["clean"]
    unc_d, unc_c = dirty.get("uncertainty") or {}, clean.get("uncertainty") or {}
    if not unc_d.get(DECIDING_METRIC) or not unc_c.get(DECIDING_METRIC):
        points.append(
            "Did it help: the GAN metrics record no uncertainty (written by an older "
            "version); re-run the gan stage to compare."
        )
        return {"outcome": "not_compared"}
    judge_acc = metrics.get("reference", {}).get("label_accuracy")
    floor = None if judge_acc is None else float(judge_acc) - margin
    c = compare_arms(unc_d[DECIDING_METRIC], unc_c[DECIDING_METRIC], floor=floor, level=level)
    n_seeds = int(unc_d[DECIDING_METRIC]["n_seeds"])
    change = (
        f"label accuracy {_pct(c.base_value)} → {_pct(c.other_value)}, "
        f"{_points(c.difference)} ± {_points(c.half_width, sign=False)} points"
    )
    if c.outcome == "too_short_to_judge":
        part = (
            f"too short to judge the GAN: no arm reached a label accuracy of {_pct(floor)} "
            f"(the judge's {_pct(judge_acc)} on real images minus {margin * 100:.0f} points); "
            "train longer"
        )
    elif c.outcome == "no_clear_difference":
        part = (
            f"no clear difference in the GAN (± {_points(c.half_width, sign=False)} points; "
            f"label accuracy {_pct(c.base_value)} → {_pct(c.other_value)})"
        )
    else:
        part = f"cleaning {c.outcome} the GAN ({change})"
    seeds_text = (
        f"{n_seeds} training seeds per arm" if n_seeds > 1
        else "1 training seed per arm (the interval covers only the judged samples)"
    )  # fmt: skip
    points.append(
        f"Did it help: {part[0].upper() + part[1:]}. {level:.0%} interval of the difference "
        f"from {seeds_text} and a bootstrap over {dirty.get('n_judged', '?')} judged samples."
    )
    for other, words in (("clean", "cleaned"), ("noise_aware", "noise-aware")):
        if other not in arms:
            continue
        line = _evidence_line(dirty, arms[other], level=level)
        if line:
            points.append(f"Evidence, {words} vs dirty: {line}.")
    return {
        "outcome": c.outcome,
        "metric": DECIDING_METRIC,
        "dirty_value": c.base_value,
        "clean_value": c.other_value,
        "difference": c.difference,
        "uncertainty": c.half_width,
        "floor": floor,
        "seeds": n_seeds,
        "part": part,
    }


def _evidence_line(base: dict[str, Any], other: dict[str, Any], *, level: float) -> str:
    out = []
    for name, words, higher, as_points in _EVIDENCE:
        a = (base.get("uncertainty") or {}).get(name)
        b = (other.get("uncertainty") or {}).get(name)
        if not a or not b or a.get("mean") is None or b.get("mean") is None:
            continue  # not measured for this run (e.g. too few images)
        c = compare_arms(a, b, floor=None, higher_is_better=higher, level=level)
        if as_points:
            text = (f"{words} {_pct(c.base_value)} → {_pct(c.other_value)} "
                    f"({_points(c.difference)} ± {_points(c.half_width, sign=False)})")  # fmt: skip
        else:
            text = (f"{words} {c.base_value:.2f} → {c.other_value:.2f} "
                    f"({c.difference:+.2f} ± {c.half_width:.2f})")  # fmt: skip
        verdict = {"helped": "better", "hurt": "worse", "no_clear_difference": "no clear change"}
        out.append(f"{text}, {verdict[c.outcome]}")
    return "; ".join(out)


def _pct(x: float | None) -> str:
    return "?" if x is None else f"{x * 100:.1f}%"


def _points(x: float, *, sign: bool = True) -> str:
    return f"{x * 100:+.1f}" if sign else f"{x * 100:.1f}"
