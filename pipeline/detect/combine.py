"""Merge every detector's result into one table, one row per sample: ``issues.parquet``.

Columns
-------
One column per fact; every detector's own flag is folded into the one flag of its kind.

sample_id                   int64   the dataset's ids, in dataset order
given_label                 int64   the label as given
suggested_label             int64   the classifier's most probable class (given label
                                    when the classifier did not run)
suggested_label_confidence  float   its out-of-fold probability
label_score                 float   cleanlab label quality (lower = more likely wrong)
is_label_issue              bool    the label looks wrong *and* the image itself is fine:
                                    never set for an image with an image reason (below)
outlier_score               float   the project's single "does not belong here" score,
                                    ``2 ** (-outlier_evidence / 2.25)`` (see "Outlier score")
is_outlier                  bool    out of distribution or corrupted, by the sources'
                                    evidence together (see "Outlier flag")
outlier_sources             str     which of them, ``","``-joined (``""`` if none)
outlier_evidence            float   the sources' evidence added up (see "Outlier flag")
knn_outlier_score           float   Datalab's kNN score in the classifier's feature space
vae_score                   float   the VAE detector's score
vae_error                   float   the VAE's negative ELBO, nats
image_property_score        float   the image-property detector's score
image_property_kind         str     the failed property (``""`` if none)
is_exact_duplicate          bool    a byte-identical copy of an earlier sample
is_near_duplicate           bool    nearly identical to an earlier sample (not exact)
duplicate_of                int64   ``sample_id`` of the first member of the sample's
                                    duplicate group (exact and near merged); -1 if none
is_non_iid_issue, non_iid_score     dataset-level: Datalab's non-iid test
is_class_imbalance_issue, class_imbalance_score
                                    dataset-level: a sample of a rare class
is_dirty                    bool    any per-sample issue above
primary_reason              str     the one reason the sample is dirty (:data:`REASONS`,
                                    ``""`` if clean)
reasons                     str     every issue in plain words, ``"; "``-joined

Further registered detectors add their ``is_<name>_issue`` / ``<name>_score`` columns.

Primary reason
--------------
A dirty sample gets exactly one ``primary_reason``, the first that applies of
``image_property`` (blank, dark, noisy... : the file itself is broken), ``outlier`` (the
image is out of distribution or corrupted), ``exact_duplicate``, ``near_duplicate``,
``label`` and ``other`` (a further registered detector's flag). An image with an image
reason is never reported as a label issue: the classifier's prediction for a corrupted
or foreign image says nothing about its true class, and relabelling it would put a
wrong sample back into the data under a made-up label. ``label_score`` and
``suggested_label`` stay what the classifier said (facts), but ``is_label_issue`` is
cleared and ``reasons`` does not suggest a label. A duplicate keeps its label flag: a
copy can carry a wrong label, and its copy status is the primary reason.

Non-iid ordering and class imbalance describe the dataset rather than a sample (a sample
of a rare class is not dirty), so they are kept as columns and counted in the summary but
do not make a sample dirty.

A detector that did not run (error, unavailable) leaves its flag False and its score 1
("no evidence"); the summary says which detectors did not run and why.

Outlier flag
------------
Each outlier source says how far a sample lies past its own threshold (its ``excess``:
1 at the source's flag threshold, 0 for a typical sample): the VAE's robust deviation over
its ``k``, the worst image property's over its ``k``, Datalab's mean kNN distance past its
IQR fence. ``outlier_evidence`` is the sum of their positive parts, and a sample is an
outlier when it exceeds :data:`OUTLIER_EVIDENCE` (2.25), or when an image property fails
on its own (blank, odd size, a stray greyscale file, content far from where its class
has it: facts about the file; on their own they flagged 0.09 % of the benchmark's clean
images). A sample half-way past two
thresholds is flagged; one just past the VAE's alone is not, since the VAE's own flag is
what marked clean images dirty (0.77 % of them, against 0.01 to 0.04 % for the others).
``outlier_sources`` lists the sources at least half-way to their threshold
(:data:`SOURCE_SHARE`). When one of the three sources did not run, the flag is the union
of the others' own flags.

The rule was chosen on the leave-one-family-out benchmark (``benchmarks/detect.py
--lofo --n 3000``, 33 corruption families, seed 0): for every held-out family, among the
sum, the L1.5, L2, L3 and max norms of the excesses and thresholds 0.9 to 2.0, the one
with the best mean recall on the other families within a clean false-positive rate of
0.8 % on half of the clean images; all 33 choices were the sum at 1.65. Held out, its
mean recall was 0.710 (the union of the sources' own flags: 0.664) at a clean
false-positive rate of 0.54 % on the other half (0.77 %). Re-run with the rule in place
(the same scores), ``is_dirty`` recall over the 33 families went 0.664 -> 0.713, families
at 0.90 or more 16 -> 21, and the clean false-positive rate 0.81 % -> 0.70 %; elastic,
scale, shot and speckle noise stay at 0 (their scores barely separate them).

The threshold was chosen again when the placement properties (``off_centre``,
``odd_extent`` in :mod:`pipeline.detect.image_properties`) were added, by the benchmark's
own chooser (``choose_evidence_threshold``: the sum, thresholds 0.9 to 3.0, the best mean
recall on the other families within 0.8 % of the clean images at even positions): 32 of
the 33 choices were 1.75 (one 1.80). Held out, mean recall 0.739 at a clean
false-positive rate of at most 0.54 % on the other clean images. With 1.75 in place, over
the 33 families recall 0.713 -> 0.741, families at 0.90 or more 21 -> 21 (scale 0 ->
0.93 and translate 0.79 -> 1.0 gained; jpeg 0.92 -> 0.85, dotted line 0.93 -> 0.86 and
motion blur 0.86 -> 0.71 lost, 1 or 2 of their 13 or 14 images each), clean false-positive
rate 0.70 % -> 0.63 %; at 1.65 it would have been 0.756 and 0.83 %. On the benchmark at the
targets' size (``--n 10000``, 45 or 46 images per family) the chooser picks 1.80 for all
33 families (at 1.75, 0.83 % of the selection half's clean images are flagged); with 1.75
the clean false-positive rate there is 0.73 % and mean recall 0.775, against 0.65 % and
0.769 at 1.80 (no clear difference), so the threshold chosen on the smaller run stayed.

The VAE's context term (:mod:`pipeline.detect.pixel_context`) gives more images a
VAE excess past zero, clean ones too: with it, 1.75 flagged 1.33 % of the clean images of
the benchmark at the targets' size. Its chooser then picked 2.10 for all 33 families
(held out: mean recall 0.858 at a clean false-positive rate of at most 0.50 % on the other
half), the current :data:`OUTLIER_EVIDENCE`. Over the three copies' 30,000 images at 2.10,
recall 0.858 with 23 families at 0.90 or more and a clean false-positive rate of 0.62 %,
against 0.776, 23 and 0.72 % before the context term at 1.75 (at 1.90: 0.874, 26
families, 0.95 %).

With the ``line_defect`` image property the chooser picked 2.15 for all 33 families: at
2.10, 0.81 % of the selection half's clean images were flagged, one image over the
budget. Over all 30,000 images 2.10 gives a recall of 0.875 (24 families at 0.90 or
more) at a clean false-positive rate of 0.67 %, 2.15 gives 0.868 (24) at 0.60 %: no
clear difference, so 2.10 stayed.

With the ``tone_curve`` image property the chooser again picked 2.15 for all 33 families
(held-out recall 0.883 at a clean false-positive rate of at most 0.59 %); over all 30,000
images 2.10 gives 0.890 at 0.74 %. The image properties' excess is that of the worst
property alone. Adding the other properties' excesses beyond an offset (several
moderately odd measures at once, as in shot or speckle noise) was measured on the same
scores, with the threshold chosen again on the other families: offsets 0.2, 0.4 and 0.6
gave held-out recall 0.884, 0.885 and 0.884 (24 families at 0.90 or more each, against
0.883 and 24): no clear difference; from 0 the clean images' summed excess (99th
percentile 2.06) pushed every threshold past the budget.

With the ``odd_patches`` image property the chooser picked 2.25 for all 33 families
(held-out recall 0.943 at a clean false-positive rate of at most 0.50 %), the current
:data:`OUTLIER_EVIDENCE`. Over all 30,000 images 2.25 gives a recall of 0.943 with 28
families at 0.90 or more at a clean false-positive rate of 0.59 %, 2.10 gives 0.948 (28)
at 0.80 %; before the property, at 2.10: 0.940 (27) at 0.75 %. The scenarios' figures
with it are in the README; on their scores at either threshold (the property with 8
mixture components, the same runs) ``mnist-corrupt-5`` ``is_outlier`` precision / recall
was 0.873 / 0.982 at 2.10 and 0.899 / 0.972 at 2.25 (rotated digits 0.94 -> 0.87; before
the property 0.889 / 0.982 at 2.10), and the real MNIST test set had 131 and 103 images
marked dirty (119 before the property).

Outlier score
-------------
Three detectors measure "does not belong": Datalab's kNN distance in the classifier's
feature space (semantic: a shape no class has), the VAE's reconstruction error (pixel
statistics: noise, blur, inversion, textures) and the image properties (blank, dark,
noisy…). They fail on different images, so ``outlier_score`` combines them. By default
(:data:`OUTLIER_METHOD` ``"evidence"``) it is the evidence the flag adds up, on the scale
of the sources' own scores::

    outlier_score = 2 ** (-outlier_evidence / OUTLIER_EVIDENCE)

1 without evidence, exactly 0.5 at the flag's threshold, towards 0 for extreme images;
so the ranking and the flag agree: the images the evidence flags are the lowest scores
(an image property failing on its own is flagged whatever its score). Each source's
excess is already in units of its own threshold, so a source far past its threshold
counts in full, whatever the other two say.

The alternatives (:data:`RANK_COMBINATIONS`, :func:`combine_outlier_scores`) rank each
source's score among the dataset's samples and combine the ranks: ``"rank_product"``
multiplies them (Breitling et al. 2004), ``"rank_min"`` takes the smallest,
``"rank_mean"`` their mean; ``"min"`` takes the smallest raw score. The rank product was
the default before the sources had calibrated excesses, and it dilutes a strong source:
an image the VAE puts far past its threshold but the kNN distance finds ordinary is
multiplied by an ordinary rank. Measured on the same detection runs' scores (seed 0),
rank product -> evidence: leave-one-family-out at 10,000 images (33 families, three
copies; ``benchmarks/detect.py --lofo``) mean family AUROC 0.9846 -> 0.9889, worst
(gamma) 0.824 -> 0.827, shear 0.909 -> 0.948, speckle noise 0.967 -> 0.988, elastic
0.975 -> 0.997, shot noise 0.960 -> 0.976, jpeg 0.988 -> 1.000; lost: line drop 0.987 ->
0.980, scale 0.990 -> 0.987. Every family alone in its copy (3,000 images, ``--groups
33``): 0.968 -> 0.980, worst 0.738 (posterize; now 0.803) -> 0.763 (gamma), jpeg 0.934
-> 1.000, zoom blur 0.958 -> 1.000; lost: line drop 0.948 -> 0.945. Scenarios, AUROC
(AUPRC): ``mnist-corrupt-5`` 0.9992 -> 0.9993 (0.988 -> 0.993), ``mnist-colour-mixed``
0.9988 -> 0.9995 (0.965 -> 0.990), ``colour32-mixed`` 0.9985 -> 0.9995 (0.958 -> 0.989),
``digits-mixed-mild`` 0.9987 -> 0.9990 (0.971 -> 0.983). Variants of the sum: leaving
Datalab's kNN distance out ranks the corruption families better (leave-one-family-out,
each family against its own copy's clean images: 0.9913 against 0.9887 for the sum,
worst 0.860 against 0.822) but the scenarios with foreign images and colours worse
(``mnist-corrupt-5`` 0.9982, ``mnist-colour-mixed`` 0.9983, ``colour32-mixed`` 0.9980);
counting each excess from 0.3 instead of 0 (0.9902) or their L2 norm (0.9901) in the
same measure are no clear difference and would make the ranking differ from the flag's
quantity. Weights in the same measure, at 10,000 images / with each family alone in its
copy: the plain sum 0.9887 / 0.9782, image properties counted 1.3 or 1.5 times 0.9902 /
0.9766 and 0.9905 / 0.9763, the VAE 0.7 times 0.9893 / 0.9753: gains on one benchmark
are losses on the other, no clear difference. Each excess divided by its dataset's 95th
or 99th percentile (a per-dataset calibration of the sources' tails) is worse: 0.9856 /
0.9683 and 0.9771 / 0.9645.

Earlier, among the rank combinations, on MNIST with 5 % corrupted and
out-of-distribution images (seed 0) the AUROC was 0.994 for ``"rank_min"``, 0.974 for
``"rank_mean"`` (an image that only one detector sees is averaged away), 0.967 for
``"min"`` on raw scores (the scores' scales differ), 0.989 for the VAE alone, 0.954 for
image properties alone and 0.849 for Datalab's kNN score alone; IsolationForest on the
pixels reached 0.950; ``"rank_min"`` -> ``"rank_product"``: that scenario 0.9940 ->
0.9973, the leave-one-family-out mean 0.952 -> 0.960. All of these are single seeds.

Tried and not adopted: a fourth source from the classifier's early layers (the mean and
standard deviation of every channel after each conv block, scored by kNN distance or a
Ledoit-Wolf Mahalanobis distance; one CNN trained on 3,000 clean MNIST images, 300
corrupted against 3,000 other clean ones per family): mean AUROC 0.91 to 0.92 over the
33 families, but 0.54 to 0.71 for exactly the weak ones (posterize, shot and speckle
noise, gamma): a network trained to recognise digits learns to ignore them. Other ways to
combine the three ranks, on the same leave-one-family-out scores (mean / worst family):
the rank product 0.964 / 0.758, the product of the two smallest ranks 0.964 / 0.752, the
smaller of Fisher's and Tippett's combined p-values 0.965 / 0.766, truncated products
(ranks under 0.1 or 0.2 only) 0.941 / 0.650 and 0.963 / 0.715; the differences are within
a family's image or two. Weights on the sources' excesses in the evidence sum (VAE and
image properties each 0.6 to 1.5, chosen with the threshold on the other families, the
benchmark at 10,000 images with the pixel context model): held-out recall 0.850 -> 0.860
(32 of 33 choices: image properties 1.5 at threshold 2.3), 24 -> 23 families at 0.90 or
more: no clear difference, so the plain sum stays. A wider neighbourhood for Datalab's
kNN distance (the mean over 30, 100 or 300 neighbours instead of 10, the same features)
ranked the corruption families worse, mean AUROC 0.835 -> 0.826, 0.812, 0.795: in the
classifier's feature space, more neighbours reach into other classes.

Datalab's kNN distance counted only beyond its own threshold (its excess less 1) or at
half weight, measured on the leave-one-family-out scores at 10,000 images (seed 0, with
every image property of today) with the benchmark's chooser picking the threshold on the
other families: held-out ``is_dirty`` recall 0.935 (the plain sum at 2.15) -> 0.949 (at
1.75) and 0.945 (at 1.90), families at 0.90 or more 27 -> 28 and 28, the clean
false-positive rate at most 0.59 % -> 0.55 % and 0.58 %; elastic 0.84 -> 0.96 and 0.93,
speckle noise 0.58 -> 0.69 and 0.62, shear 0.28 -> 0.43 and 0.39; the worst family's
``outlier_score`` AUROC 0.938 -> 0.951 and 0.945 (gamma). Of the clean images the sum
flags there, the VAE's excess is the largest part for 70 %, the kNN's for 18 %. On the
scenarios, each rule's threshold set to flag as many non-odd images as the sum does
(the same runs' scores): ``mnist-corrupt-5`` recall 0.982 -> 0.972 and 0.980 (occluded
and rotated digits, which the classifier's features see, lose), AUROC 0.9992 -> 0.9983
and 0.9990; ``mnist-labels-20-odd-4`` 0.990 -> 0.988 both; ``mnist-colour-mixed`` 0.947
-> 0.947 and 0.951. A gain of 15 to 20 of the benchmark's 1,500 corrupted images against
a loss of 1 to 5 of the foreign and displaced ones, one seed each: not adopted, the plain
sum stays.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from assay.pipeline import artifacts
from assay.pipeline.dataset import Dataset
from assay.pipeline.detect.base import DetectorResult
from assay.pipeline.detect.datalab import groups_from_pairs

__all__ = [
    "combine",
    "combine_outlier_scores",
    "evidence_score",
    "OUTLIER_SOURCES",
    "RANK_COMBINATIONS",
    "DATASET_LEVEL",
    "COMBINATIONS",
    "OUTLIER_METHOD",
    "OUTLIER_EVIDENCE",
    "outlier_evidence",
    "ISSUE_COLUMNS",
    "REASONS",
]

#: Detectors whose scores make up ``outlier_score`` (and whose flags make ``is_outlier``);
#: :mod:`pipeline.clean` reads the same names from ``outlier_sources``.
OUTLIER_SOURCES = ("knn_outlier", "vae", "image_property")
#: Detectors that describe the dataset, not a sample: not part of ``is_dirty``.
DATASET_LEVEL = ("non_iid", "class_imbalance")
#: Ways of combining the outlier sources' scores into one ranking by their ranks or values
#: (:func:`combine_outlier_scores`).
RANK_COMBINATIONS = ("rank_product", "rank_min", "rank_mean", "min")
#: Every way of making ``outlier_score``: from the evidence the flag adds up, or one of
#: :data:`RANK_COMBINATIONS`.
COMBINATIONS = ("evidence", *RANK_COMBINATIONS)
#: The default combination (module docstring).
OUTLIER_METHOD = "evidence"
#: ``outlier_evidence`` above which a sample is an outlier (module docstring).
OUTLIER_EVIDENCE = 2.25
#: A source is named in ``outlier_sources`` from this much of its own threshold.
SOURCE_SHARE = 0.5

#: The values of ``primary_reason`` for a dirty sample, in order of precedence.
REASONS = ("image_property", "outlier", "exact_duplicate", "near_duplicate", "label", "other")
#: Reasons that are about the image itself: such an image is never a label issue.
IMAGE_REASONS = ("image_property", "outlier")

#: The columns every ``issues.parquet`` starts with, in order (:data:`artifacts.ISSUE_COLUMNS`).
ISSUE_COLUMNS = tuple(artifacts.ISSUE_COLUMNS)
#: Detector columns folded into the columns above (one column per fact), not copied.
_FOLDED = {
    "label": {"is_label_issue", "label_score", "suggested_label", "suggested_label_confidence"},
    "knn_outlier": {"is_knn_outlier_issue", "knn_outlier_score"},
    "vae": {"is_vae_issue", "vae_score", "vae_error"},
    "image_property": {
        "is_image_property_issue",
        "image_property_score",
        "image_property_kind",
    },
    "exact_duplicate": {
        "is_exact_duplicate_issue",
        "exact_duplicate_score",
        "exact_duplicate_of",
    },
    "near_duplicate": {"is_near_duplicate_issue", "near_duplicate_score", "near_duplicate_of"},
}


def _ranks(score: np.ndarray) -> np.ndarray:
    """Mean rank of each score divided by N: in (0, 1], low scores -> low ranks."""
    return rankdata(score, method="average") / score.size


def combine_outlier_scores(
    scores: dict[str, np.ndarray], *, method: str = "rank_product"
) -> np.ndarray:
    """One outlier ranking from several detectors' scores.

    Parameters
    ----------
    scores : dict of str to ndarray
        Name -> float ``(N,)`` score in [0, 1], lower = more likely an outlier.
    method : {"rank_product", "rank_min", "rank_mean", "min"}, keyword-only
        ``"rank_product"``: the product of the per-detector ranks / N; ``"rank_min"``: the
        smallest of them; ``"rank_mean"``: their mean; ``"min"``: the smallest raw score.

    Returns
    -------
    ndarray
        float64 ``(N,)`` in [0, 1], lower = more likely an outlier. All ones when
        ``scores`` is empty.
    """
    if method not in RANK_COMBINATIONS:
        raise ValueError(
            f"`method` must be one of {RANK_COMBINATIONS}. Got {method!r} instead."
        )
    arrays = [np.asarray(s, dtype=np.float64) for s in scores.values()]
    if not arrays:
        return np.ones(0)
    stack = np.vstack(arrays)
    if method == "min":
        out = stack.min(axis=0)
    else:
        ranks = np.vstack([_ranks(s) for s in stack])
        reduce = {"rank_product": np.prod, "rank_min": np.min, "rank_mean": np.mean}[method]
        out = reduce(ranks, axis=0)
    return np.clip(out, 0.0, 1.0)


def _excess(result: DetectorResult, flag: np.ndarray) -> np.ndarray:
    """The source's ``excess``; for a source that gives none, 2 where it flags, else 0."""
    if result.excess is not None:
        return np.asarray(result.excess, dtype=np.float64)
    return np.where(flag, 2.0, 0.0)


