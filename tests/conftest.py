"""Shared fixtures: a tiny hand-made dataset, the real MNIST test set when present, and a
small real run folder made by the real stages (built once per test session)."""

from __future__ import annotations

import atexit
import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from assay.pipeline.dataset import Dataset
from assay.pipeline.io import default_mnist_path
from assay.pipeline.runfolder import RunFolder

# Every test process gets a Prefect home of its own (database, profiles, settings), set
# before anything imports Prefect: the suite never writes into the user's ~/.prefect nor
# talks to a server PREFECT_API_URL points at, and parallel workers (pytest -n) never
# share a database. Tests that need a server start their own.
_PREFECT_HOME = tempfile.mkdtemp(prefix="assay-tests-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.pop("PREFECT_API_URL", None)
atexit.register(shutil.rmtree, _PREFECT_HOME, ignore_errors=True)

#: Class names of the real run: digit words, one of them with markup to test escaping.
REAL_RUN_CLASSES = ("zero", "one", "two", "three", "<b>four</b>", "five", "six", "seven",
                    "eight", "nine")


def make_tiny_dataset(n_per_class: int = 10, *, size: int = 8, seed: int = 0) -> Dataset:
    """Three classes of greyscale ``size x size`` images with one obvious stroke each.

    Class 0 is a horizontal bar, class 1 a vertical bar, class 2 the main diagonal, drawn
    at 200 over a background of uniform noise in 0..40. Returns N = 3 * ``n_per_class``
    samples ordered by class, ids ``0..N-1``.
    """
    rng = np.random.default_rng(seed)
    n = 3 * n_per_class
    images = rng.integers(0, 41, size=(n, size, size), dtype=np.uint8)
    labels = np.repeat(np.arange(3, dtype=np.int64), n_per_class)
    mid = size // 2
    for i, label in enumerate(labels):
        if label == 0:
            images[i, mid, :] = 200
        elif label == 1:
            images[i, :, mid] = 200
        else:
            images[i, np.arange(size), np.arange(size)] = 200
    return Dataset.create(
        images,
        labels,
        ["horizontal", "vertical", "diagonal"],
        meta={"source": "tests.conftest.make_tiny_dataset", "format": "memory"},
        source="tiny_dataset",
    )


def pen_strokes(n: int, seed: int = 0, side: int = 28) -> np.ndarray:
    """Anti-aliased pen strokes (drawn at 4x, box-downsampled): grey edges around white
    cores, like scanned handwriting."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    out = np.empty((n, side, side), dtype=np.uint8)
    for i in range(n):
        im = Image.new("L", (side * 4, side * 4))
        pts = [tuple(rng.uniform(side * 0.6, side * 3.4, 2)) for _ in range(rng.integers(3, 6))]
        ImageDraw.Draw(im).line(pts, fill=255, width=int(rng.integers(7, 12)), joint="curve")
        out[i] = np.asarray(im.resize((side, side), Image.BOX))
    return out


def recoloured(images: np.ndarray, seed: int) -> np.ndarray:
    """Grey ink shares painted between a random paper and a random ink colour."""
    rng = np.random.default_rng(seed)
    paper = rng.integers(0, 256, size=(len(images), 1, 1, 3))
    ink = rng.integers(0, 256, size=(len(images), 1, 1, 3))
    far = np.abs(ink - paper).max(axis=3, keepdims=True) < 120
    ink = np.where(far, 255 - paper, ink)  # keep some contrast
    t = images[..., None] / 255.0
    return np.rint(paper + t * (ink - paper)).astype(np.uint8)


@pytest.fixture
def tiny_dataset() -> Dataset:
    """30 greyscale 8x8 images, 3 classes of 10 (see :func:`make_tiny_dataset`)."""
    return make_tiny_dataset()


@pytest.fixture(scope="session")
def mnist_path() -> Path:
    """The real MNIST test-set IDX folder; skips the test when it is absent."""
    path = default_mnist_path()
    images = list(path.glob("t10k-images-idx3-ubyte*")) if path.is_dir() else []
    labels = list(path.glob("t10k-labels-idx1-ubyte*")) if path.is_dir() else []
    if not (images and labels):
        pytest.skip(f"MNIST test set not found at {path} (set ASSAY_MNIST to point at it)")
    return path


def build_real_run(root: Path, *, n: int = 300, folds: int = 3, steps: int = 20) -> RunFolder:
    """A run folder written by the real stages on ``n`` scikit-learn digits with injected dirt.

    Ingest (a stratified subset, ``mixed-mild`` dirt plus extra blank images so that a
    validation warning fails), validate, detect (``folds``-fold small CNN, a short VAE),
    clean (``relabel``), the GAN comparison (``steps`` per arm of a narrow GAN, a briefly
    trained judge) and ``run.json``'s parameters; no report (the tests render it).
    """
    from sklearn.model_selection import train_test_split

    from assay.models.classifier import ClassifierConfig
    from assay.pipeline import clean, detect, generate, inject, io, validate
    from assay.pipeline.runfolder import new_run_id, now_iso, versions
    from assay.pipeline.stages import ingest

    digits = io.load("digits")
    keep, _ = train_test_split(np.arange(len(digits)), train_size=n, random_state=0,
                               stratify=digits.labels)
    small = digits.subset(np.sort(keep))
    small = Dataset.create(small.images, small.labels, list(REAL_RUN_CLASSES),
                           meta=small.meta, source="digits")
    config = dataclasses.replace(inject.resolve("mixed-mild"), blank=0.01)
    dirty = inject.inject(small, config, seed=0)
    run = RunFolder(root)
    ingest(run, dirty)
    parameters = {"data": "digits", "inject": "mixed-mild", "folds": folds, "steps": steps,
                  "policy": "relabel", "seed": 0}
    run.update_run_json(run_id=new_run_id(), started_at=now_iso(), parameters=parameters,
                        versions=versions())
    dataset = run.dataset()
    validate.validate(dataset, out_dir=run.paths.validation, data_docs=False)
    small_cnn = ClassifierConfig.for_images(dataset.images.shape, epochs=3,
                                           widths=(8, 16), hidden=32)
    detect.run_detection(dataset, out_dir=run.paths.detection, folds=folds, seed=0,
                         progress=False, classifier={"config": small_cnn},
                         options={"vae": {"config": {"epochs": 10}}})
    cleaned, decisions = clean.clean(dataset, run.issues(), policy="relabel",
                                     sample_flags=run.sample_flags())
    clean.write_cleaned(cleaned, decisions, run.paths.cleaned)
    generate.compare_gans(
        dataset, run.cleaned(), run.issues(), noise_matrix=run.noise_matrix(),
        out_dir=run.paths.gan, steps=steps, seed=0, seeds=2, progress=False,
        vae_dir=run.paths.detection, min_trusted_per_class=5,
        gan_options={"width": 16}, judge_options={"epochs": 2, "min_steps": 20},
    )
    return run


@pytest.fixture(scope="session")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> RunFolder:
    """A small real run folder (see :func:`build_real_run`), shared by the whole session.
    Tests copy it before they change anything in it."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small models: one thread is fastest on a shared machine
    try:
        return build_real_run(tmp_path_factory.mktemp("real-run") / "run")
    finally:
        torch.set_num_threads(threads)
