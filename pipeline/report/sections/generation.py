"""The GAN comparison: each arm's sample grid (one row per class, labelled), the curated
metrics with a one-line explanation each, the training losses, and the internals."""

from __future__ import annotations

from typing import Any

from assay.pipeline.report import figures
from assay.pipeline.report.context import ReportInputs
from assay.pipeline.report.format import fmt_number, fmt_pct, fmt_seconds, fmt_value

#: The metrics shown to people: key -> (title, explanation, better, a fraction).
METRICS: dict[str, tuple[str, str, str, bool]] = {
    "label_accuracy": ("Label accuracy (GAN-test)", "Share of generated samples that the "
                       "judge classifies as the class they were asked for.", "higher", True),
    "fid": ("FID (judge features)", "Distance between the feature distributions of generated "
            "and real held-out images.", "lower", False),
    "cas": ("Classifier accuracy (CAS)", "Accuracy on real images of a classifier trained only "
            "on generated samples.", "higher", True),
    "precision": ("Precision (fidelity)", "Share of generated samples that fall inside the "
                  "real images' manifold.", "higher", True),
    "recall": ("Recall (diversity)", "Share of real images that fall inside the generated "
               "samples' manifold.", "higher", True),
    "vae_flag_rate": ("VAE flag rate", "Share of generated samples the detection VAE "
                      "finds odd.", "lower", True),
}
#: How each arm was trained.
ARMS = {
    "dirty": "trained on the data as given",
    "clean": "trained on the cleaned data",
    "noise_aware": "trained on the data as given, with a loss that uses the estimated "
    "label-noise matrix",
}


def _fmt(value: float | None, frac: bool) -> str:
    if value is None:
        return "—"
    return fmt_pct(value) if frac else fmt_number(value)


def build(inputs: ReportInputs, stage: dict[str, Any]) -> dict[str, Any]:
    from assay.pipeline.report.sections.run import absent

    gan = inputs.gan
    if gan is None:
        return {"present": False, "note": absent(stage, "GAN comparison")}
    arms = {a: m.model_dump() for a, m in gan.arms.items()}
    names = list(inputs.samples.names)
    paths = inputs.run.paths
    pictures = []
    for arm in arms:
        uri = None
        if inputs.samples.pictures:
            uri = figures.png_file_uri(paths.gan_samples(arm).read_bytes())
        pictures.append({"arm": arm, "note": ARMS.get(arm, ""), "uri": uri, "rows": names})
    base = "dirty" if "dirty" in arms else next(iter(arms))
    table = []
    for key, (title, about, better, frac) in METRICS.items():
        if all(arms[a].get(key) is None for a in arms):
            continue
        cells = []
        for arm, values in arms.items():
            v, b = values.get(key), arms[base].get(key)
            delta = None
            if arm != base and v is not None and b is not None:
                d = v - b
                delta = f"{100 * d:+.1f} pts" if frac else f"{d:+.3g}"
            cells.append({"value": _fmt(v, frac), "delta": delta})
        ref = gan.reference.get(key)
        table.append({"title": title, "about": about, "hint": f"{better} is better",
                      "cells": cells, "reference": _fmt(ref, frac)})
    internals = [
        ("Training steps", [fmt_number(m["steps"]) for m in arms.values()]),
        ("Training time", [fmt_seconds(m["seconds"]) for m in arms.values()]),
        ("Images per second", [fmt_number(m["images_per_second"]) for m in arms.values()]),
        ("Batch size", [fmt_number(m["batch_size"]) for m in arms.values()]),
        ("Training samples", [fmt_number(m["n_train"]) for m in arms.values()]),
        ("Label noise in the training data", [_fmt(m["train_label_noise"], True)
                                              for m in arms.values()]),
        ("KID (mean ± std over subsets)", [f"{fmt_number(m['kid'])} ± {fmt_number(m['kid_std'])}"
                                           for m in arms.values()]),
        ("Final discriminator loss", [fmt_number(m["final_loss_d"]) for m in arms.values()]),
        ("Final generator loss", [fmt_number(m["final_loss_g"]) for m in arms.values()]),
        ("Device", [m["device"] for m in arms.values()]),
    ]
    judge = [(k.replace("_", " "), fmt_value(v)) for k, v in gan.judge.items()
             if not isinstance(v, dict)]
    loss = None
    if inputs.samples.pictures and paths.gan_loss_curves.is_file():
        loss = figures.png_file_uri(paths.gan_loss_curves.read_bytes())
    return {
        "present": True,
        "arms": list(arms),
        "base": base,
        "table": table,
        "pictures": pictures,
        "loss_curves": loss,
        "internals": internals,
        "judge": judge,
        "skipped": [f"{a}: {why}" for a, why in gan.skipped.items()],
    }