def outlier_evidence(excess: dict[str, np.ndarray], n: int) -> np.ndarray:
    """The sum of the sources' positive excesses, float64 ``(N,)`` (module docstring)."""
    total = np.zeros(n)
    for values in excess.values():
        total += np.maximum(np.nan_to_num(values, nan=0.0, posinf=1e6), 0.0)
    return total


def evidence_score(evidence: np.ndarray) -> np.ndarray:
    """``outlier_score`` from ``outlier_evidence``: ``2 ** (-evidence / OUTLIER_EVIDENCE)``,
    float64 ``(N,)`` in (0, 1]; 1 without evidence, exactly 0.5 at the flag's threshold."""
    return np.exp2(-np.asarray(evidence, dtype=np.float64) / OUTLIER_EVIDENCE)


def _column(results: dict[str, DetectorResult], name: str, col: str, default: Any, n: int):
    res = results.get(name)
    if res is not None and col in res.table.columns:
        return res.table[col].to_numpy()
    return np.full(n, default)


def combine(
    dataset: Dataset,
    results: dict[str, DetectorResult],
    *,
    outlier_method: str = OUTLIER_METHOD,
) -> pd.DataFrame:
    """Merge detector results into the ``issues.parquet`` table.

    Parameters
    ----------
    dataset : Dataset
        ``N`` samples, ``K`` classes.
    results : dict of str to DetectorResult
        Results of the detectors that ran (each already checked against
        ``dataset.sample_ids``).
    outlier_method : str, keyword-only
        See :func:`combine_outlier_scores`.

    Returns
    -------
    DataFrame
        ``N`` rows in dataset order: :data:`ISSUE_COLUMNS`, then every further detector's
        columns (see the module docstring).
    """
    n = len(dataset)
    ids = dataset.sample_ids
    names = dataset.class_names
    given = dataset.labels.astype(np.int64)

    suggested = _column(results, "label", "suggested_label", -1, n).astype(np.int64)
    suggested = np.where(suggested < 0, given, suggested)
    confidence = _column(results, "label", "suggested_label_confidence", np.nan, n)
    label_score = _column(results, "label", "label_score", 1.0, n).astype(np.float64)
    is_label = _column(results, "label", "is_label_issue", False, n).astype(bool)

    present = [name for name in OUTLIER_SOURCES if name in results]
    sources = {
        name: results[name].table[results[name].score_column].to_numpy(dtype=np.float64)
        for name in present
    }
    flags = {
        name: results[name].table[results[name].flag_column].to_numpy(dtype=bool)
        for name in present
    }
    excess = {name: _excess(results[name], flags[name]) for name in present}
    evidence = outlier_evidence(excess, n)
    if outlier_method not in COMBINATIONS:
        raise ValueError(
            f"`outlier_method` must be one of {COMBINATIONS}. Got {outlier_method!r} instead."
        )
    if outlier_method == "evidence":
        outlier_score = evidence_score(evidence)
    else:
        outlier_score = (
            combine_outlier_scores(sources, method=outlier_method) if sources else np.ones(n)
        )
    is_property = flags.get("image_property", np.zeros(n, dtype=bool))
    if len(present) == len(OUTLIER_SOURCES):
        is_outlier = (evidence > OUTLIER_EVIDENCE) | is_property
        named = {name: is_outlier & ((excess[name] >= SOURCE_SHARE) | flags[name])
                 for name in present}  # fmt: skip
    else:  # a source did not run: the others' own flags
        is_outlier = np.logical_or.reduce(list(flags.values())) if flags else np.zeros(n, bool)
        named = flags
    source_names = np.array(
        [",".join(name for name in present if named[name][i]) for i in range(n)], dtype=object
    )
    kind = _column(results, "image_property", "image_property_kind", "", n).astype(str)

    # Duplicates: exact groups and near-duplicate groups merged; the first member in
    # dataset order is the original.
    pos = {int(s): i for i, s in enumerate(ids)}
    exact_of = _column(results, "exact_duplicate", "exact_duplicate_of", -1, n).astype(np.int64)
    near_of = _column(results, "near_duplicate", "near_duplicate_of", -1, n).astype(np.int64)
    pairs = [(i, pos[int(o)]) for i, o in enumerate(exact_of) if o >= 0]
    pairs += [(i, pos[int(o)]) for i, o in enumerate(near_of) if o >= 0]
    root = groups_from_pairs(n, pairs)
    later = root != np.arange(n)
    duplicate_of = np.where(later, ids[root], -1).astype(np.int64)
    is_exact = exact_of >= 0
    is_near = later & ~is_exact

    # One primary reason: an image reason wins, and such an image is no label issue.
    is_label = is_label & ~is_outlier
    primary = np.full(n, "", dtype=object)
    for reason, mask in (
        ("label", is_label),
        ("near_duplicate", is_near),
        ("exact_duplicate", is_exact),
        ("outlier", is_outlier & ~is_property),
        ("image_property", is_property),
    ):  # lowest precedence first, so later ones overwrite
        primary[mask] = reason

    frame = pd.DataFrame(
        {
            "sample_id": ids.astype(np.int64),
            "given_label": given,
            "suggested_label": suggested,
            "suggested_label_confidence": confidence.astype(np.float64),
            "label_score": label_score,
            "is_label_issue": is_label,
            "outlier_score": outlier_score,
            "is_outlier": is_outlier,
            "outlier_sources": source_names.astype(str),
            "outlier_evidence": evidence,
            "knn_outlier_score": _column(results, "knn_outlier", "knn_outlier_score", 1.0, n)
            .astype(np.float64),
            "vae_score": _column(results, "vae", "vae_score", 1.0, n).astype(np.float64),
            "vae_error": _column(results, "vae", "vae_error", np.nan, n).astype(np.float64),
            "image_property_score": _column(
                results, "image_property", "image_property_score", 1.0, n
            ).astype(np.float64),
            "image_property_kind": kind,
            "is_exact_duplicate": is_exact,
            "is_near_duplicate": is_near,
            "duplicate_of": duplicate_of,
        }
    )

    # Further detectors: their flag/score pair and extra columns, in registry order.
    taken = set(ISSUE_COLUMNS)
    extra_flags: list[str] = []
    for name, res in results.items():
        for col in res.table.columns:
            if col == "sample_id" or col in _FOLDED.get(name, set()):
                continue
            target = col if col not in taken else f"{name}__{col}"
            frame[target] = res.table[col].to_numpy()
            taken.add(target)
        if name not in _FOLDED and name not in DATASET_LEVEL:
            extra_flags.append(res.flag_column)

    dirty = is_label | is_outlier | is_exact | is_near
    for col in extra_flags:
        dirty |= frame[col].to_numpy(dtype=bool)
    primary[dirty & (primary == "")] = "other"
    frame["is_dirty"] = dirty
    frame["primary_reason"] = primary.astype(str)
    frame["reasons"] = _reasons(frame, names, extra_flags)
    rest = [c for c in frame.columns if c not in ISSUE_COLUMNS]
    return frame[list(ISSUE_COLUMNS) + rest]


