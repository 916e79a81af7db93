"""NumPy ``.npz`` archives with an images array and a labels array.

Accepted key pairs (matched case-insensitively, first match wins): ``images``/``labels``,
``x``/``y``, and Keras' ``x_train``/``y_train`` (with ``x_test``/``y_test`` appended when
present, recorded in a ``split`` column). Optional keys: ``class_names`` (K strings) and
``sample_ids`` (N unique integers). Images may be flat ``(N, D)`` with D a perfect
square, ``(N, H, W)``, or ``(N, H, W, C)``; a trailing channel of size 1 is dropped.
The archive is read with ``allow_pickle=False``: an array that needs pickle is refused.
Images are streamed out of the archive into a memory-mapped temporary file
(:mod:`pipeline.spool`), a block at a time: uint8 pixels in one pass, other numeric
dtypes in two (the first finds the range that decides the conversion to uint8 for the
whole array, :class:`~pipeline.formats.common.PixelRange`; the second converts and spools
each block), so an archive larger than memory loads. Only Fortran-ordered arrays and
headers numpy reads in full (format 3.0) are read whole.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

from assay.pipeline.dataset import Dataset
from assay.pipeline.errors import DataError
from assay.pipeline.formats.common import PixelRange, build_dataset
from assay.pipeline.spool import BLOCK_BYTES, ImageSpool, stack_blocks

KEY_PAIRS = (("images", "labels"), ("x", "y"), ("x_train", "y_train"))


def read_npz(path: Path) -> Dataset:
    """Load an ``.npz`` archive; see the module docstring for the accepted layouts."""
    try:
        fh = open(path, "rb")  # closed below (np.load would leak it on bad input)
    except OSError as exc:
        raise DataError(f"{path}: could not be opened ({exc}).") from exc
    with fh:
        return _read_npz(fh, path)


def _check_archive(fh: BinaryIO, path: Path) -> None:
    """Refuse what is not a zip of ``.npy`` arrays, and arrays larger than their bytes.

    Runs before :func:`numpy.load`, which would otherwise take unknown bytes for a pickle
    and allocate whatever shape a member's header claims.
    """
    start = fh.read(4)
    fh.seek(0)
    if start == b"\x93NUM":
        return  # a single .npy array; refused below with its shape
    if not start.startswith(b"PK"):
        raise DataError(
            f"{path}: not a valid .npz: expected a NumPy .npz archive (a zip of .npy arrays, "
            f"as np.savez writes), but the file does not start like a zip archive "
            f"(first bytes {start!r})."
        )
    try:
        with zipfile.ZipFile(fh) as archive:
            members = archive.infolist()
            for info in members:
                if not info.filename.endswith(".npy"):
                    continue
                with archive.open(info) as member:
                    shape, _, dtype = _read_header(member)
                claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if claimed > info.file_size:
                    raise DataError(
                        f"{path}: array '{info.filename[:-4]}' claims shape {shape} of "
                        f"{dtype} ({claimed:,} bytes) but holds only {info.file_size:,} bytes; "
                        f"the archive is corrupt."
                    )
    except DataError:
        raise
    except ValueError as exc:  # a member's .npy header is malformed
        raise DataError(f"{path}: not a valid .npz: a member is not a .npy array ({exc}).") from exc
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error, NotImplementedError) as exc:
        raise DataError(
            f"{path}: not a valid .npz: expected a NumPy .npz archive (a zip of .npy arrays), "
            f"but it could not be read ({exc}). The file is truncated or corrupt."
        ) from exc
    finally:
        fh.seek(0)


def _read_npz(fh: BinaryIO, path: Path) -> Dataset:
    source = str(path)
    _check_archive(fh, path)
    try:
        archive = np.load(fh, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise _needs_pickle(path, None) from exc
        raise DataError(f"{path}: not a readable .npz archive ({exc}).") from exc
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
        raise DataError(
            f"{path}: expected a NumPy .npz archive (a zip of .npy arrays), but it could not "
            f"be read ({exc}). The file is truncated or not an .npz."
        ) from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(
            f"{path}: expected a .npz archive holding an images array and a labels array, "
            f"found a single array of shape {getattr(archive, 'shape', '?')} (an .npy file)."
        )
    with archive:
        keys = {k.lower(): k for k in archive.files}
        pair = next(((keys[a], keys[b]) for a, b in KEY_PAIRS if a in keys and b in keys), None)
        if pair is None:
            raise DataError(
                f"{path}: expected an images array and a labels array under the keys "
                f"'images'/'labels', 'x'/'y' or 'x_train'/'y_train'. Found keys "
                f"{sorted(archive.files)}."
            )
        meta: dict = {"keys": {"images": pair[0], "labels": pair[1]}}
        test_keys = (
            [keys["x_test"]]
            if pair[0].lower() == "x_train" and "x_test" in keys and "y_test" in keys
            else []
        )
        factor, notes = _conversion(archive, [pair[0], *test_keys], path)
        meta.update(notes)
        images = _images(archive, pair[0], path, factor)
        labels = _get(archive, pair[1], path)
        columns = None
        if test_keys:
            test_images = _images(archive, keys["x_test"], path, factor)
            test_labels = _get(archive, keys["y_test"], path)
            if test_images.shape[1:] != images.shape[1:]:
                raise DataError(
                    f"{path}: '{keys['x_test']}' holds images of shape {test_images.shape[1:]} "
                    f"but '{pair[0]}' holds {images.shape[1:]}; expected one shape for both."
                )
            if np.ndim(test_labels) != np.ndim(labels) or len(test_labels) != len(test_images):
                raise DataError(
                    f"{path}: image and label counts differ: '{keys['x_test']}' has "
                    f"{len(test_images)} images but '{keys['y_test']}' has "
                    f"{len(test_labels)} labels."
                )
            if len(labels) != len(images):
                raise DataError(
                    f"{path}: image and label counts differ: '{pair[0]}' has {len(images)} "
                    f"images but '{pair[1]}' has {len(labels)} labels."
                )
            n_train, n_test = len(images), len(test_images)
            images = (
                stack_blocks([images, test_images])
                if images.dtype == test_images.dtype == np.uint8
                else np.concatenate([images, test_images])
            )
            labels = np.concatenate([labels, test_labels])
            meta["keys"].update(test_images=keys["x_test"], test_labels=keys["y_test"])
            meta["splits"] = {"train": n_train, "test": n_test}
            columns = pd.DataFrame({"split": np.repeat(["train", "test"], [n_train, n_test])})
        class_names = None
        if "class_names" in keys:
            names = _get(archive, keys["class_names"], path)
            if names.ndim != 1:
                raise DataError(
                    f"{path}: 'class_names' must be a 1-D array of K names. Found shape "
                    f"{names.shape}."
                )
            class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist()]
        sample_ids = None
        if "sample_ids" in keys:
            sample_ids = _get(archive, keys["sample_ids"], path)
    if np.ndim(labels) >= 1 and len(labels) != len(images):
        raise DataError(
            f"{path}: image and label counts differ: '{pair[0]}' has {len(images)} images but "
            f"'{pair[1]}' has {len(labels)} labels. Expected one label per image."
        )
    return build_dataset(
        images,
        labels,
        class_names,
        source=source,
        fmt="npz",
        meta=meta,
        sample_ids=sample_ids,
        columns=columns,
    )


def _get(archive: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise _needs_pickle(path, key) from exc
        raise DataError(f"{path}: array '{key}' could not be read ({exc}).") from exc
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
        raise DataError(
            f"{path}: array '{key}' could not be read; the archive is truncated or corrupt ({exc})."
        ) from exc


def _needs_pickle(path: Path, key: str | None) -> DataError:
    what = f"array '{key}'" if key else "the file"
    return DataError(
        f"{path}: {what} can only be loaded with pickle (an object array or pickled Python "
        f"data), and assay never unpickles input because that can run arbitrary code. "
        f"Expected plain numeric arrays; save them with np.savez(images=..., labels=...) "
        f"from numeric numpy arrays."
    )


def _read_header(member: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of the ``.npy`` stream ``member``, which is left
    at the first byte of the data."""
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(member)
    return np.lib.format.read_array_header_2_0(member)


