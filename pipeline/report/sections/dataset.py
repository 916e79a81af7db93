"""The dataset section: facts, class counts, a montage per class, injected dirt."""

from __future__ import annotations

from typing import Any

import numpy as np

from assay.pipeline.report import figures
from assay.pipeline.report.context import ReportInputs, Samples
from assay.pipeline.report.format import fmt_int, fmt_value, share

#: Examples per class in the montage, and most classes shown.
PER_CLASS = 12
MAX_CLASSES = 20


def build(inputs: ReportInputs, stage: dict[str, Any]) -> dict[str, Any]:
    from assay.pipeline.report.sections.run import absent

    data = inputs.dataset
    if data is None:
        return {"present": False, "note": absent(stage, "dataset snapshot")}
    n = len(data)
    names = list(data.class_names)
    counts = data.class_counts().tolist()
    facts = [
        ("Source", str(data.meta.get("source", "unknown"))),
        ("Samples", fmt_int(n)),
        ("Image shape", " × ".join(str(s) for s in data.image_shape)),
        ("Classes", fmt_int(len(names))),
    ]
    lo, hi = min(counts), max(counts)
    facts.append(("Samples per class", f"{lo:,} to {hi:,}"
                  + (f" (largest/smallest = {hi / lo:.2f})" if lo else "")))
    span = data.meta.get("original_range")
    if span:
        facts.append(("Original pixel values", f"{fmt_value(span[0])}–{fmt_value(span[1])}"))
    facts.append(("Content hash", data.content_hash()[:16] + "…"))

    injected = []
    if inputs.truth is not None:
        kinds = inputs.truth["injected"].value_counts()
        for kind, count in kinds.items():
            if kind != "clean":
                injected.append({"kind": str(kind), "count": fmt_int(count),
                                 "share": share(int(count), n)})
        dirty = int(kinds.drop("clean", errors="ignore").sum())
        facts.append(("Injected dirt (ground truth)", f"{dirty:,} samples ({share(dirty, n)})"))

    pictures = inputs.samples.pictures
    return {
        "present": True,
        "facts": facts,
        "classes": [{"name": c, "count": fmt_int(k)} for c, k in zip(names, counts, strict=True)],
        "class_plot": figures.class_counts_uri(counts, names) if pictures else None,
        "montage": _montage(inputs.samples) if pictures else None,
        "montage_classes": names[:MAX_CLASSES],
        "injected": injected,
    }


def _montage(samples: Samples) -> str:
    """Up to :data:`PER_CLASS` random examples per class, one row per class."""
    data = samples.dataset
    assert data is not None
    rng = np.random.default_rng(0)
    blank = np.full_like(data.images[0], 255)
    tiles: list[np.ndarray] = []
    k = min(data.n_classes, MAX_CLASSES)
    for c in range(k):
        pos = np.flatnonzero(data.labels == c)
        pick = np.sort(rng.choice(pos, size=min(PER_CLASS, pos.size), replace=False))
        row = [data.images[p] for p in pick]
        tiles.extend(row + [blank] * (PER_CLASS - len(row)))
    h = max(data.image_shape[:2])
    scale = max(1, min(6, 64 // max(1, h)))
    return figures.montage_uri(np.stack(tiles), rows=k, cols=PER_CLASS, scale=scale)
