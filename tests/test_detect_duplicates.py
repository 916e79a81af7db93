"""Near duplicates judged against each class's own spread: distinct simple strokes are not
copies, resized / re-encoded / shifted / recoloured copies are."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from assay.pipeline.detect.duplicate import aligned_rms, pixel_near_duplicates


def _strokes(n: int, rng: np.random.Generator) -> np.ndarray:
    """Distinct "1"s: one slanted bar each, position, slant, length and width varied. A
    stroke that differs from an earlier one by less than 20 grey levels RMS (after a shift
    of up to two pixels) is drawn again: a person would call those two the same image."""
    yy, xx = np.mgrid[0:28, 0:28].astype(np.float64)
    out: list[np.ndarray] = []
    while len(out) < n:
        cx, slant = rng.uniform(10, 18), rng.uniform(-0.35, 0.35)
        top, bottom, width = rng.uniform(3, 8), rng.uniform(20, 25), rng.uniform(1.0, 2.2)
        d = np.abs(xx - (cx + slant * (yy - 14)))
        bar = (d < width) & (yy > top) & (yy < bottom)
        im = np.clip(ndimage.gaussian_filter(bar * 255.0, 0.7), 0, 255).astype(np.uint8)
        stack = np.repeat(im[None], len(out), 0)
        if out and aligned_rms(np.stack(out), stack, max_shift=2).min() < 20:
            continue
        out.append(im)
    return np.stack(out)


def _scribbles(n: int, rng: np.random.Generator) -> np.ndarray:
    """A class with far more spread: smoothed random ink."""
    z = ndimage.gaussian_filter(rng.normal(size=(n, 28, 28)), (0, 2.0, 2.0))
    return np.where(z > 0.15 * z.std(axis=(1, 2), keepdims=True) * 3, 255, 0).astype(np.uint8)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    images = np.concatenate([_strokes(150, rng), _scribbles(150, rng)])
    labels = np.repeat([0, 1], 150)
    return images, labels


def _resized(im: np.ndarray) -> np.ndarray:
    small = Image.fromarray(im).resize((24, 24), Image.BILINEAR)
    return np.asarray(small.resize((28, 28), Image.BILINEAR))


def _jpeg(im: np.ndarray) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(im).save(buf, format="JPEG", quality=75)
    return np.asarray(Image.open(buf))


def _shifted(im: np.ndarray) -> np.ndarray:
    return np.roll(im, 1, axis=1)


def _recoloured(im: np.ndarray) -> np.ndarray:
    return np.clip(im * 0.6 + 50, 0, 255).astype(np.uint8)


def test_distinct_simple_strokes_are_not_duplicates(data):
    images, labels = data
    pairs, relative = pixel_near_duplicates(images, labels=labels)
    assert len(pairs) == 0, pairs
    # The same strokes judged against the whole dataset's spread would be called copies:
    # the per-class reference is what keeps them apart.
    global_pairs, _ = pixel_near_duplicates(images, labels=None)
    assert len(global_pairs) > 0
    assert relative[labels == 0].min() > 0.35


@pytest.mark.parametrize("change", [_resized, _jpeg, _shifted, _recoloured])
def test_altered_copies_are_duplicates(data, change):
    images, labels = data
    rng = np.random.default_rng(1)
    src = rng.choice(len(images), 12, replace=False)
    copies = np.stack([change(images[i]) for i in src])
    all_images = np.concatenate([images, copies])
    all_labels = np.concatenate([labels, labels[src]])
    pairs, _ = pixel_near_duplicates(all_images, labels=all_labels)
    found = {tuple(p) for p in pairs.tolist()}
    expected = {(int(i), len(images) + k) for k, i in enumerate(src)}
    assert expected <= found, sorted(expected - found)
    assert found <= expected, sorted(found - expected)  # nothing else is called a copy


def test_recoloured_colour_copies_are_duplicates(data):
    images, labels = data
    rng = np.random.default_rng(2)
    paper = rng.uniform(0, 90, size=(len(images), 1, 1, 3))
    ink = rng.uniform(160, 255, size=(len(images), 1, 1, 3))
    rgb = (paper + (ink - paper) * images[..., None] / 255.0).astype(np.uint8)
    src = rng.choice(len(images), 10, replace=False)
    paper2 = rng.uniform(0, 90, size=(10, 1, 1, 3))
    ink2 = rng.uniform(160, 255, size=(10, 1, 1, 3))
    copies = (paper2 + (ink2 - paper2) * images[src][..., None] / 255.0).astype(np.uint8)
    pairs, _ = pixel_near_duplicates(np.concatenate([rgb, copies]),
                                     labels=np.concatenate([labels, labels[src]]))  # fmt: skip
    expected = {(int(i), len(images) + k) for k, i in enumerate(src)}
    assert {tuple(p) for p in pairs.tolist()} == expected


def test_rejects_mismatched_labels(data):
    images, _ = data
    with pytest.raises(ValueError, match="`labels` must have shape"):
        pixel_near_duplicates(images, labels=np.zeros(3))
