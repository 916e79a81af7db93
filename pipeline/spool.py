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

Readers of formats whose uint8 pixels arrive as one stream of bytes (IDX files, gzipped
or not; uint8 arrays in an ``.npz``) spool it too, with :meth:`ImageSpool.read_from`, a
block of :data:`BLOCK_BYTES` at a time. A ``.csv`` file, and an ``.npz`` array of another
dtype, is read a block at a time in two passes (the first finds the range that decides
the conversion to uint8, the second spools the converted blocks;
:mod:`pipeline.formats.csv_file`, :mod:`pipeline.formats.npz`).
"""

from __future__ import annotations

import math
import tempfile
from typing import BinaryIO

import numpy as np

from assay.pipeline.chunks import chunk_slices

__all__ = ["BLOCK_BYTES", "ImageSpool", "stack_blocks"]

#: Bytes read per block by :meth:`ImageSpool.read_from` (a stream may hold a few times
#: that while it reads one block, e.g. a zip member).
BLOCK_BYTES = 1 << 20


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

    def read_from(self, stream: BinaryIO, n_images: int) -> int:
        """Append up to ``n_images`` images read from the binary ``stream`` (raw uint8
        pixels, image after image, row-major), :data:`BLOCK_BYTES` at a time.

        Returns the number of bytes read, at most ``n_images`` images' worth: fewer when
        the stream ends first (a trailing partial image is read but not appended).
        """
        if self._file.closed:
            raise ValueError("this spool is finished; start a new one to append images.")
        row = self._row_bytes
        buf = memoryview(bytearray(max(1, BLOCK_BYTES // row) * row))
        remaining, total = int(n_images) * row, 0
        while remaining:
            want = min(len(buf), remaining)
            got = 0
            while got < want:
                k = stream.readinto(buf[got:want])
                if not k:
                    break
                got += k
            whole = got - got % row
            self._file.write(buf[:whole])
            self.n += whole // row
            total += got
            remaining -= got
            if got < want:
                break
        return total

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


def stack_blocks(arrays: list[np.ndarray]) -> np.ndarray:
    """Join same-shaped uint8 image arrays (memory maps included) along the first axis
    into a new spool, a block at a time; the read-only map of the result."""
    with ImageSpool(arrays[0].shape[1:]) as spool:
        for arr in arrays:
            for rows in chunk_slices(len(arr)):
                spool.append(arr[rows])
        return spool.finish()
