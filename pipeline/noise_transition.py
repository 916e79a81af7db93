"""The label-noise transition matrix the ``noise_aware`` GAN arm trains with
(:mod:`pipeline.generate`, :mod:`models.gan`).

``T[y, s] = P(given label s | true label y)``, rows summing to 1: read from the detection
stage's estimate in either convention (:func:`transition_from_noise_matrix`), then
re-estimated for the samples an arm actually trains on once believed-clean samples are
held out (:func:`transition_for_training`).
"""

from __future__ import annotations

import numpy as np

from assay.pipeline.errors import DataError

__all__ = ["transition_for_training", "transition_from_noise_matrix"]


def transition_from_noise_matrix(noise_matrix: np.ndarray) -> np.ndarray:
    """The GAN transition ``T[y, s] = P(given s | true y)`` (rows sum to 1).

    Accepts the detection stage's ``noise_matrix.npy``, which is already in this convention
    (rows sum to 1), or cleanlab's own ``noise_matrix[s, y]`` (columns sum to 1), which is
    transposed. A matrix whose rows sum to 1 is always read as ``T``.

    Raises
    ------
    DataError
        Not a square, finite, non-negative matrix with rows or columns summing to 1.
    """
    nm = np.asarray(noise_matrix, dtype=float)
    if nm.ndim != 2 or nm.shape[0] != nm.shape[1]:
        raise DataError(f"`noise_matrix` must be a (K, K) array. Got shape {nm.shape} instead.")
    if not np.all(np.isfinite(nm)) or nm.min() < 0:
        raise DataError("`noise_matrix` must hold finite, non-negative probabilities.")
    rows, cols = nm.sum(axis=1), nm.sum(axis=0)
    if np.allclose(rows, 1.0, atol=1e-3):
        return nm / rows[:, None]
    if np.allclose(cols, 1.0, atol=1e-3):
        return (nm / cols[None, :]).T.copy()
    raise DataError(
        "`noise_matrix` rows (T[true, given]) or columns (cleanlab's P(given | true)) must "
        f"sum to 1. Got row sums {np.round(rows, 3).tolist()} instead."
    )


def transition_for_training(
    transition: np.ndarray,
    observed_labels: np.ndarray,
    removed_labels: np.ndarray,
) -> np.ndarray:
    """Re-estimate ``T (K, K)`` after believed-clean samples were held out.

    Parameters
    ----------
    transition : ``T[y, s] = P(given s | true y)`` estimated on the whole dataset.
    observed_labels : given labels of the whole dataset, ``(N,)``.
    removed_labels : given labels of the held-out (believed-clean: given == true)
        samples, ``(M,)``.

    Returns
    -------
    ``(K, K)`` row-stochastic matrix for the remaining ``N - M`` samples: the true-class
    counts ``n_y`` solve ``counts_s = sum_y n_y T[y, s]`` (least squares, clipped at 0),
    the joint ``n_y T[y, s]`` loses the held-out counts on its diagonal, and each row is
    renormalised.
    """
    t = np.asarray(transition, dtype=float)
    k = t.shape[0]
    counts = np.bincount(np.asarray(observed_labels, dtype=np.int64), minlength=k).astype(float)
    removed = np.bincount(np.asarray(removed_labels, dtype=np.int64), minlength=k).astype(float)
    n_true = np.clip(np.linalg.lstsq(t.T, counts, rcond=None)[0], 0.0, None)
    joint = n_true[:, None] * t  # (K, K): true y -> given s
    diag = np.diag(joint) - removed
    joint[np.arange(k), np.arange(k)] = np.clip(diag, 1e-3 * np.maximum(np.diag(joint), 1e-9), None)
    rows = joint.sum(axis=1, keepdims=True)
    out = np.where(rows > 0, joint / np.where(rows > 0, rows, 1.0), np.eye(k))
    return out / out.sum(axis=1, keepdims=True)
