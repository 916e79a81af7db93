"""CSV in the common ``label, pixel0 … pixelN`` layout (one image per row).

The first column is the integer class label, the remaining ``H*H`` columns are the pixels
of a square greyscale image in row-major order. A header row is optional: the first row is
a header when its first cell is not a number. Pixels written as whole numbers must lie in
0..255; pixels written with decimals may be in 0..1 (scaled by 255) or 0..255.

Parsing goes through pandas' C parser, :data:`BLOCK_BYTES` of float32 values at a time,
in two passes: the first checks every block and finds the pixels' range (whether they are
whole numbers, in 0..1 or in 0..255), which decides the conversion to uint8 for the whole
file; the second converts each block and appends it to an :class:`~pipeline.spool.ImageSpool`,
whose memory map becomes the dataset's images. So the reader holds one block of parsed
values, never the whole file's, at the cost of parsing the file twice. Only when the C
parser finds something wrong is the file read again line by line (and whole) to name the
first offending line, or to keep labels too large for float32 exact.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pandas as pd

from assay.pipeline.dataset import Dataset
from assay.pipeline.errors import DataError
from assay.pipeline.formats.common import build_dataset
from assay.pipeline.spool import ImageSpool

#: Bytes of float32 values parsed per block (pandas holds a few times this meanwhile).
BLOCK_BYTES = 4 << 20
#: Labels from this magnitude on are not exact in float32; such files take the slow path.
_FLOAT32_EXACT = 2**24


def read_csv(path: Path) -> Dataset:
    """Load a ``label, pixel0 … pixelN`` CSV file; see the module docstring."""
    source = str(path)
    first_row, first_line = _first_row(path)
    if first_row is None:
        raise DataError(
            f"{path}: the CSV file is empty; expected rows of 'label, pixel0 … pixelN'."
        )
    has_header = not _is_number(first_row[0])
    width = len(first_row)
    side = math.isqrt(max(width - 1, 0))
    if width < 2 or side * side != width - 1:
        raise DataError(
            f"{path}, line {first_line}: expected a label followed by the pixels of a square "
            f"image (1 + H*H columns, e.g. 1 + 784 for 28x28). Found {width} columns, and "
            f"{width - 1} is not a square number.{_separator_hint(first_row)}"
        )
    skip = first_line if has_header else first_line - 1
    meta = {"csv_header": has_header}
    streamed = _stream(path, skip=skip, width=width, side=side)
    if streamed is not None:
        pixels, labels, notes = streamed
        return build_dataset(pixels, labels, source=source, fmt="csv", meta={**notes, **meta})
    values = _parse_slow(path, width=width, has_header=has_header)
    if values.shape[0] == 0:
        raise DataError(f"{path}: the dataset is empty; the CSV has a header row but no data rows.")
    labels = values[:, 0]
    pixels = values[:, 1:].reshape(-1, side, side)
    if np.isfinite(pixels).all() and np.array_equal(pixels, np.round(pixels)):
        # Written as whole numbers: integer pixels, never scaled from 0..1.
        lo, hi = pixels.min(), pixels.max()
        pixels = pixels.astype(np.uint8 if 0 <= lo and hi <= 255 else np.int64)
    return build_dataset(pixels, labels, source=source, fmt="csv", meta=meta)


def _first_row(path: Path) -> tuple[list[str] | None, int]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            for row in reader:
                if row and any(cell.strip() for cell in row):
                    return row, reader.line_num
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: expected a UTF-8 text CSV file, but it holds binary or non-UTF-8 data "
            f"({exc})."
        ) from exc
    except csv.Error as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc}).") from exc
    return None, 0


def _separator_hint(row: list[str]) -> str:
    """A hint when the row looks separated by something other than commas."""
    text = ",".join(row)
    for sep, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "'|'")):
        if text.count(sep) >= 2:
            return (
                f" The values look separated by {name}; assay reads comma-separated files "
                f"only: convert it (e.g. pandas.read_csv(path, sep={sep!r}).to_csv(out, "
                f"index=False))."
            )
    if len(row) == 1 and len(text.split()) > 2:
        return " The values look separated by spaces; assay reads comma-separated files only."
    return ""


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _blocks(path: Path, *, skip: int, width: int):
    """pandas' C parser over the data rows, a block of float32 rows at a time."""
    return pd.read_csv(
        path,
        header=None,
        skiprows=skip,
        dtype=np.float32,
        na_filter=False,
        engine="c",
        skip_blank_lines=True,
        chunksize=max(64, BLOCK_BYTES // (4 * width)),
    )


def _scan(path: Path, *, skip: int, width: int) -> tuple[np.ndarray, float, float, bool] | None:
    """First pass: ``(labels, lowest pixel, highest pixel, all pixels whole)``, or ``None``
    when anything looks wrong (the slow path then explains)."""
    labels: list[np.ndarray] = []
    lo, hi, whole = math.inf, -math.inf, True
    try:
        with _blocks(path, skip=skip, width=width) as reader:
            for frame in reader:
                values = frame.to_numpy(dtype=np.float32)
                if values.shape[1] != width or not np.isfinite(values).all():
                    return None
                if np.abs(values[:, 0]).max() >= _FLOAT32_EXACT:
                    return None
                labels.append(values[:, 0].copy())
                px = values[:, 1:]
                lo, hi = min(lo, float(px.min())), max(hi, float(px.max()))
                whole = whole and bool(np.array_equal(px, np.round(px)))
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
    if not labels:
        return None
    return np.concatenate(labels), lo, hi, whole


def _stream(
    path: Path, *, skip: int, width: int, side: int
) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """Both passes (module docstring): ``(uint8 images mapped, labels, notes)`` or ``None``
    for the slow path, which also raises the errors of values outside 0..255."""
    scanned = _scan(path, skip=skip, width=width)
    if scanned is None:
        return None
    labels, lo, hi, whole = scanned
    if lo < 0 or hi > 255:
        return None
    if whole:  # written as whole numbers: integer pixels, never scaled from 0..1
        notes: dict = {}
        factor = 1.0
    else:
        notes = {"original_dtype": "float32", "original_range": [lo, hi]}
        factor = 255.0 if hi <= 1.0 else 1.0
        if factor != 1.0:
            notes["scaled_from_unit_range"] = True
    with ImageSpool((side, side)) as spool:
        with _blocks(path, skip=skip, width=width) as reader:
            for frame in reader:
                px = frame.to_numpy(dtype=np.float32)[:, 1:]
                px = px if factor == 1.0 else px * factor
                spool.append(np.rint(px).astype(np.uint8).reshape(-1, side, side))
        if spool.n != labels.size:
            raise DataError(
                f"{path}: the file changed while it was read ({labels.size} rows, then "
                f"{spool.n}); load it again once it is complete."
            )
        return spool.finish(), labels, notes


def _parse_slow(path: Path, *, width: int, has_header: bool) -> np.ndarray:
    """Parse line by line, raising a DataError that names the first bad line and cell."""
    rows: list[list[float]] = []
    seen_first = False
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        for row in reader:
            if not row or not any(cell.strip() for cell in row):
                continue
            line = reader.line_num
            if not seen_first:
                seen_first = True
                if has_header:
                    continue
            if len(row) != width:
                raise DataError(
                    f"{path}, line {line}: expected {width} values (a label and "
                    f"{width - 1} pixels) like the first row, found {len(row)}."
                )
            parsed = []
            for col, cell in enumerate(row):
                try:
                    parsed.append(float(cell))
                except ValueError:
                    what = "label" if col == 0 else f"pixel {col - 1}"
                    raise DataError(
                        f"{path}, line {line}, column {col + 1} ({what}): expected a number, "
                        f"found {cell!r}."
                    ) from None
            rows.append(parsed)
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), width)