_SOURCE_WORDS = {
    "knn_outlier": "outlier in feature space",
    "vae": "poorly explained by the VAE",
}


def _reasons(
    frame: pd.DataFrame,
    class_names: tuple[str, ...],
    extra_flags: list[str],
) -> np.ndarray:
    n = len(frame)
    parts: list[list[str]] = [[] for _ in range(n)]

    def add(mask: np.ndarray, text: Any) -> None:
        for i in np.flatnonzero(mask):
            parts[i].append(text(i) if callable(text) else text)

    given = frame["given_label"].to_numpy()
    sugg = frame["suggested_label"].to_numpy()
    add(
        frame["is_label_issue"].to_numpy(),
        lambda i: f"label issue (given {class_names[given[i]]}, "
        f"likely {class_names[sugg[i]]})",
    )
    sources = frame["outlier_sources"].to_numpy()
    kinds = frame["image_property_kind"].to_numpy()
    for name, words in _SOURCE_WORDS.items():
        add(np.array([name in s.split(",") for s in sources]), words)
    add(
        np.array(["image_property" in s.split(",") for s in sources]),
        lambda i: f"image property: {kinds[i].replace('_', ' ')}" if kinds[i] else "image property",
    )
    dup = frame["duplicate_of"].to_numpy()
    add(frame["is_exact_duplicate"].to_numpy(), lambda i: f"exact duplicate of {dup[i]}")
    add(frame["is_near_duplicate"].to_numpy(), lambda i: f"near duplicate of {dup[i]}")
    for col in extra_flags:
        words = col.removeprefix("is_").removesuffix("_issue").replace("_", " ")
        add(frame[col].to_numpy(dtype=bool), words)
    return np.array(["; ".join(p) for p in parts], dtype=object)
