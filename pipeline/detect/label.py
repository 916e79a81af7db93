"""Label issues with cleanlab, from the out-of-fold predicted probabilities.

- ``is_label_issue``: :func:`cleanlab.filter.find_label_issues` on the out-of-fold
  ``pred_probs`` of the cross-validated classifier, with ``filter_by`` =
  :data:`FILTER_BY`;
- ``label_score``: :func:`cleanlab.rank.get_label_quality_scores` (in [0, 1], lower = more
  likely mislabelled);
- ``suggested_label`` / ``suggested_label_confidence``: the classifier's most probable
  class and its probability;
- the label-noise transition matrix estimated by confident learning
  (:func:`cleanlab.count.estimate_py_and_noise_matrices_from_probabilities`), returned in
  ``info["noise_matrix"]`` as ``T[i, j] = P(given label j | true label i)`` (rows sum to
  1; the transpose of cleanlab's ``noise_matrix``, the convention of :mod:`models.gan`).

How many: by default (``FILTER_BY = "calibrated_count"``) the number of flagged labels is
cleanlab's own estimate of how many are wrong, :func:`cleanlab.count.num_label_issues`
with ``estimation_method="off_diagonal_calibrated"`` (the confident joint calibrated to
the label counts), and the flagged samples are that many with the lowest normalized
margin (:data:`SELECT_BY`: ``p(given) - max p(other)``, cleanlab's
``"low_normalized_margin"`` ranking, which its batched ``LabelInspector`` pairs with the
same count). ``label_score`` stays the self-confidence ``p(given)``, the ranking to review
by. The two rankings differ where they matter: an odd image (corrupted, foreign) gets a
low probability for every class, so a low self-confidence but a margin near 0, whereas a
flipped label has a strongly negative margin; and under class-pair noise the classifier
learns some probability for the look-alike class, which lowers the self-confidence of
correctly labelled look-alikes. Out-of-fold CNN predictions (seed 0), F1 of the flags
over the clean and relabelled samples, self-confidence -> normalized margin: chosen on
the digits with 5 % and 20 % symmetric noise and with 20 % class-pair noise (a quarter of
8 classes), each with 4 % odd images, and the recoloured MNIST at 32x32 with 10 % noise
and 3 % odd images: 0.882 -> 0.960, 0.975 -> 0.994, 0.893 -> 0.956, 0.978 -> 0.971
(mean 0.932 -> 0.970); then reported on MNIST, which the choice did not see, at 1 %
noise, 5 % and 20 % with 4 % odd images, and 20 % class-pair noise with 4 % odd images:
0.942 -> 0.942, 0.983 -> 0.971, 0.988 -> 0.985, 0.914 -> 0.976. As a ranking for review,
self-confidence is the better one on real errors: it puts all 15 confirmed errors of the
MNIST test set among its 100 lowest, the normalized margin 13 (on another machine, whose
out-of-fold predictions differ slightly, self-confidence put 13 there). Whole detection runs
(``benchmarks/detect.py``, one seed, after the primary reason; F1 over every sample where
odd images are mixed in), self-confidence -> normalized margin: ``mnist-pairs-25-odd-4``
0.913 -> 0.973, ``mnist-labels-20-odd-4`` 0.976 -> 0.973, ``digits-mixed-mild`` 0.939 ->
0.983, ``digits-labels-10`` 0.972 -> 0.975, ``digits-labels-30`` 0.982 -> 0.983,
``mnist-labels-20`` 0.971 -> 0.966, ``colour32-mixed`` 0.969 -> 0.961: a large gain under
class-pair noise, and losses of 0.003 to 0.008 under symmetric noise (their run-to-run
spread was not measured).

The alternatives flag whatever passes a per-sample rule, so their count follows the
classifier's mistakes rather than the noise: ``"predicted_neq_given"`` flags every
disagreement with the classifier and overshoots by 8 to 20 %. ``python -m
benchmarks.detect --label-count digits --fast`` (SVC out-of-fold predictions, the 1,797
digits, seed 0, symmetric and class-pair noise) measured flagged / true counts of 0.94,
1.07, 1.06, 1.05 and 1.09 at 5, 10, 20, 35 and 50 % symmetric noise and 0.99, 1.02, 1.07
at 5, 10, 20 % class-pair noise for ``"calibrated_count"``, against 1.20, 1.13, 1.09,
1.08, 1.09 and 1.20, 1.13, 1.15 for ``"predicted_neq_given"``; F1 over those eight
settings, with the self-confidence selection used then, 0.908 against 0.914 (no clear
difference). At 35 % and more class-pair noise a
flipped pair is no longer identifiable and every rule fails.

With the default CNN's out-of-fold predictions on the MNIST test set (seed 0), the count
follows injected symmetric noise down to 1 %: 108 flagged for 100 wrong labels (F1 0.942),
524 for 500 and 2,084 for 2,000 with 4 % odd images mixed in. On the unmodified test set
it is 0, although 15 of its labels are known to be wrong: those images are ambiguous, and
the classifier does not give another class a confident probability for them (their
self-confidence puts 13 to 15 among the 100 lowest, but none passes the per-class thresholds
of the confident joint). A count rule alone cannot reach 12 of them: in a later run (out-of-fold
accuracy 99.08 %) the classifier's most probable class differed from the given label for
11 of the 15, so flagging every disagreement would flag 92 images with 11 of the 15, and
3 of those 11 are marked odd images (an outlier) first. Averaging each fold model's
probabilities over 5 or 9 one-pixel shifts (test-time augmentation) gave 13 and 14 of the
15 among the 100 lowest self-confidences (13 without), 12 and 13 disagreements, accuracy
99.05 % and 99.02 %, and still a calibrated count of 0: no clear difference, not added.
No count rule measured so far closes that gap without harming
injected noise: flagging every disagreement with the classifier (95 on the clean set, 13 of
the 15) flags 189 at 1 % noise (F1 0.685) and 800 at 5 % with odd images (F1 0.768).
Neither sharpening the probabilities (``p ** (1 / T)``, renormalised) nor a classifier
trained without label smoothing closes it: at ``T = 0.05`` the count on the clean set is
74 with 9 of the 15 among them, but 175 at 1 % noise (F1 0.727) and 2,279 at 20 % with
odd images (F1 0.933); without smoothing the count is 2 and only 11 of the 15 are among
the 100 lowest self-confidences. The classifier gives 3 of the 15 their given label as
its most probable class and the others 0.25 to 0.89, while a clean image gets about 0.93.
Another run (out-of-fold accuracy 99.08 %) gave the most probable *other* class of the 15
a probability of 0.18 to 0.87 (median 0.40), while the confident joint counts a sample
towards another class only from that class's threshold, the mean self-confidence of its
samples: 0.91 to 0.94. Stronger or recalibrated classifiers, measured on the same folds
(seed 0; confirmed errors among the 100 lowest self-confidences, flagged, disagreements
with the given label, out-of-fold accuracy, seconds for the five folds on 2 cores): the
default 13, 0, 92, 99.08 %, 58 s; twice the convolution widths 14, 0, 82, 99.18 %, 147 s;
20 epochs instead of 12: 13, 0, 86, 99.14 %, 109 s; no label smoothing 12, 2 (none of
the 15), 97, 99.03 %, 66 s; the default's probabilities temperature-scaled to their
best log loss against the given labels (``T`` = 0.47, sharper) 12, 4 (1 of the 15). On
injected noise the same scaling changed little (``T`` fitted per dataset: 1 % noise,
flagged 106 -> 101 for 100 wrong, F1 0.932 -> 0.955; 20 % with 4 % odd images 0.975 ->
0.976). None of them makes the confirmed errors confident mistakes: trained on 8,000
images per fold, the classifier stays unsure of them.

Large datasets: from :data:`BATCHED_MIN_SAMPLES` samples on, the flags of
``"calibrated_count"`` come from cleanlab's
:func:`cleanlab.experimental.label_issues_batched.find_label_issues_batched` (cleanlab's
calibrated estimate of the count and the normalized-margin ranking, computed in
mini-batches of :data:`LABEL_BATCH_SIZE` rows). Its result differs from the in-memory
path in two documented ways: its count of wrong labels counts each sample towards its
predicted class, where the in-memory count takes the most probable class above that
class's confident threshold (cleanlab's faster approximation), so the counts can differ
slightly (by 0 and 1 of 1,797 on the digits with 10 % and 30 % label noise and
out-of-fold LDA probabilities, ``tests/test_scale.py``); and a sample whose given label is
the classifier's most probable class is never flagged (cleanlab's ``_reduce_issues``).
Otherwise the ranking is the same. The scores, suggested labels and the transition matrix
are the same on both paths (they are per-sample or ``K x K`` tables). The other
``filter_by`` rules always run in memory.

Classes that have no sample at all are left out of cleanlab's computations (it needs
every class to be present) and get an identity row in the transition matrix.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from assay.pipeline.dataset import Dataset
from assay.pipeline.detect.base import DetectorResult, register

__all__ = [
    "BATCHED_MIN_SAMPLES",
    "FILTER_BY",
    "LABEL_BATCH_SIZE",
    "SELECT_BY",
    "detect_label",
    "label_issues",
]

#: Default rule of :func:`cleanlab.filter.find_label_issues`.
FILTER_BY = "calibrated_count"
#: Which samples ``"calibrated_count"`` flags: the lowest of this
#: :func:`cleanlab.rank.get_label_quality_scores` method (module docstring).
SELECT_BY = "normalized_margin"
#: From this many samples on, ``"calibrated_count"`` flags come from cleanlab's batched
#: :func:`~cleanlab.experimental.label_issues_batched.find_label_issues_batched`.
BATCHED_MIN_SAMPLES = 100_000
#: Rows of ``pred_probs`` per mini-batch of the batched path.
LABEL_BATCH_SIZE = 10_000


def label_issues(
    labels: np.ndarray,
    pred_probs: np.ndarray,
    *,
    filter_by: str = FILTER_BY,
    score_method: str = "self_confidence",
    batched: bool | None = None,
) -> dict[str, np.ndarray]:
    """cleanlab's label-issue outputs for given ``labels`` and out-of-sample ``pred_probs``.

    Parameters
    ----------
    labels : ndarray
        int ``(N,)`` in ``0..K-1``.
    pred_probs : ndarray
        float ``(N, K)``, rows summing to 1, out-of-sample.
    filter_by : str, keyword-only
        Passed to :func:`cleanlab.filter.find_label_issues`, or ``"calibrated_count"``: the
        samples with the lowest normalized margin (:data:`SELECT_BY`), as many as cleanlab's
        calibrated estimate of the number of wrong labels
        (:func:`cleanlab.count.num_label_issues` with
        ``estimation_method="off_diagonal_calibrated"``).
    score_method : str, keyword-only
        Passed to :func:`cleanlab.rank.get_label_quality_scores`.
    batched : bool, optional, keyword-only
        Flag ``"calibrated_count"`` issues with cleanlab's batched implementation (see the
        module docstring). Default: when there are at least :data:`BATCHED_MIN_SAMPLES`
        samples. Ignored for the other ``filter_by`` rules.

    Returns
    -------
    dict
        ``is_issue`` bool ``(N,)``, ``score`` float ``(N,)`` in [0, 1], ``suggested`` int
        ``(N,)``, ``confidence`` float ``(N,)``, ``noise_matrix`` float ``(K, K)``
        (``T[i, j] = P(given j | true i)``), ``prior`` float ``(K,)`` (estimated true-class
        prior).
    """
    from cleanlab.count import estimate_py_and_noise_matrices_from_probabilities, num_label_issues
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels = np.asarray(labels, dtype=np.int64)
    pred_probs = np.asarray(pred_probs, dtype=np.float64)
    n, k = pred_probs.shape
    if labels.shape != (n,):
        raise ValueError(f"`labels` must have shape ({n},). Got {labels.shape} instead.")
    present = np.flatnonzero(np.bincount(labels, minlength=k) > 0)
    remap = np.full(k, -1, dtype=np.int64)
    remap[present] = np.arange(present.size)
    suggested = pred_probs.argmax(axis=1)
    confidence = pred_probs[np.arange(n), suggested]
    noise = np.eye(k)
    prior = np.bincount(labels, minlength=k) / n

    if present.size < 2:
        # One class: there is nothing a label could be confused with.
        return {
            "is_issue": np.zeros(n, dtype=bool),
            "score": np.ones(n),
            "suggested": suggested,
            "confidence": confidence,
            "noise_matrix": noise,
            "prior": prior,
        }
    probs = pred_probs[:, present]
    probs = probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-12)
    y = remap[labels]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        score = get_label_quality_scores(y, probs, method=score_method)
        if batched is None:
            batched = n >= BATCHED_MIN_SAMPLES
        if filter_by == "calibrated_count" and batched:
            is_issue = _batched_issues(y, probs)
        elif filter_by == "calibrated_count":
            is_issue = _lowest(
                get_label_quality_scores(y, probs, method=SELECT_BY),
                num_label_issues(y, probs, estimation_method="off_diagonal_calibrated"),
            )
        else:
            is_issue = find_label_issues(y, probs, filter_by=filter_by, n_jobs=1)
        py, nm, _, _ = estimate_py_and_noise_matrices_from_probabilities(y, probs)
    # cleanlab: nm[i, j] = P(given i | true j), columns sum to 1.
    sub = np.asarray(nm, dtype=np.float64).T
    sub = np.clip(sub, 0.0, None)
    sub /= np.maximum(sub.sum(axis=1, keepdims=True), 1e-12)
    noise[np.ix_(present, present)] = sub
    prior = np.zeros(k)
    prior[present] = np.asarray(py, dtype=np.float64)
    return {
        "is_issue": np.asarray(is_issue, dtype=bool),
        "score": np.clip(np.asarray(score, dtype=np.float64), 0.0, 1.0),
        "suggested": suggested,
        "confidence": confidence,
        "noise_matrix": noise,
        "prior": prior,
    }


def _batched_issues(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Flags ``(N,)`` from cleanlab's batched, calibrated label-issue search (one process)."""
    from cleanlab.experimental.label_issues_batched import find_label_issues_batched

    return np.asarray(
        find_label_issues_batched(
            labels=labels,
            pred_probs=probs,
            batch_size=LABEL_BATCH_SIZE,
            n_jobs=1,  # cleanlab's pool would start one process per core
            verbose=False,
            quality_score_kwargs={"method": SELECT_BY},
            num_issue_kwargs={"estimation_method": "off_diagonal_calibrated"},
            return_mask=True,
        ),
        dtype=bool,
    )


