"""MNIST-style IDX files (``*-images-idx3-ubyte[.gz]`` + ``*-labels-idx1-ubyte[.gz]``).

An IDX file is a 4-byte big-endian magic number (``0x00000803`` = 2051 for 3-D unsigned
byte images, ``0x00000801`` = 2049 for 1-D unsigned byte labels), one big-endian uint32 per
dimension, then the raw bytes. Files may be gzip-compressed. The pixels are read a block at
a time into a temporary file that the dataset then maps (:mod:`pipeline.spool`), so an IDX
set larger than memory loads; several pairs (``train`` + ``t10k``) are joined the same way.
"""

from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

from assay.pipeline.dataset import Dataset
from assay.pipeline.errors import DataError
from assay.pipeline.formats.common import build_dataset
from assay.pipeline.limits import check_image_shape
from assay.pipeline.spool import ImageSpool, stack_blocks

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
CHUNK = 1 << 22  # read in 4 MiB pieces: gzip's reader allocates a buffer per call
DEFLATE_MAX_RATIO = 1032  # the most that deflate (gzip) can expand its input

IDX_NAME = re.compile(
    r"^(?P<prefix>.*?)[-_.]?(?P<kind>images|labels)[-_.]idx(?P<ndim>[13])[-_.]ubyte(?P<gz>\.gz)?$",
    re.IGNORECASE,
)


def is_idx_name(name: str) -> bool:
    """Whether a file name looks like an IDX images or labels file."""
    return IDX_NAME.match(name) is not None


def find_pairs(folder: Path) -> list[tuple[str, Path, Path]]:
    """Pair the IDX image and label files in ``folder`` by their common prefix.

    Returns
    -------
    list of (prefix, images_path, labels_path)
        Sorted with training parts first (a prefix containing ``train``), then by name.
        Empty when the folder holds no IDX files.

    Raises
    ------
    DataError
        An images file without its labels file or the other way round.
    """
    found: dict[tuple[str, str], Path] = {}
    for path in sorted(folder.iterdir()):
        match = IDX_NAME.match(path.name)
        if match is None or not path.is_file():
            continue
        key = (match["prefix"].lower(), match["kind"].lower())
        # Prefer the uncompressed file when both are present.
        if key not in found or found[key].suffix == ".gz":
            found[key] = path
    prefixes = sorted({p for p, _ in found}, key=lambda p: ("train" not in p, p))
    pairs = []
    for prefix in prefixes:
        images = found.get((prefix, "images"))
        labels = found.get((prefix, "labels"))
        if images is None or labels is None:
            if images is None:
                have, want = labels, "images-idx3-ubyte"
            else:
                have, want = images, "labels-idx1-ubyte"
            raise DataError(
                f"{have}: found this IDX file but not its partner in {folder}; expected a "
                f"matching '{prefix + '-' if prefix else ''}{want}[.gz]' file next to it."
            )
        pairs.append((prefix, images, labels))
    return pairs


def partner_of(path: Path) -> tuple[str, Path, Path]:
    """The (prefix, images, labels) pair that a single IDX file named by the user belongs to."""
    match = IDX_NAME.match(path.name)
    if match is None:
        raise DataError(f"{path}: not an IDX file name (expected '*-images-idx3-ubyte[.gz]').")
    prefix = match["prefix"].lower()
    for pair in find_pairs(path.parent):
        if pair[0] == prefix:
            return pair
    raise DataError(f"{path}: could not find the matching IDX partner file in {path.parent}.")


def read_idx(path: Path, *, magic: int, what: str) -> np.ndarray:
    """Read one IDX file (gzip or not) into an array of the shape its header gives.

    Parameters
    ----------
    path : Path
        The file; a ``.gz`` suffix means gzip-compressed.
    magic : int
        The expected magic number: 2051 for images (N, H, W), 2049 for labels (N,).
    what : str
        ``"images"`` or ``"labels"``, for error messages.

    Returns
    -------
    ndarray of uint8
        Shape ``(N, H, W)`` for images, ``(N,)`` for labels; writable.
    """
    compressed = path.suffix.lower() == ".gz"
    try:
        opener = gzip.open if compressed else open
        # What the file can hold at most: its size, or for gzip the most deflate can
        # expand it (1032:1), so a lying header is refused before anything is allocated.
        size = path.stat().st_size
        with opener(path, "rb") as fh:
            return _read_stream(
                fh, path, magic=magic, what=what, size=size, compressed=compressed
            )
    except DataError:
        raise
    except gzip.BadGzipFile as exc:
        raise DataError(
            f"{path}: expected a gzip-compressed IDX {what} file (the name ends in .gz), but "
            f"it is not valid gzip data ({exc}). Decompress it, or drop the .gz suffix if it "
            f"is plain IDX."
        ) from exc
    except (EOFError, zlib.error) as exc:
        raise DataError(
            f"{path}: the gzip data is truncated or corrupt ({exc}); expected a complete "
            f"gzip-compressed IDX {what} file. Download it again."
        ) from exc
    except OSError as exc:
        raise DataError(f"{path}: could not read the IDX {what} file ({exc}).") from exc


