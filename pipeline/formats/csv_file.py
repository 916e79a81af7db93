"""CSV in the common ``label, pixel0 … pixelN`` layout (one image per row).

The first column is the integer class label, the remaining ``H*H`` columns are the pixels
of a square greyscale image in row-major order. A header row is optional: the first row is
a header when its first cell is not a number. Pixels written as whole numbers must lie in
0..255; pixels written with decimals may be in 0..1 (scaled by 255) or 0..255.

Parsing goes through pandas' C parser; only when that finds something wrong is the file
scanned again line by line to name the first offending line.
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
    values = _parse_fast(path, skip=first_line if has_header else first_line - 1, width=width)
    if values is None:
        values = _parse_slow(path, width=width, has_header=has_header)
    if values.shape[0] == 0:
        raise DataError(f"{path}: the dataset is empty; the CSV has a header row but no data rows.")
    labels = values[:, 0]
    pixels = values[:, 1:].reshape(-1, side, side)
    if np.isfinite(pixels).all() and np.array_equal(pixels, np.round(pixels)):
        # Written as whole numbers: integer pixels, never scaled from 0..1.
        lo, hi = pixels.min(), pixels.max()
        pixels = pixels.astype(np.uint8 if 0 <= lo and hi <= 255 else np.int64)
    return build_dataset(pixels, labels, source=source, fmt="csv", meta={"csv_header": has_header})


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


def _parse_fast(path: Path, *, skip: int, width: int) -> np.ndarray | None:
    """Parse with pandas; ``None`` when anything looks wrong (the slow path then explains)."""
    try:
        frame = pd.read_csv(
            path,
            header=None,
            skiprows=skip,
            dtype=np.float32,
            na_filter=False,
            engine="c",
            skip_blank_lines=True,
        )
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
    if frame.shape[1] != width:
        return None
    values = frame.to_numpy(dtype=np.float32)
    if np.isnan(values).any():
        return None
    if values.shape[0] and np.abs(values[:, 0]).max() >= 2**24:
        return None  # labels too large for float32; the slow path keeps them exact
    return values


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
