"""VAE detector: images the dataset's own variational autoencoder cannot explain.

A small VAE (:mod:`models.vae`) is trained on the dataset itself, without labels, and
every image is scored by two per-sample quantities, both on a log scale:

- ``log nelbo``: the negative ELBO in nats (reconstruction cross-entropy + KL). It rises
  for anything the model cannot compress: noise, textures, inversions, blur and grey
  washes (Bernoulli pixels charge grey levels even when reconstructed exactly).
- ``log(divergence + kl)``: the same with the image's own pixel entropy removed
  (``recon - entropy``, zero only for a perfect reconstruction). It singles out
  structure the decoder cannot draw (occlusions, shapes, shifted or rotated content)
  without penalising images for merely having many grey pixels.

Each is turned into a robust z-score against the dataset's own median and MAD
(``z = (v - median) / (1.4826 * MAD)``, the modified z-score; a few percent of dirty
samples barely move either), and the sample's deviation is

    d = max(z_nelbo, z_div, -z_nelbo - 3)

The last term is the low side of a two-sided typicality test: a generative model also
gives atypically *high* likelihood to images far simpler than the data (an all-black
image under a model of digits); the margin of 3 keeps the simplest clean images (thin
"1"s) from competing with real corruptions.

Score and flag:

- ``vae_score = 2 ** (-max(d, 0) / k)`` in [0, 1]: 1 for a typical image, exactly 0.5 at
  the threshold, towards 0 for extreme ones (lower = more likely an issue);
- ``is_vae_issue = d > k`` (equivalently ``vae_score < 0.5``), i.e. median + k robust
  standard deviations on the log scale, ``k = 4`` by default (a little above Iglewicz
  and Hoaglin's 3.5 because ``d`` is the largest of two z-scores). No raw-error constant
  is involved, so the same rule works for 8x8 digits and 28x28 MNIST.

Training on dirty data lets the VAE partly learn the dirt. By default the detector
therefore trains in two passes: it scores the data with a first model, leaves out the
``refit_drop`` (5 %) that looks worst, trains on the rest for a third as many epochs
again (continuing the first model, or from scratch with ``refit_mode="scratch"``) and
scores all samples, and takes the reference statistics, with that model. On MNIST and
digits with 5 % injected corruptions this leaves the ranking (AUROC) about where it was
but raises the share of corrupted images past the threshold by 10 to 15 points, because
the clean images are fitted more tightly than the left-out ones. ``refit_drop=0`` trains
once.

Which deviation (``method``)
----------------------------
:func:`variants` computes several candidate deviations from the same model, and
``benchmarks/detect.py --lofo`` (leave one corruption family out, 33 families of
:mod:`pipeline.inject.corruptions`) measures which generalises to families it was not
chosen on:

- ``current``: the rule above, one reference for the whole dataset;
- ``complexity``: the likelihood ratio to a generic lossless compressor,
  ``S(x) = -log2 p(x) - L(x)`` with ``L`` the compressed length in bits
  (:func:`complexity_bits`; Serrà et al. 2020, "Input complexity and out-of-distribution
  detection with likelihood-based generative models"). It corrects the bias of
  likelihoods towards simple images; ``_two_sided`` uses ``|z|``, so images far *more*
  likely than the compressor expects count too;
- ``nelbo_two_sided``: ``|z|`` of the log negative ELBO alone;
- ``current_or_complexity[_two_sided]``: the larger of ``current`` and the complexity z;
- ``context``: the z-score of the context surprise (:mod:`pipeline.detect.pixel_context`)
  alone; ``current_or_complexity_two_sided_or_context``: the larger of it and
  ``current_or_complexity_two_sided`` (see below);
- ``per_class_*``: the same, but every z-score is taken against the median and MAD of the
  sample's own given class. A "1" and an "8" differ several-fold in negative ELBO (ink
  area), so one global reference hides a blurred "1" among ordinary "8"s; each class's
  own spread does not. Labels are only used to group the references; the VAE itself is
  still trained without them, and a few wrong labels barely move a class's median. A
  mislabelled image, though, is compared with a class it does not show: on MNIST with
  20 % symmetric label noise the VAE flagged 77 of the 2,000 mislabelled images (against
  17 of the 8,000 others), which then counted as outliers, not label issues. When the
  out-of-fold classifier has run, a sample's per-class deviation is therefore the
  smaller of those against its given and its predicted class (:func:`variants`): an
  image is atypical only if it is atypical for the class it is labelled as *and* for the
  class it looks like. The predicted class counts only where the classifier gives it at
  least :data:`PREDICTED_MIN_CONFIDENCE` (0.5, more than all other classes together): a
  corrupted or foreign image often gets a weak guess that happens to fit its errors
  better (see below). The references stay those of the given labels (taking them from
  the predicted classes instead flagged 103 instead of 40 of the 8,000 clean images as
  outliers). Measured (``benchmarks/detect.py``, seed 0), given class alone -> the
  smaller of the two: on ``mnist-labels-20`` mislabelled images flagged as outliers 85 ->
  12 (by the VAE 77 -> 3), clean ones 40 -> 36, label F1 0.966 -> 0.983; the combined
  ``outlier_score`` AUROC is unchanged (``mnist-corrupt-5`` 0.9945 -> 0.9943,
  ``colour32-mixed`` 0.9952 -> 0.9953, leave-one-family-out mean 0.929 -> 0.930). The
  cost is in the VAE alone, on images that look like another class: its AUROC on
  ``mnist-corrupt-5`` 0.994 -> 0.988, on ``colour32-mixed`` 0.976 -> 0.947 (blank images
  0.966 -> 0.820, which the image properties catch anyway), leave-one-family-out mean
  0.940 -> 0.935 (rotated digits 0.911 -> 0.797), and ``is_dirty`` recall there 0.640
  -> 0.620 at a clean false-positive rate of 0.75 % instead of 0.85 %. Counting the
  predicted class only from a probability of 0.5 (the same models' outputs, seed 0)
  takes back most of that cost: VAE alone on ``colour32-mixed`` 0.947 -> 0.975 (blank
  0.820 -> 0.966), ``mnist-corrupt-5`` 0.988 -> 0.992, leave-one-family-out mean 0.935
  -> 0.939 (rotated digits 0.797 -> 0.880), while on ``mnist-labels-20`` 10 of the 2,000
  mislabelled images are flagged by the VAE (3 without the floor, 77 against the given
  class alone) and 14 of the 8,000 others (13; 17). The combined ``outlier_score`` moves
  by at most 0.0005 in each. A floor of 0.7 to 0.9 keeps less of the gain on mislabelled
  images (26 to 69 flagged): under label smoothing the classifier's top probability for
  a clean image is about 0.93.

Measured on the first 3,000 MNIST test images, three detection runs each with 5 % of the
images corrupted at severity 3 by 11 families (all 33 families, 13-14 images each, seed
0), mean / lowest per-family AUROC: ``current`` 0.878 / 0.352, ``complexity`` 0.428 / 0.0
(on MNIST with a Bernoulli decoder, noise and blur raise the compressed length about as
much as the negative ELBO, so the ratio alone cancels the very evidence that matters),
``complexity_two_sided`` 0.769 / 0.401, ``per_class_current`` 0.909 / 0.237 and
``per_class_current_or_complexity_two_sided`` 0.940 / 0.624. Per-class references are
the larger gain; the two-sided complexity term is what catches images made *simpler*
than the data (``posterize``: AUROC 0.237 without it, 0.870 with it), which a
likelihood alone ranks as more typical than clean digits. That rule,
``per_class_current_or_complexity_two_sided``, at ``k = 4`` flagged 0.8 % of the clean
images (``per_class_current`` 0.5 %, ``current`` 0.04 %) on the first run.

The default, ``per_class_current_or_complexity_two_sided_or_context``, adds one more
z-score to it, taken like the others per class: the image's context surprise under
:mod:`pipeline.detect.pixel_context`, a pixel model learned from the dataset's own pixels
given the VAE's reconstruction and each pixel's neighbours (:func:`context_terms`). It
sees what the Bernoulli decoder is blind to, wrong grey levels in the right shape. On the
leave-one-family-out benchmark at 10,000 images (33 families, seed 0, the same VAEs) the
mean per-family AUROC went 0.948 -> 0.977 and the lowest 0.584 -> 0.732 (gamma); speckle
noise 0.706 -> 0.990, shot noise 0.829 -> 0.970, shear 0.763 -> 0.958, elastic 0.887 ->
0.998; posterize 0.882 -> 0.834 lost. At ``k = 4`` the VAE now flags 1.68 % of the clean
images on its own (0.79 % without the term); what marks an image dirty is the outlier
evidence of :mod:`pipeline.detect.combine`, whose threshold was chosen again for it. In
the same run the combined ``outlier_score`` went 0.966 -> 0.981 (mean) and 0.771 -> 0.834
(lowest). The term costs two more passes of the decoder over the images (about 2 s on
10,000 MNIST images), and the table (8,192 counts) is saved with the model so that
:func:`score_images` scores new images the same way.

The three z-scores are combined by their largest. Their sum (of the positive parts;
computed from the per-term deviations the benchmark keeps, on the leave-one-family-out
benchmark at 10,000 images, seed 0, with the ``tone_curve`` image property) ranks
better on its own: mean per-family AUROC 0.9767 -> 0.9796, scale 0.863 -> 0.906, line
drop 0.924 -> 0.954, gamma 0.729 -> 0.740, posterize 0.830 -> 0.821; their root sum of
squares 0.9788. In the outlier evidence, with the VAE's ``k`` (4, 5, 6) and the evidence
threshold chosen again on the other families, held-out ``is_dirty`` recall went 0.889
-> 0.892 at best (24 -> 25 families at 0.90 or more, the clean false-positive rate up
to 0.59 % -> 0.65 %): no clear difference in what marks an image dirty, so the largest
stays. Scaling each term by its dataset's 95th or 99th percentile before taking the
largest: 0.9767 and 0.9641.

Latent density was tried as a further signal and not added: on the three detection
runs' datasets above (11 families each; one training pass), the mean distance of an
image's posterior mean to its 10 nearest others in the latent space (raw or with each
dimension robustly scaled) ranked the corrupted images at a mean per-family AUROC of 0.54
to 0.56, against 0.87 for the negative ELBO of the same model. The posterior's width,
read as "wide = atypical", ranked them at 0.26: most corruptions get a *narrower*
posterior (washes such as fog and contrast near 0), and only gamma and posterize (0.58
and 0.65) a wider one. Corruptions that keep the digit's shape also keep its code.

:func:`score_images` scores new images against the training data's references: per
class when it is given their labels and the model was trained with a ``per_class_``
method, else against the whole data's reference (with the same method where it is
``current`` or ``current_or_complexity_two_sided``, else ``current``).

With ``out_dir`` the model is saved as ``vae.pt`` + ``vae.json`` (config, reference
statistics, ``k``), and :func:`score_images` scores new images (a GAN's samples, say)
against the same reference, so their scores mean the same as the dataset's.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from assay.pipeline import atomic
from assay.pipeline.chunks import chunk_slices
from assay.pipeline.detect.base import DetectorResult, register
from assay.pipeline.detect.pixel_context import context_surprise, count_cells, empty_counts

__all__ = [
    "detect_vae",
    "deviation",
    "score_images",
    "variants",
    "complexity_bits",
    "context_terms",
    "LOW_MARGIN",
    "METHOD",
    "PREDICTED_MIN_CONFIDENCE",
    "METHODS",
]

#: How far (robust SDs) below the median log-nelbo an image must lie before its
#: "too simple" side starts to count (see the module docstring).
LOW_MARGIN = 3.0
#: Smallest robust scale allowed on the log scale (a 2 % change in error).
_SCALE_FLOOR = 0.02
#: The deviations :func:`variants` computes (the ``method`` option of :func:`detect_vae`).
METHODS = tuple(
    f"{prefix}{name}"
    for prefix in ("", "per_class_")
    for name in (
        "current",
        "nelbo_two_sided",
        "complexity",
        "complexity_two_sided",
        "current_or_complexity",
        "current_or_complexity_two_sided",
        "current_or_complexity_two_sided_or_context",
        "context",
    )
)
#: The classifier's probability for its class from which a sample is also compared with
#: that class (:func:`predicted_classes`): more than all other classes together.
PREDICTED_MIN_CONFIDENCE = 0.5
#: The default ``method`` (chosen by the leave-one-family-out benchmark, see above).
METHOD = "per_class_current_or_complexity_two_sided_or_context"
#: Methods :func:`score_images` can reproduce for new images.
_SCORABLE = ("current", "current_or_complexity_two_sided",
             "current_or_complexity_two_sided_or_context")  # fmt: skip
MODEL_FILE = "vae.pt"
META_FILE = "vae.json"


def _signals(terms: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``(N,)`` signals from :func:`models.vae.error_terms` output, on a log scale (plus
    ``context``, in nats, where ``terms`` holds the context surprise)."""
    div = np.maximum(terms["recon"] - terms["entropy"], 0.0)
    kl = np.maximum(terms["kl"], 0.0)
    out = {
        "log_nelbo": np.log(np.maximum(terms["nelbo"], 1e-6)),
        "log_div": np.log(div + kl + 1e-3),
    }
    if "context" in terms:
        out["context"] = np.asarray(terms["context"], dtype=np.float64)
    return out