def _lowest(score: np.ndarray, count: int) -> np.ndarray:
    """Flags ``(N,)`` for the ``count`` lowest scores (ties broken by position)."""
    flags = np.zeros(score.size, dtype=bool)
    flags[np.argsort(score, kind="stable")[: max(0, min(int(count), score.size))]] = True
    return flags


@register("label")
def detect_label(
    dataset: Dataset,
    context: Any,
    *,
    filter_by: str = FILTER_BY,
    score_method: str = "self_confidence",
    **_: Any,
) -> DetectorResult:
    """Mislabelled samples by confident learning on out-of-fold ``pred_probs``.

    Parameters
    ----------
    dataset : Dataset
        ``N`` samples, ``K`` classes.
    context : DetectionContext
        Supplies ``pred_probs`` (float ``(N, K)``) and the classifier's summary.
    filter_by, score_method : str, keyword-only
        See :func:`label_issues`.

    Returns
    -------
    DetectorResult
        ``table``: ``sample_id``, ``is_label_issue``, ``label_score``,
        ``suggested_label``, ``suggested_label_confidence``. ``info``: ``noise_matrix``
        (``K x K`` list, ``T[i, j] = P(given j | true i)``), ``prior``, ``classifier``.
    """
    oof = context.oof
    out = label_issues(
        dataset.labels, oof.pred_probs, filter_by=filter_by, score_method=score_method
    )
    table = pd.DataFrame(
        {
            "sample_id": dataset.sample_ids,
            "is_label_issue": out["is_issue"],
            "label_score": out["score"],
            "suggested_label": out["suggested"].astype(np.int64),
            "suggested_label_confidence": out["confidence"].astype(np.float64),
        }
    )
    n_issue = int(out["is_issue"].sum())
    summary = (
        f"label: {n_issue} of {len(dataset)} labels look wrong (confident learning on "
        f"{oof.model} out-of-fold predictions, accuracy {oof.accuracy:.4f})"
    )
    info = {
        "filter_by": filter_by,
        "score_method": score_method,
        "noise_matrix": out["noise_matrix"].tolist(),
        "prior": out["prior"].tolist(),
        "estimated_noise_rate": float(1.0 - np.sum(out["prior"] * np.diag(out["noise_matrix"]))),
        "classifier": oof.summary(),
    }
    return DetectorResult(name="label", table=table, summary=summary, info=info)
