"""Data bigger than memory: the batched label-issue path, memory-mapped datasets, peak memory."""

from __future__ import annotations

import numpy as np
import pytest
from cleanlab.experimental.label_issues_batched import LabelInspector
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.model_selection import cross_val_predict

from assay.pipeline import io
from assay.pipeline.detect import label as label_module
from assay.pipeline.detect.label import label_issues
from assay.pipeline.inject import ground_truth, inject


def _f1(flags: np.ndarray, truth: np.ndarray) -> float:
    tp = int((flags & truth).sum())
    return 2 * tp / max(int(flags.sum()) + int(truth.sum()), 1)


@pytest.mark.parametrize("preset", ["labels-10", "labels-30"])
def test_batched_label_issues_match_the_in_memory_path(monkeypatch, preset):
    dirty = inject(io.load("digits"), preset, seed=0)
    x = dirty.images.reshape(len(dirty), -1) / 255.0
    probs = cross_val_predict(
        LinearDiscriminantAnalysis(), x, dirty.labels, cv=3, method="predict_proba"
    )
    in_memory = label_issues(dirty.labels, probs)
    # Past the threshold (set low here) the batched implementation takes over, in
    # mini-batches smaller than the data.
    monkeypatch.setattr(label_module, "BATCHED_MIN_SAMPLES", 500)
    monkeypatch.setattr(label_module, "LABEL_BATCH_SIZE", 256)
    batched = label_issues(dirty.labels, probs)
    assert batched["is_issue"].tolist() == label_issues(dirty.labels, probs, batched=True)[
        "is_issue"
    ].tolist()
    # Scores, suggestions and the transition matrix are the same tables.
    for key in ("score", "suggested", "confidence", "noise_matrix", "prior"):
        np.testing.assert_array_equal(batched[key], in_memory[key])
    # The flags: the same ranking (lowest self-confidence first), cut at cleanlab's batched
    # estimate of the count, minus samples whose given label is the predicted class.
    inspector = LabelInspector(
        num_class=10,
        verbose=False,
        n_jobs=1,
        num_issue_kwargs={"estimation_method": "off_diagonal_calibrated"},
    )
    inspector.update_confident_thresholds(dirty.labels, probs)
    inspector.score_label_quality(dirty.labels, probs)
    n_batched = int(inspector.get_num_issues())
    n_memory = int(in_memory["is_issue"].sum())
    assert abs(n_batched - n_memory) <= max(1, len(dirty) // 200)
    expected = np.zeros(len(dirty), dtype=bool)
    expected[np.argsort(in_memory["score"], kind="stable")[:n_batched]] = True
    expected &= probs.argmax(axis=1) != dirty.labels
    assert batched["is_issue"].tolist() == expected.tolist()
    # Which is why both paths find the injected noise equally well.
    truth = ground_truth(dirty)["is_label_noise"].to_numpy(dtype=bool)
    assert abs(_f1(batched["is_issue"], truth) - _f1(in_memory["is_issue"], truth)) <= 0.01
    assert _f1(batched["is_issue"], truth) > 0.6