def _read_stream(
    fh: BinaryIO,
    path: Path,
    *,
    magic: int,
    what: str,
    size: int | None = None,
    compressed: bool = False,
) -> np.ndarray:
    head = fh.read(4)
    expected_ndim = magic & 0xFF
    if len(head) < 4:
        raise DataError(
            f"{path}: the IDX {what} file is too short to hold a header ({len(head)} bytes); "
            f"expected a 4-byte magic number {magic} followed by {expected_ndim} dimensions."
        )
    found = int.from_bytes(head, "big")
    if found != magic:
        raise DataError(
            f"{path}: wrong IDX magic number for a {what} file: expected {magic} "
            f"(0x{magic:08X}: unsigned bytes, {expected_ndim} dimension"
            f"{'s' if expected_ndim > 1 else ''}), found {found} (0x{found:08X})."
            + (" Are the images and labels files swapped?" if found in (2049, 2051) else "")
        )
    raw_dims = fh.read(4 * expected_ndim)
    if len(raw_dims) < 4 * expected_ndim:
        raise DataError(
            f"{path}: the IDX header is truncated; expected {expected_ndim} dimension sizes "
            f"after the magic number, found {len(raw_dims)} bytes."
        )
    dims = tuple(int(d) for d in np.frombuffer(raw_dims, dtype=">u4"))
    header = 4 + 4 * expected_ndim
    want = int(np.prod(dims, dtype=object))
    shape = " x ".join(str(d) for d in dims)
    if size is not None and header + want > size * (DEFLATE_MAX_RATIO if compressed else 1):
        holds = (
            f"its {size:,} gzip-compressed bytes can hold at most "
            f"{size * DEFLATE_MAX_RATIO:,}"
            if compressed
            else f"the file holds {size - header:,}"
        )
        raise DataError(
            f"{path}: the IDX header says {shape} = {want:,} bytes of {what} follow the "
            f"{header}-byte header, but {holds}. The file is truncated or its header is wrong."
        )
    if what == "images":
        # spooled to a temporary file and mapped (pipeline.spool): the pixels are never
        # all in memory
        check_image_shape(dims, source=str(path))
        with ImageSpool(dims[1:]) as spool:
            got = spool.read_from(fh, dims[0])
            extra = _rest(fh) if got == want else 0
            if got == want and not extra:
                return spool.finish()
    else:
        out = np.empty(dims, dtype=np.uint8)
        view = memoryview(out).cast("B") if out.size else memoryview(bytearray())
        got = 0
        while got < want:
            n = fh.readinto(view[got : got + CHUNK])
            if not n:
                break
            got += n
        extra = _rest(fh) if got == want else 0
    if got != want or extra:
        raise DataError(
            f"{path}: the IDX header says {shape} = {want:,} bytes of {what} follow the "
            f"{header}-byte header, but the file holds {got + extra:,}. The file is truncated "
            f"or its header is wrong."
        )
    return out


def _rest(fh: BinaryIO) -> int:
    """Bytes left in ``fh`` (read and counted a piece at a time)."""
    n = 0
    while piece := fh.read(CHUNK):
        n += len(piece)
    return n


def read_idx_pairs(pairs: list[tuple[str, Path, Path]], *, source: str) -> Dataset:
    """Load one or more (prefix, images, labels) IDX pairs as one dataset.

    Several pairs (``train`` + ``t10k``) are concatenated, training part first, and a
    ``split`` column records each sample's part.
    """
    images, labels, parts = [], [], []
    for prefix, img_path, lab_path in pairs:
        img = read_idx(img_path, magic=IMAGES_MAGIC, what="images")
        lab = read_idx(lab_path, magic=LABELS_MAGIC, what="labels")
        if img.shape[0] != lab.shape[0]:
            raise DataError(
                f"{img_path}: image and label counts differ: {img.shape[0]:,} images here but "
                f"{lab.shape[0]:,} labels in {lab_path.name}. Expected one label per image."
            )
        if images and img.shape[1:] != images[0].shape[1:]:
            raise DataError(
                f"{img_path}: images are {img.shape[1]}x{img.shape[2]} but those in "
                f"{pairs[0][1].name} are {images[0].shape[1]}x{images[0].shape[2]}; expected "
                f"one image size for the whole dataset."
            )
        images.append(img)
        labels.append(lab)
        parts.append(
            {"split": prefix, "images": img_path.name, "labels": lab_path.name, "n": len(lab)}
        )
    columns = None
    if len(pairs) > 1:
        split = np.repeat([p["split"] for p in parts], [p["n"] for p in parts])
        columns = pd.DataFrame({"split": split})
        all_images = stack_blocks(images)
        all_labels = np.concatenate(labels)
    else:
        all_images, all_labels = images[0], labels[0]
    return build_dataset(
        all_images, all_labels, source=source, fmt="idx", meta={"parts": parts}, columns=columns
    )
