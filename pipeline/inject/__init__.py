"""Dirt on purpose, with ground truth: make a dirty copy of a dataset for demos and
benchmarks, recording per sample what was done.

>>> dirty = inject(dataset, "mixed-mild", seed=0)          # doctest: +SKIP
>>> truth = ground_truth(dirty)                              # doctest: +SKIP

Kinds (the values of the manifest column ``injected``): ``clean``, ``label_noise``, the
image corruptions ``gaussian_noise``, ``salt_pepper``, ``blank``, ``inverted``, ``blur``,
``occlusion``, ``rotate_shift``, out-of-distribution ``ood``, and the appended
``exact_duplicate`` and ``near_duplicate``.
"""

from assay.pipeline.inject.config import (
    CORRUPTION_KINDS,
    DIGIT_PAIRS,
    DUPLICATE_KINDS,
    KINDS,
    LABEL_NOISE_MODES,
    PRESETS,
    RATE_FIELDS,
    InjectionConfig,
    load_transition_matrix,
    resolve,
)
from assay.pipeline.inject.core import (
    CORRUPTED_KINDS,
    GROUND_TRUTH_COLUMNS,
    asymmetric_pairs,
    ground_truth,
    inject,
    label_plan,
)
from assay.pipeline.inject.images import OOD_STYLES

__all__ = [
    "CORRUPTED_KINDS",
    "CORRUPTION_KINDS",
    "DIGIT_PAIRS",
    "DUPLICATE_KINDS",
    "GROUND_TRUTH_COLUMNS",
    "KINDS",
    "LABEL_NOISE_MODES",
    "OOD_STYLES",
    "PRESETS",
    "RATE_FIELDS",
    "InjectionConfig",
    "asymmetric_pairs",
    "ground_truth",
    "inject",
    "label_plan",
    "load_transition_matrix",
    "resolve",
]