def _streamable(member: BinaryIO) -> tuple[tuple[int, ...], np.dtype] | None:
    """``(shape, dtype)`` of a C-ordered numeric image array whose data follows in
    ``member``, or ``None`` when it has to be read whole (Fortran order, no images)."""
    shape, fortran, dtype = _read_header(member)
    if dtype.kind in "biuf" and not fortran and len(shape) in (2, 3, 4) and min(shape) > 0:
        return tuple(int(s) for s in shape), dtype
    return None


def _member(archive: np.lib.npyio.NpzFile, key: str) -> BinaryIO:
    name = key + ".npy" if key + ".npy" in archive.zip.namelist() else key
    return archive.zip.open(name)


def _truncated(path: Path, key: str, shape: tuple[int, ...]) -> DataError:
    return DataError(
        f"{path}: array '{key}' claims shape {shape} but its data ends early; the archive "
        f"is truncated or corrupt."
    )


def _unreadable(path: Path, key: str, exc: Exception) -> DataError:
    return DataError(
        f"{path}: array '{key}' could not be read; the archive is truncated or corrupt ({exc})."
    )


def _blocks(member: BinaryIO, shape: tuple[int, ...], dtype: np.dtype, path: Path, key: str):
    """The array's images, :data:`~pipeline.spool.BLOCK_BYTES` of them at a time, each
    block a read-only view of one reused buffer (valid until the next is read)."""
    row = math.prod(shape[1:]) * dtype.itemsize
    per_block = max(1, BLOCK_BYTES // row)
    buf = memoryview(bytearray(per_block * row))
    for start in range(0, shape[0], per_block):
        want = min(per_block, shape[0] - start) * row
        got = 0
        while got < want:
            k = member.readinto(buf[got:want])
            if not k:
                raise _truncated(path, key, shape)
            got += k
        yield np.frombuffer(buf[:want], dtype=dtype).reshape(-1, *shape[1:])


def _conversion(
    archive: np.lib.npyio.NpzFile, keys: list[str], path: Path
) -> tuple[float | None, dict]:
    """The uint8 conversion shared by the image arrays under ``keys`` (a Keras archive's
    train and test images are scaled alike): ``(factor, notes)`` of
    :meth:`PixelRange.conversion` after a first pass over their blocks; ``(1.0, {})`` for
    uint8; ``(None, {})`` when one of them is read whole (the dataset builder converts)."""
    pixels: PixelRange | None = None
    key = keys[0]
    try:
        for key in keys:
            with _member(archive, key) as member:
                found = _streamable(member)
                if found is None:
                    return None, {}
                shape, dtype = found
                if pixels is None:
                    pixels = PixelRange(dtype, source=str(path))
                if dtype != pixels.dtype:
                    return None, {}
                if dtype == np.uint8:
                    continue
                for block in _blocks(member, shape, dtype, path, key):
                    pixels.add(block)
    except DataError:
        raise
    except ValueError:
        return None, {}  # a header numpy reads only in full (format 3.0)
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
        raise _unreadable(path, key, exc) from exc
    if pixels is None or pixels.dtype == np.uint8:
        return 1.0, {}
    return pixels.conversion()


def _images(
    archive: np.lib.npyio.NpzFile, key: str, path: Path, factor: float | None
) -> np.ndarray:
    """The images under ``key``, as ``(N, H, W[, C])``.

    With a ``factor`` (:func:`_conversion`), the array is streamed into a spool a block at
    a time (:mod:`pipeline.spool`) and converted to uint8 on the way; without, it is read
    whole and left as it is.
    """
    if factor is not None:
        try:
            with _member(archive, key) as member:
                found = _streamable(member)
                if found is not None:
                    shape, dtype = found
                    with ImageSpool(_image_shape(shape, path, key)) as spool:
                        if dtype == np.uint8:
                            if spool.read_from(member, shape[0]) != math.prod(shape):
                                raise _truncated(path, key, shape)
                        else:
                            for block in _blocks(member, shape, dtype, path, key):
                                converted = PixelRange.convert(block, factor)
                                spool.append(converted.reshape(len(block), *spool.image_shape))
                        return spool.finish()
        except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
            raise _unreadable(path, key, exc) from exc
    arr = _get(archive, key, path)
    target = _image_shape(arr.shape, path, key)
    return arr.reshape(arr.shape[0], *target)


def _image_shape(shape: tuple[int, ...], path: Path, key: str) -> tuple[int, ...]:
    """The image shape ``(H, W[, C])`` of an array of ``shape`` ``(N, D)``, ``(N, H, W)`` or
    ``(N, H, W, C)``: flat square images unfolded, a channel of size 1 dropped."""
    if len(shape) == 2:
        side = math.isqrt(shape[1])
        if side * side != shape[1] or side == 0:
            raise DataError(
                f"{path}: '{key}' holds flat images of {shape[1]} values, which is not a "
                f"square number; expected (N, H, W), (N, H, W, C), or (N, H*H) for square "
                f"images."
            )
        return (side, side)
    if len(shape) == 4 and shape[3] == 1:
        return tuple(shape[1:3])
    if len(shape) not in (3, 4):
        raise DataError(
            f"{path}: '{key}' must hold images of shape (N, H, W) or (N, H, W, C). Found "
            f"shape {shape}."
        )
    return tuple(shape[1:])
