"""The issues section: counts per issue type, a gallery of the worst samples of each type,
the score distributions, and the full list of flagged samples as a CSV download."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from assay.pipeline import artifacts
from assay.pipeline.report import figures
from assay.pipeline.report.context import ReportInputs
from assay.pipeline.report.format import fmt_int, fmt_pct, share, short

#: Titles and one-line explanations of the issue types detection writes.
KNOWN_TYPES: dict[str, tuple[str, str]] = {
    "label": ("Label issues", "A classifier that never saw the sample in training (out-of-fold) "
              "is confident that its given label is wrong."),
    "outlier": ("Outliers", "Images that do not belong here. The feature-space distance, "
                "the VAE's reconstruction error and the image checks each say how far past "
                "its own threshold an image lies; an image is flagged when that evidence "
                "adds up past the threshold, and ranked by it."),
    "knn_outlier": ("Outliers in feature space (Datalab)", "Far from their nearest neighbours "
                    "in the classifier's learned feature space (cleanlab Datalab)."),
    "vae": ("Poorly reconstructed images (VAE)", "A variational autoencoder trained on this "
            "data reconstructs these images badly: they do not look like the rest."),
    "image_property": ("Image property issues",
                       "Blank or constant, too dark or too light, faint (low contrast), low "
                       "information, noise, blur, grey tones found nowhere else in the "
                       "data, or content placed or sized unlike the rest of its class."),
    "exact_duplicate": ("Exact duplicates", "Pixel-for-pixel copies of an earlier sample."),
    "near_duplicate": ("Near duplicates", "Almost identical to an earlier sample."),
    "class_imbalance": ("Class imbalance", "Samples of a class far rarer than the others "
                        "(a dataset-level finding: not counted as dirt)."),
    "non_iid": ("Non-iid ordering (Datalab)", "The dataset's order is not random (a "
                "dataset-level finding: not counted as dirt)."),
}


@dataclass(frozen=True)
class IssueType:
    key: str
    flag: str
    score: str | None

    @property
    def title(self) -> str:
        return KNOWN_TYPES.get(self.key, (self.key.replace("_", " ").capitalize(), ""))[0]

    @property
    def about(self) -> str:
        return KNOWN_TYPES.get(self.key, ("", ""))[1]


def issue_types(issues: pd.DataFrame) -> list[IssueType]:
    """The issue types of an ``issues.parquet`` table, in :data:`KNOWN_TYPES` order."""
    found = {k: IssueType(k, f, s) for k, (f, s) in artifacts.ISSUE_TYPES.items()}
    for col in issues.columns:
        m = artifacts.ISSUE_FLAG_PATTERN.fullmatch(col)
        if m and m.group("name") not in found:
            name = m.group("name")
            score = artifacts.ISSUE_SCORE.format(name=name)
            found[name] = IssueType(name, col, score if score in issues.columns else None)
    order = [k for k in KNOWN_TYPES if k in found] + [k for k in found if k not in KNOWN_TYPES]
    return [found[k] for k in order]


def flagged_table(inputs: ReportInputs) -> pd.DataFrame:
    """Every flagged sample (any issue type) with its labels, issue types, scores and
    reasons: the full list behind the galleries."""
    issues = inputs.issues
    assert issues is not None
    types = issue_types(issues)
    any_flag = np.logical_or.reduce([issues[t.flag].to_numpy(dtype=bool) for t in types])
    sub = issues.loc[any_flag]
    names = inputs.samples
    out = pd.DataFrame({
        "sample_id": sub["sample_id"].to_numpy(),
        "given_label": [names.label(v) for v in sub["given_label"]],
        "suggested_label": [names.label(v) for v in sub["suggested_label"]],
        "suggested_label_confidence": sub["suggested_label_confidence"].round(4).to_numpy(),
        "is_dirty": sub["is_dirty"].to_numpy(),
        "issue_types": [
            ", ".join(t.key for t in types if row[t.flag])
            for _, row in sub[[t.flag for t in types]].iterrows()
        ],
    })
    for t in types:
        if t.score is not None:
            out[t.score] = sub[t.score].round(4).to_numpy()
    out["reasons"] = sub["reasons"].to_numpy()
    return out


def build(inputs: ReportInputs, stage: dict[str, Any], *, gallery_size: int,
          flagged_csv: str) -> dict[str, Any]:
    from assay.pipeline.report.sections.run import absent

    issues, summary = inputs.issues, inputs.summary
    if issues is None or summary is None:
        return {"present": False, "note": absent(stage, "detection result")}
    n = len(issues)
    types = issue_types(issues)
    flags = {t.key: issues[t.flag].to_numpy(dtype=bool) for t in types}
    rows, galleries, scores = [], [], {}
    for t in types:
        count = int(flags[t.key].sum())
        level = t.key in summary.dataset_level
        # a dataset-level finding is read with its detector's own words (the non-iid test
        # says when class order alone explains it)
        note = summary.detectors[t.key].summary if level and t.key in summary.detectors else None
        rows.append({"title": t.title, "count": fmt_int(count), "share": share(count, n),
                     "anchor": f"gallery-{t.key}", "dataset_level": level, "note": note})
        if t.score is not None:
            scores[t.title] = (issues[t.score].to_numpy(dtype=float), flags[t.key])
        galleries.append(_gallery(inputs, t, types, flags, gallery_size))
    pictures = inputs.samples.pictures
    problems = [f"The {k} detector failed: {short(v)}" for k, v in summary.errors.items()]
    return {
        "present": True,
        "dirty_text": f"{summary.n_dirty:,} of {n:,} samples ({fmt_pct(summary.dirty_fraction)})",
        "oof_accuracy": fmt_pct(summary.oof_accuracy) if summary.oof_accuracy is not None
        else None,
        "rows": rows,
        "galleries": galleries,
        "histograms": figures.score_histograms_uri(scores) if pictures and scores else None,
        "skipped": [f"{k}: {short(v)}" for k, v in summary.skipped.items()],
        "problems": problems,
        "flagged_csv": flagged_csv,
        "issues_csv": "/".join(inputs.run.paths.issues_csv.relative_to(inputs.run.root).parts),
        "n_flagged": fmt_int(int(np.logical_or.reduce(list(flags.values())).sum())),
    }


def _gallery(
    inputs: ReportInputs,
    t: IssueType,
    types: list[IssueType],
    flags: dict[str, np.ndarray],
    gallery_size: int,
) -> dict[str, Any]:
    issues = inputs.issues
    assert issues is not None
    mask = flags[t.key]
    sub = issues.loc[mask]
    order = [t.score, "sample_id"] if t.score is not None else ["sample_id"]
    sub = sub.sort_values(order, kind="stable")
    pos = {int(s): i for i, s in enumerate(issues["sample_id"])}
    samples = inputs.samples
    cards = []
    for row in sub.head(gallery_size).itertuples(index=False):
        sid = int(row.sample_id)
        also = [o.title for o in types if o.key != t.key and flags[o.key][pos[sid]]]
        card = {
            "sample_id": str(sid),
            "thumb": samples.thumb(sid),
            "given": samples.label(row.given_label),
            "suggested": None,
            "confidence": None,
            "score": f"{getattr(row, t.score):.3f}" if t.score is not None else None,
            "reasons": short(row.reasons, 140) or None,
            "truth": _truth_words(inputs, sid),
            "also": ", ".join(also) if also else None,
            "pair": None,
        }
        # a label is suggested only where a wrong label is the reason: an odd image
        # gets no new label (the classifier's guess for it means nothing)
        if row.primary_reason == "label" and row.suggested_label != row.given_label:
            card["suggested"] = samples.label(row.suggested_label)
            card["confidence"] = fmt_pct(row.suggested_label_confidence)
        if t.key.endswith("duplicate") and row.duplicate_of >= 0:
            card["pair"] = {"sample_id": str(row.duplicate_of),
                            "thumb": samples.thumb(row.duplicate_of)}
        cards.append(card)
    count = int(mask.sum())
    return {
        "key": t.key,
        "anchor": f"gallery-{t.key}",
        "title": t.title,
        "about": t.about,
        "count": fmt_int(count),
        "cards": cards,
        "more": fmt_int(count - len(cards)) if count > len(cards) else None,
        "ordered_by": f"{t.score}, lowest (most suspicious) first" if t.score else "sample id",
    }


def _truth_words(inputs: ReportInputs, sid: int) -> str | None:
    """What the injected ground truth says about a sample, in a few words."""
    truth = inputs.truth
    if truth is None:
        return None
    row = truth.iloc[inputs.samples.row(sid)]
    kind = str(row["injected"])
    if row["is_label_noise"]:
        return f"truth: really “{inputs.samples.label(row['true_label'])}”"
    return "truth: clean" if kind == "clean" else f"truth: {kind.replace('_', ' ')}"
