"""The image spool: blocks appended to an unnamed file, read back as a read-only map."""

from __future__ import annotations

import numpy as np
import pytest

from assay.pipeline.spool import ImageSpool


def test_blocks_come_back_in_order_read_only():
    rng = np.random.default_rng(0)
    blocks = [rng.integers(0, 256, (n, 5, 4, 3), dtype=np.uint8) for n in (3, 1, 7)]
    spool = ImageSpool((5, 4, 3))
    for block in blocks:
        spool.append(block)
    images = spool.finish()
    np.testing.assert_array_equal(images, np.concatenate(blocks))
    with pytest.raises(ValueError, match="read-only"):
        images[0, 0, 0, 0] = 1
    with pytest.raises(ValueError, match="finished"):
        spool.append(blocks[0])


def test_refuses_other_shapes_and_dtypes():
    spool = ImageSpool((2, 2))
    with pytest.raises(ValueError, match=r"uint8 images of shape \(n, 2, 2\)"):
        spool.append(np.zeros((1, 2, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        spool.append(np.zeros((1, 2, 2), np.float32))
    assert spool.finish().shape == (0, 2, 2)
    with pytest.raises(ValueError, match="image_shape"):
        ImageSpool((0, 2))
