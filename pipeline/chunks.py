"""Walk a large (memory-mapped) image array a block of rows at a time.

The canonical dataset's ``images.npy`` is opened memory-mapped and read-only
(:mod:`pipeline.io`), so a stage that touches every pixel reads it in blocks of
:data:`CHUNK_ROWS` images: only the per-sample results and one block's temporaries are held
in memory, whatever the number of images.
"""

from __future__ import annotations

from collections.abc import Iterator

#: Images per block when a stage walks the whole dataset (4096 MNIST images are 3.2 MB of
#: uint8; their float32 copy 12.8 MB).
CHUNK_ROWS = 4096
#: scikit-learn's ``working_memory`` (MB) for the neighbour searches of detection: the
#: size of one block of pairwise distances (scikit-learn's default, 1,024 MB, holds the
#: whole ``N x N`` matrix of up to 11,000 samples at once).
NEIGHBOUR_WORKING_MEMORY_MB = 64


def chunk_slices(n: int, rows: int = CHUNK_ROWS) -> Iterator[slice]:
    """Consecutive slices ``[start, start + rows)`` covering ``range(n)``.

    Parameters
    ----------
    n : int
        Number of rows (images), ``>= 0``.
    rows : int, default CHUNK_ROWS
        Rows per slice, ``>= 1``; the last slice may be shorter.

    Yields
    ------
    slice
    """
    if rows < 1:
        raise ValueError(f"`rows` must be an integer >= 1. Got {rows!r} instead.")
    for start in range(0, int(n), int(rows)):
        yield slice(start, min(start + int(rows), int(n)))

