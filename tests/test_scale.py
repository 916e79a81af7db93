"""Data bigger than memory: the batched label-issue path, memory-mapped datasets, peak memory."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from cleanlab.experimental.label_issues_batched import LabelInspector
from cleanlab.rank import get_label_quality_scores
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.model_selection import cross_val_predict

from assay.pipeline import io
from assay.pipeline.dataset import Dataset
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
    # The flags: the same ranking (lowest normalized margin first), cut at cleanlab's
    # batched estimate of the count, minus samples whose given label is the predicted class.
    inspector = LabelInspector(
        num_class=10,
        verbose=False,
        n_jobs=1,
        quality_score_kwargs={"method": label_module.SELECT_BY},
        num_issue_kwargs={"estimation_method": "off_diagonal_calibrated"},
    )
    inspector.update_confident_thresholds(dirty.labels, probs)
    inspector.score_label_quality(dirty.labels, probs)
    n_batched = int(inspector.get_num_issues())
    n_memory = int(in_memory["is_issue"].sum())
    assert abs(n_batched - n_memory) <= max(1, len(dirty) // 200)
    expected = np.zeros(len(dirty), dtype=bool)
    margin = get_label_quality_scores(dirty.labels, probs, method=label_module.SELECT_BY)
    expected[np.argsort(margin, kind="stable")[:n_batched]] = True
    expected &= probs.argmax(axis=1) != dirty.labels
    assert batched["is_issue"].tolist() == expected.tolist()
    # Which is why both paths find the injected noise equally well.
    truth = ground_truth(dirty)["is_label_noise"].to_numpy(dtype=bool)
    assert abs(_f1(batched["is_issue"], truth) - _f1(in_memory["is_issue"], truth)) <= 0.01
    assert _f1(batched["is_issue"], truth) > 0.6


def _validate_peak_rss(run_dir) -> float:
    """Peak RSS in bytes of ``assay validate --run-dir run_dir``, run as a child process."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "assay.flows.cli", "validate", "--run-dir", str(run_dir), "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, proc.stderr.read().decode()
    return usage.ru_maxrss * 1024.0  # Linux reports kilobytes


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in kB is Linux's")
def test_validate_peak_memory_grows_by_the_mapped_images_and_the_tables_only(tmp_path):
    # 64 x 64 images (4 KB each) against a few hundred bytes of per-sample tables: a copy
    # of the pixels (uint8, let alone float64) would show as much more growth.
    rng = np.random.default_rng(0)
    peaks = {}
    for n in (2000, 8000):
        images = rng.integers(0, 256, (n, 64, 64), dtype=np.uint8)
        io.save(Dataset.create(images, rng.integers(0, 10, n)), tmp_path / f"r{n}" / "dataset")
        del images
        peaks[n] = _validate_peak_rss(tmp_path / f"r{n}")
    more_images = 6000
    growth = peaks[8000] - peaks[2000]
    # Reading the memory-mapped images once keeps their pages resident (file-backed, the
    # OS may drop them at any time): 4 KB each. On top of that: the per-sample tables,
    # measured at about 2 KB each (growth 6,000 x 6.1 KB in a full-suite run, over a
    # 2 KB allowance by 49 KB); 3 KB leaves room for the allocator's noise, and a uint8
    # copy of the pixels (4 KB more each) still fails.
    allowed = more_images * (64 * 64 + 3072)
    assert growth <= allowed, f"peak RSS grew by {growth / 2**20:.1f} MiB for {more_images} images"


def test_image_batches_read_the_memory_map_batch_by_batch(tmp_path):
    import torch

    from assay.models.tensors import ImageBatches, to_tensor

    rng = np.random.default_rng(1)
    for shape in [(50, 9, 7), (50, 6, 5, 3)]:
        images = rng.integers(0, 256, shape, dtype=np.uint8)
        mapped = io.load(io.save(Dataset.create(images, rng.integers(0, 3, 50)),
                                 tmp_path / f"ds{len(shape)}")).images  # fmt: skip
        assert not mapped.flags.writeable
        for scale in ("unit", "signed", None):
            whole = to_tensor(images, scale=scale, channels_last=True)  # (N, C, H, W)
            lazy = ImageBatches(mapped, scale=scale, device=torch.device("cpu"),
                                channels_last=True)  # fmt: skip
            resident = ImageBatches(mapped, scale=scale, device=torch.device("cpu"),
                                    channels_last=True, resident=True)  # fmt: skip
            idx = torch.tensor([4, 0, 49, 4])
            rows = np.array([3, 10, 11, 40])
            for batches in (lazy, resident):
                assert batches.shape == tuple(whole.shape)
                assert torch.equal(batches.take(idx), whole[idx])
                assert torch.equal(batches.rows(45, 60), whole[45:])
                part = batches.subset(rows)
                assert len(part) == 4 and torch.equal(part.take(torch.tensor([1, 3])),
                                                      whole[[10, 40]])  # fmt: skip
                assert torch.equal(part.rows(0, 4), whole[rows])
            if scale is None:  # a uint8 tensor never shares the read-only map
                batch = lazy.rows(0, 50)
                batch[0, 0, 0, 0] = 1
                assert mapped[0].flat[0] == images[0].flat[0]


def test_classifier_on_the_memory_map_matches_one_on_an_in_memory_copy(tmp_path):
    from dataclasses import replace

    from assay.models.classifier import Classifier, ClassifierConfig

    data = io.load("digits").subset(np.arange(200))
    mapped = io.load(io.save(data, tmp_path / "ds"))
    config = replace(ClassifierConfig.for_images(data.images.shape), epochs=1)
    outputs = []
    for images in (np.array(data.images), mapped.images):
        model = Classifier(config, n_classes=10, seed=0, device="cpu").fit(images, data.labels)
        outputs.append(model.predict_with_embedding(images))
    np.testing.assert_array_equal(outputs[0][0], outputs[1][0])
    np.testing.assert_array_equal(outputs[0][1], outputs[1][1])


def test_near_duplicates_past_the_pca_fit_limit_find_the_same_copies(monkeypatch):
    from assay.pipeline.detect import duplicate
    from assay.pipeline.detect.duplicate import pixel_near_duplicates

    digits = io.load("digits")
    rng = np.random.default_rng(1)
    src = rng.choice(len(digits), 20, replace=False)
    copies = np.roll(digits.images[src], 1, axis=2)  # shifted by one pixel
    images = np.concatenate([digits.images, copies])
    labels = np.concatenate([digits.labels, digits.labels[src]])
    expected = {(int(i), len(digits) + k) for k, i in enumerate(src)}
    full, _ = pixel_near_duplicates(images, labels=labels, chunk=700)
    # Past the limit the PCA is fitted on a random subset of the images (a third here).
    monkeypatch.setattr(duplicate, "PCA_FIT_MAX", 600)
    subset, _ = pixel_near_duplicates(images, labels=labels, chunk=700)
    for pairs in (full, subset):
        assert expected <= {tuple(p) for p in pairs.tolist()}
    assert len(subset) <= len(full) + 2
