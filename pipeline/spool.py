"""Images decoded a block at a time into an unnamed temporary file, then memory-mapped.

A reader that decodes its images one by one (an image folder: every file is decoded and
resized) appends each block of finished uint8 images to an :class:`ImageSpool` instead of
holding them all and stacking them at the end, which would need twice the dataset's size
in memory. The finished spool is a read-only memory map of ``(N, *image_shape)``; the
ingest stage then copies it into the run folder a block at a time
(:func:`pipeline.io.save`), so the process never holds more than one block of pixels
itself, and the operating system can page the rest out to the file.

The file is made with :func:`tempfile.TemporaryFile`: it has no name (on POSIX systems),
lives in ``$TMPDIR`` (point ``TMPDIR`` at a disk, not a RAM-backed ``/tmp``, for datasets
larger than memory), and disappears with the last reference to the map, also when the
process is killed.

Readers of formats whose pixels arrive as one array (IDX, ``.npz``, ``.csv``) do not spool:
they read that array straight into its final place once, and the snapshot is written from
it block by block.
"""

from __future__ import annotations

import math
import tempfile

import numpy as np

__all__ = ["ImageSpool"]


class ImageSpool:
    """Append blocks of same-shaped uint8 images; :meth:`finish` maps them read-only.

    Parameters
    ----------
    image_shape : tuple of int
        ``(H, W)`` or ``(H, W, C)``: the shape of every image.

    Examples
    --------
    >>> spool = ImageSpool((2, 2))
    >>> spool.append(np.zeros((3, 2, 2), dtype=np.uint8))
    >>> spool.finish().shape
    (3, 2, 2)
    """

    def __init__(self, image_shape: tuple[int, ...]) -> None:
        self.image_shape = tuple(int(s) for s in image_shape)
        if len(self.image_shape) not in (2, 3) or min(self.image_shape) < 1:
            raise ValueError(
                f"`image_shape` must be (H, W) or (H, W, C) of positive sizes. Got "
                f"{image_shape!r} instead."
            )
        self._row_bytes = math.prod(self.image_shape)
        self._file = tempfile.TemporaryFile(prefix="assay-images-")
        self.n = 0

    def append(self, images: np.ndarray) -> None:
        """Write a block ``(n, *image_shape)`` of uint8 images after those already spooled."""
        if self._file.closed:
            raise ValueError("this spool is finished; start a new one to append images.")
        block = np.asarray(images)
        if block.dtype != np.uint8 or block.shape[1:] != self.image_shape:
            raise ValueError(
                f"expected uint8 images of shape (n, {', '.join(map(str, self.image_shape))}); "
                f"got {block.dtype} of shape {block.shape}."
            )
        self._file.write(np.ascontiguousarray(block).data)
        self.n += block.shape[0]

    def finish(self) -> np.ndarray:
        """The spooled images, ``(N, *image_shape)``, memory-mapped read-only.

        The spool's file is closed; the map keeps its data until the map itself is freed.
        An empty spool gives an empty (in-memory) array.
        """
        self._file.flush()
        try:
            if self.n == 0:
                return np.empty((0, *self.image_shape), dtype=np.uint8)
            shape = (self.n, *self.image_shape)
            return np.memmap(self._file, dtype=np.uint8, mode="r", shape=shape)
        finally:
            self._file.close()

    def close(self) -> None:
        """Give the spool up without mapping it (its file is removed)."""
        self._file.close()

    def __enter__(self) -> ImageSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