def _reference(signals: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    ref = {}
    for name, v in signals.items():
        med = float(np.median(v))
        scale = max(1.4826 * float(np.median(np.abs(v - med))), _SCALE_FLOOR)
        ref[name] = {"median": med, "scale": scale}
    return ref


def deviation(terms: dict[str, np.ndarray], reference: dict[str, dict[str, float]]) -> np.ndarray:
    """The robust deviation ``d`` of the module docstring, shape ``(N,)``.

    Parameters
    ----------
    terms : dict of str to ndarray, each (N,)
        Output of :func:`models.vae.error_terms`.
    reference : dict
        ``{"log_nelbo": {"median": m, "scale": s}, "log_div": {...}}``.
    """
    sig = _signals(terms)
    z = {
        name: (sig[name] - reference[name]["median"]) / reference[name]["scale"]
        for name in ("log_nelbo", "log_div")
    }
    return np.maximum.reduce([z["log_nelbo"], z["log_div"], -z["log_nelbo"] - LOW_MARGIN])


def _to_score(d: np.ndarray, k: float) -> np.ndarray:
    """Strictly decreasing in ``d`` (so the score ranks every image), 0.5 at ``d = k``."""
    return np.clip(1.0 / (1.0 + np.exp2(np.clip((d - k) / 2.0, -60, 60))), 0.0, 1.0)


def complexity_bits(images: np.ndarray) -> np.ndarray:
    """Each image's length in bits under a lossless compressor, float64 ``(N,)``.

    The shorter of zlib (level 9) on the raw bytes and on the horizontal differences
    (PNG's "Sub" filter), an input-complexity estimate in the sense of Serrà et al. (2020).
    """
    import zlib

    bits = np.empty(len(images), dtype=np.float64)
    for rows in chunk_slices(len(images)):  # block by block: the images may be mapped
        block = np.asarray(images[rows])
        flat = np.ascontiguousarray(block.reshape(len(block), -1))
        diff = np.diff(block.astype(np.int16), axis=2, prepend=0).astype(np.uint8)
        diff = np.ascontiguousarray(diff.reshape(len(block), -1))
        bits[rows] = [
            8.0 * min(len(zlib.compress(a.tobytes(), 9)), len(zlib.compress(b.tobytes(), 9)))
            for a, b in zip(flat, diff, strict=True)
        ]
    return bits


def _robust_z(
    v: np.ndarray, groups: np.ndarray | None = None, against: np.ndarray | None = None
) -> np.ndarray:
    """Modified z-score of ``v`` against its median / MAD (per group when given).

    With ``against``, each sample is scored against the median / MAD of group
    ``against[i]`` (the references are still those of ``groups``); a sample whose
    ``against`` group has no member keeps its own group's reference.
    """
    if groups is None:
        groups = np.zeros(len(v), dtype=np.int64)
    if against is None:
        against = groups
    against = np.where(np.isin(against, groups), against, groups)
    z = np.zeros(len(v))
    for g in np.unique(groups):
        m = groups == g
        med = np.median(v[m])
        scale = max(1.4826 * float(np.median(np.abs(v[m] - med))), _SCALE_FLOOR)
        a = against == g
        z[a] = (v[a] - med) / scale
    return z


def _likelihood_ratio(terms: dict[str, np.ndarray], images: np.ndarray) -> np.ndarray:
    """Serrà's ``S(x) = -log2 p(x) - L(x)``, bits ``(N,)``."""
    return terms["nelbo"] / np.log(2.0) - complexity_bits(images)


def _method_deviation(
    terms: dict[str, np.ndarray], lr: np.ndarray, reference: dict[str, Any], method: str
) -> np.ndarray:
    """The deviation of a :data:`_SCORABLE` method against one reference."""
    d = deviation(terms, reference)
    if "complexity_two_sided" in method:
        zs = (lr - reference["lr"]["median"]) / reference["lr"]["scale"]
        d = np.maximum(d, np.abs(zs) - 1.0)
    if method.endswith("_or_context"):
        ref = reference["context"]
        d = np.maximum(d, (np.asarray(terms["context"]) - ref["median"]) / ref["scale"])
    return d


def variants(
    terms: dict[str, np.ndarray],
    images: np.ndarray,
    labels: np.ndarray | None,
    predicted: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Candidate deviations (higher = more atypical), ``(N,)`` each, for the benchmark to
    choose among (see the module docstring).

    The ``per_class_`` references are those of the given ``labels``. With ``predicted``
    (the classifier's out-of-fold classes), a sample's per-class deviation is the smaller
    of its deviations from its given class and from its predicted class.
    """
    sig = _signals(terms)
    lr = _likelihood_ratio(terms, images)
    out = {}
    for name, groups in (("", None), ("per_class_", labels)):
        checks = [groups] if groups is None or predicted is None else [groups, predicted]
        found = [_deviations(sig, lr, groups, against) for against in checks]
        for key in found[0]:
            out[f"{name}{key}"] = np.minimum.reduce([f[key] for f in found])
    return out


def _deviations(
    sig: dict[str, np.ndarray], lr: np.ndarray, groups: np.ndarray | None,
    against: np.ndarray | None,
) -> dict[str, np.ndarray]:
    """The deviations of :func:`variants` against the references of ``groups``, each sample
    scored against group ``against[i]``."""
    zn, zd, zs = (_robust_z(sig["log_nelbo"], groups, against),
                  _robust_z(sig["log_div"], groups, against),
                  _robust_z(lr, groups, against))  # fmt: skip
    current = np.maximum.reduce([zn, zd, -zn - LOW_MARGIN])
    out = {
        "current": current,
        "nelbo_two_sided": np.abs(zn),
        "complexity": zs,
        "complexity_two_sided": np.abs(zs),
        "current_or_complexity": np.maximum(current, zs),
        "current_or_complexity_two_sided": np.maximum(current, np.abs(zs) - 1.0),
    }
    if "context" in sig:
        zc = _robust_z(sig["context"], groups, against)
        out["context"] = zc
        out["current_or_complexity_two_sided_or_context"] = np.maximum(
            out["current_or_complexity_two_sided"], zc
        )
    return out


def context_terms(
    model: Any, images: np.ndarray, counts: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each image's context surprise under :mod:`pipeline.detect.pixel_context`, float64
    ``(N,)`` (nats), and the table it was computed with.

    ``model`` is a fitted :class:`models.vae.VAE`. Without ``counts`` the table is learned
    from ``images`` first (a pass over them), then every image is scored against it; both
    passes walk the images a block at a time (they may be memory-mapped), reconstructing
    each block again rather than holding every reconstruction.
    """
    # a block of about 4 M pixel values: its float and index temporaries stay near 100 MB
    # whatever the image size (4,096 rows of 64x64x3 images would be over 1 GB)
    rows_per_block = max(1, (1 << 22) // int(np.prod(images.shape[1:])))
    if counts is None:
        counts = empty_counts()
        for rows in chunk_slices(len(images), rows_per_block):
            block = np.asarray(images[rows])
            count_cells(counts, block, model.reconstruct(block))
    surprise = np.empty(len(images), dtype=np.float64)
    for rows in chunk_slices(len(images), rows_per_block):
        block = np.asarray(images[rows])
        surprise[rows] = context_surprise(counts, block, model.reconstruct(block))
    return surprise, counts


def predicted_classes(context: Any) -> np.ndarray | None:
    """The classifier's out-of-fold classes when it has run (``context.has_oof``), ``-1``
    where its most probable class has less than :data:`PREDICTED_MIN_CONFIDENCE`.

    A ``-1`` matches no class, so that sample is compared with its given class alone
    (:func:`_robust_z`).
    """
    if context is not None and getattr(context, "has_oof", False):
        probs = np.asarray(context.pred_probs)
        best = probs.argmax(axis=1)
        sure = probs[np.arange(len(best)), best] >= PREDICTED_MIN_CONFIDENCE
        return np.where(sure, best, -1)
    return None


def _ctx(context: Any, name: str, default: Any) -> Any:
    value = getattr(context, name, default) if context is not None else default
    return default if value is None else value


@register("vae")
def detect_vae(
    dataset,
    context=None,
    *,
    k: float = 4.0,
    refit_drop: float = 0.05,
    refit_epochs: int | None = None,
    refit_mode: str = "continue",
    out_dir: str | Path | None = None,
    config: dict[str, Any] | None = None,
    method: str = METHOD,
    **_: Any,
) -> DetectorResult:
    """Flag images with an atypical VAE error.

    Parameters
    ----------
    dataset : Dataset
        ``N`` images, uint8 ``(N, H, W[, C])``.
    context : object, optional
        Anything with ``seed``, ``device`` and ``progress`` attributes (missing ones
        default to 0, ``"auto"`` and ``False``).
    k : float, keyword-only
        Threshold in robust standard deviations on the log-error scale.
    refit_drop : float in [0, 0.5), keyword-only
        Fraction of worst-scoring samples left out of the second training pass (0: train
        once).
    refit_epochs : int, optional, keyword-only
        Epochs of the second pass (default: a third of the first pass's, at least 2).
    refit_mode : {"continue", "scratch"}, keyword-only
        Continue training the first model on the kept samples (cheap), or train a fresh
        model on them.
    out_dir : path, optional, keyword-only
        Folder to save ``vae.pt`` and ``vae.json`` into, for :func:`score_images`.
    config : dict, optional, keyword-only
        Overrides of :class:`models.vae.VAEConfig` fields (``epochs``, ``latent_dim``…).
    method : str, keyword-only
        Which deviation makes the score, one of :data:`METHODS` (see the module
        docstring); ``"current"`` is the label-free global rule.

    Returns
    -------
    DetectorResult
        ``table`` columns: ``sample_id``, ``is_vae_issue`` (bool), ``vae_score`` (float in
        [0, 1], lower = more likely an issue, < 0.5 iff flagged), ``vae_error`` (negative
        ELBO, nats).
    """
    from assay.models.vae import VAE, VAEConfig

    if not np.isfinite(k) or k <= 0:
        raise ValueError(f"`k` must be a positive number. Got {k!r} instead.")
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}. Got {method!r} instead.")
    if refit_mode not in ("continue", "scratch"):
        raise ValueError(
            f"`refit_mode` must be 'continue' or 'scratch'. Got {refit_mode!r} instead."
        )
    if not 0.0 <= refit_drop < 0.5:
        raise ValueError(f"`refit_drop` must be in [0, 0.5). Got {refit_drop!r} instead.")
    seed = int(_ctx(context, "seed", 0))
    device = _ctx(context, "device", "auto")
    progress = bool(_ctx(context, "progress", False))
    images = dataset.images
    cfg = VAEConfig.for_images(images.shape, **(config or {}))

    t0 = time.perf_counter()
    model = VAE(cfg, seed=seed, device=device, progress=progress).fit(images)
    terms = model.error_terms(images)
    epochs = [len(model.history_.loss)]
    n_dropped = 0
    if refit_drop > 0 and len(images) >= 20:
        d = deviation(terms, _reference(_signals(terms)))
        n_dropped = int(np.floor(refit_drop * len(images)))
        keep = np.sort(np.argsort(d, kind="stable")[: len(images) - n_dropped])
        n_refit = refit_epochs if refit_epochs is not None else max(2, cfg.epochs // 3)
        if refit_mode == "continue":
            model.refit(images[keep], epochs=int(n_refit), seed=seed + 1)
        else:
            cfg2 = VAEConfig.from_dict({**cfg.to_dict(), "epochs": int(n_refit)})
            model = VAE(cfg2, seed=seed + 1, device=device, progress=progress)
            model.fit(images[keep])
        terms = model.error_terms(images)
        epochs.append(len(model.history_.loss))
    context_counts = None
    if method.endswith("context"):
        terms["context"], context_counts = context_terms(model, images)
    seconds = time.perf_counter() - t0

    labels = getattr(dataset, "labels", None)
    sig = {**_signals(terms), "lr": _likelihood_ratio(terms, images)}
    reference = _reference(sig)
    class_ref = {}
    if labels is not None:
        class_ref = {
            str(int(c)): _reference({n: v[labels == c] for n, v in sig.items()})
            for c in np.unique(labels)
        }
    candidates = variants(terms, images, labels, predicted_classes(context))
    d = candidates[method]
    score = _to_score(d, k)
    flag = d > k
    table = pd.DataFrame(
        {
            "sample_id": dataset.sample_ids,
            "is_vae_issue": flag,
            "vae_score": score,
            "vae_error": terms["nelbo"],
        }
    )
    info: dict[str, Any] = {
        "method": method,
        "k": float(k),
        "low_margin": LOW_MARGIN,
        "reference": reference,
        "config": cfg.to_dict(),
        "epochs": epochs,
        "refit_drop": float(refit_drop),
        "n_dropped_for_refit": n_dropped,
        "final_loss": float(model.history_.loss[-1]),
        "seconds": round(seconds, 2),
        "device": model.history_.device,
        "n_flagged": int(flag.sum()),
        "median_error": float(np.median(terms["nelbo"])),
    }
    if out_dir is not None:
        buf = io.BytesIO()
        model.save(buf)
        atomic.write_bytes(Path(out_dir) / MODEL_FILE, buf.getvalue())
        meta = {
            "config": cfg.to_dict(),
            "k": float(k),
            "low_margin": LOW_MARGIN,
            "reference": reference,
            "method": method,
            "class_reference": class_ref,
            "context_counts": None if context_counts is None else context_counts.tolist(),
            "threshold": {"rule": "d > k", "k": float(k), "score_below": 0.5},
            "n_train": int(len(images) - n_dropped),
        }
        atomic.write_json(Path(out_dir) / META_FILE, meta)
        # relative: ``out_dir`` may be a temporary folder renamed into place afterwards,
        # and a cached detection is copied into other run folders
        info["model_path"] = MODEL_FILE
    summary = (
        f"vae: {int(flag.sum())} of {len(dataset)} images flagged (error > median + {k:g} "
        f"robust SD on log scale; {cfg.kind} VAE, {'+'.join(map(str, epochs))} epochs, "
        f"{seconds:.1f}s)"
    )
    arrays = {name: -v for name, v in candidates.items()}
    return DetectorResult(name="vae", table=table, summary=summary, info=info, arrays=arrays,
                          excess=d / k)  # fmt: skip


def score_images(
    model_dir: str | Path,
    images: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    device: str | None = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Score new images with a VAE saved by :func:`detect_vae` (``out_dir``).

    Parameters
    ----------
    model_dir : path
        Folder holding ``vae.pt`` and ``vae.json``.
    images : ndarray of uint8, shape (M, H, W) or (M, H, W, C)
        Same image shape as the data the VAE was trained on.
    labels : ndarray of int, shape (M,), optional, keyword-only
        The images' classes (a conditional GAN's requested labels, say). With them, and a
        model trained with a ``per_class_`` method, each image is judged against its
        class's reference like the training data was; without them against the whole
        training data's.
    device : str, optional, keyword-only
        ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.

    Returns
    -------
    scores : ndarray of float64, shape (M,)
        In [0, 1], lower = less like the training data, against the training data's own
        reference statistics and threshold.
    flags : ndarray of bool, shape (M,)
        ``scores < 0.5`` (past the training run's threshold).
    """
    from assay.models.vae import VAE

    model_dir = Path(model_dir)
    meta_path = model_dir / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found; expected a folder written by detect_vae.")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    for key in ("k", "reference"):
        if key not in meta:
            raise ValueError(f"{meta_path}: no {key!r} field; not written by detect_vae.")
    model = VAE.load(model_dir / MODEL_FILE, device=device)
    terms = model.error_terms(images)
    method = str(meta.get("method", "current")).removeprefix("per_class_")
    reference = meta["reference"]
    if method.endswith("_or_context"):
        counts = meta.get("context_counts")
        if counts is None or "context" not in reference:
            method = method.removesuffix("_or_context")
        else:
            terms["context"], _ = context_terms(model, images, np.asarray(counts, np.int64))
    if method not in _SCORABLE or "lr" not in reference:
        method = "current"
    lr = _likelihood_ratio(terms, images) if method != "current" else np.zeros(len(images))
    d = _method_deviation(terms, lr, reference, method)
    per_class = meta.get("class_reference") or {}
    if labels is not None and str(meta.get("method", "")).startswith("per_class_") and per_class:
        labels = np.asarray(labels)
        if labels.shape != (len(images),):
            raise ValueError(
                f"`labels` must have shape ({len(images)},). Got {labels.shape} instead."
            )
        for c in np.unique(labels):
            if str(int(c)) in per_class:
                m = labels == c
                d[m] = _method_deviation({n: v[m] for n, v in terms.items()}, lr[m],
                                         per_class[str(int(c))], method)  # fmt: skip
    k = float(meta["k"])
    return _to_score(d, k), d > k
