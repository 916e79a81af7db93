"""Every corruption family on tiny stacks: shape, dtype and range kept, input untouched,
seeded, and a measured change that grows with the severity."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from assay.pipeline.inject.corruptions import FAMILIES, corrupt, families


def _strokes(n: int = 8, size: int = 20, colour: bool = False) -> np.ndarray:
    """Digit-like images: bright strokes (an ellipse and a bar) on a dark, slightly grey
    paper; in colour, random ink and paper colours."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
    out = []
    for i in range(n):
        a, b = 0.25 + 0.05 * (i % 3), 0.3 - 0.04 * (i % 2)
        ring = np.abs((yy / a) ** 2 + (xx / b) ** 2 - 1) < 0.35
        bar = (np.abs(xx - 0.1 * (i % 4 - 1.5)) < 0.06) & (np.abs(yy) < 0.35)
        ink = (ring | bar).astype(np.float64)
        out.append(0.05 + 0.9 * ink + rng.uniform(0, 0.03, ink.shape))
    grey = np.stack(out)
    if not colour:
        return np.clip(grey * 255, 0, 255).astype(np.uint8)
    paper = rng.uniform(0, 0.4, size=(n, 1, 1, 3))
    ink = rng.uniform(0.6, 1.0, size=(n, 1, 1, 3))
    rgb = paper + (ink - paper) * grey[..., None]
    return np.clip(rgb * 255, 0, 255).astype(np.uint8)


GREY = _strokes(16)
COLOUR = _strokes(16, colour=True)


def _change(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference at two scales (as is, and smoothed): the smoothed term keeps
    growing for geometric changes after the pixel-level one saturates."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    sigma = (0, 2, 2) + (0,) * (a.ndim - 3)
    smooth = np.abs(ndimage.gaussian_filter(a, sigma) - ndimage.gaussian_filter(b, sigma))
    return float(np.mean(np.abs(a - b)) + np.mean(smooth))


def test_the_library_is_broad():
    assert len(families(origin="mnist-c")) == 15
    assert len(families(colour=True, origin="imagenet-c")) >= 9
    assert len(families(colour=True, origin="pipeline")) >= 8
    assert set(families()) < set(families(colour=True))


@pytest.mark.parametrize("family", families(colour=True))
@pytest.mark.parametrize("colour", [False, True], ids=["grey", "colour"])
def test_family_contract_and_monotone_severity(family, colour):
    if not colour and FAMILIES[family].colour_only:
        with pytest.raises(ValueError, match="needs colour images"):
            corrupt(GREY, family)
        return
    images = COLOUR if colour else GREY
    before = images.copy()
    changes = []
    for severity in range(1, 6):
        out = corrupt(images, family, severity=severity, seed=3)
        assert out.shape == images.shape and out.dtype == np.uint8
        changes.append(_change(out, images))
    np.testing.assert_array_equal(images, before)  # the input is never written to
    np.testing.assert_array_equal(
        corrupt(images, family, severity=3, seed=3), corrupt(images, family, severity=3, seed=3)
    )
    assert changes[0] > 0.5, (family, changes)  # even severity 1 changes the images
    # The measured change grows with severity (a small tolerance for random draws).
    for lo, hi in zip(changes, changes[1:], strict=False):
        assert hi >= lo * 0.97 - 0.2, (family, changes)
    assert changes[-1] > changes[0] * 1.15, (family, changes)


def test_one_image_and_a_larger_image_work():
    big = np.repeat(np.repeat(GREY[:2], 2, axis=1), 2, axis=2)  # 40x40
    for family in families():
        assert corrupt(big, family, severity=5).shape == big.shape
        assert corrupt(GREY[:1], family).shape == GREY[:1].shape


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"family": "nope"}, "`family` must be one of"),
        ({"family": "rotate", "severity": 0}, "`severity` must be an integer in 1..5"),
        ({"family": "rotate", "severity": 2.5}, "`severity` must be an integer in 1..5"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        corrupt(GREY, **kwargs)


def test_rejects_non_uint8():
    with pytest.raises(ValueError, match="`images` must be uint8"):
        corrupt(GREY.astype(np.float32), "rotate")
