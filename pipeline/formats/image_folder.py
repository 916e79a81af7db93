"""An image folder with one sub-folder per class (``root/<class>/<image>``), read with Pillow.

Class names are the sub-folder names in sorted order; label ``i`` is the ``i``-th name.
Files are taken in sorted order within each class folder (sub-folders included), and
their paths relative to ``root`` go into a ``path`` column. Greyscale images (Pillow modes
``1``, ``L``, ``LA``) become ``(H, W)``; colour images (``RGB``, ``RGBA``, ``P``, ``CMYK``, …)
become ``(H, W, 3)``, alpha dropped. Every image must have the same shape.

A file that Pillow cannot read as an image is skipped with a :class:`DataWarning`, or
refused with ``strict=True``. Hidden files and folders (name starting with ``.``) are
ignored silently.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from assay.pipeline.dataset import Dataset
from assay.pipeline.errors import DataError
from assay.pipeline.formats.common import DataWarning, build_dataset

GREY_MODES = frozenset({"1", "L", "LA"})
COLOUR_MODES = frozenset({"RGB", "RGBA", "RGBX", "RGBa", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"})
MAX_LISTED = 20


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def read_image_folder(root: Path, *, strict: bool = False) -> Dataset:
    """Load ``root/<class>/<image>`` files; see the module docstring.

    Raises
    ------
    DataError
        No class folders, a class folder with no images, mixed image shapes, pixel values
        outside 0..255, or (with ``strict``) any file that is not a readable image.
    """
    entries = sorted(p for p in root.iterdir() if _visible(p, root))
    class_dirs = [p for p in entries if p.is_dir()]
    stray = [p for p in entries if not p.is_dir()]
    if not class_dirs:
        raise DataError(
            f"{root}: expected an image folder with one sub-folder per class "
            f"(e.g. {root.name}/cat/001.png); found no sub-folders."
        )
    if strict and stray:
        raise DataError(
            f"{stray[0]}: expected only class sub-folders at the top of the image folder "
            f"{root}, found this file. Remove it, or load without --strict to skip it."
        )
    skipped: list[tuple[Path, str]] = [(p, "not inside a class folder") for p in stray]
    images: list[np.ndarray] = []
    labels: list[int] = []
    paths: list[str] = []
    modes: Counter[str] = Counter()
    reference: tuple[Path, tuple[int, ...]] | None = None
    for label, class_dir in enumerate(class_dirs):
        files = sorted(p for p in class_dir.rglob("*") if p.is_file() and _visible(p, root))
        n_before = len(images)
        for file in files:
            try:
                arr, mode = _read_image(file)
            except _NotAnImage as exc:
                if strict:
                    raise DataError(
                        f"{file}: expected only image files (PNG, JPEG, …) in the class "
                        f"folders of {root}, but this file {exc.reason}. Remove it, or load "
                        f"without --strict to skip it with a warning."
                    ) from exc.__cause__
                skipped.append((file, exc.reason))
                continue
            if reference is None:
                reference = (file, arr.shape)
            elif arr.shape != reference[1]:
                raise DataError(
                    f"{file}: mixed image shapes in {root}: this image is "
                    f"{_describe(arr.shape)} but {reference[0].relative_to(root)} is "
                    f"{_describe(reference[1])}. Expected every image to have the same size "
                    f"and colour mode; resize or convert them first."
                )
            images.append(arr)
            labels.append(label)
            paths.append(file.relative_to(root).as_posix())
            modes[mode] += 1
        if len(images) == n_before:
            extra = f" ({len(files)} file(s) there, none a readable image)" if files else ""
            raise DataError(
                f"{class_dir}: the class folder '{class_dir.name}' holds no images{extra}; "
                f"expected at least one PNG/JPEG image in every class folder. Remove the "
                f"folder or add images to it."
            )
    meta: dict = {"image_modes": dict(sorted(modes.items()))}
    if skipped:
        meta["n_skipped"] = len(skipped)
        meta["skipped_files"] = [
            {"path": p.relative_to(root).as_posix(), "reason": why} for p, why in skipped
        ][:MAX_LISTED]
        listed = "; ".join(f"{p.relative_to(root).as_posix()} ({why})" for p, why in skipped[:5])
        more = f"; and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        warnings.warn(
            f"{root}: skipped {len(skipped)} file(s) that are not images in a class folder: "
            f"{listed}{more}. Use --strict to refuse such folders instead.",
            DataWarning,
            stacklevel=3,
        )
    return build_dataset(
        np.stack(images),
        np.asarray(labels, dtype=np.int64),
        [d.name for d in class_dirs],
        source=str(root),
        fmt="image_folder",
        meta=meta,
        columns=pd.DataFrame({"path": paths}),
    )


class _NotAnImage(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _read_image(file: Path) -> tuple[np.ndarray, str]:
    """Pixels of one image file, (H, W) uint8 for greyscale or (H, W, 3) for colour."""
    try:
        with Image.open(file) as img:
            mode = img.mode
            if mode in GREY_MODES:
                arr = np.asarray(img.convert("L"))
            elif mode in COLOUR_MODES:
                arr = np.asarray(img.convert("RGB"))
            else:  # 16-bit and float greyscale: keep the values, refused later if > 255
                arr = np.asarray(img)
    except UnidentifiedImageError as exc:
        raise _NotAnImage("is not an image Pillow can identify") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise _NotAnImage(f"could not be decoded as an image ({exc})") from exc
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise DataError(
                f"{file}: pixel values must lie in 0..255; this {mode} image holds values "
                f"from {arr.min()} to {arr.max()}. Convert it to 8-bit first."
            )
        arr = arr.astype(np.uint8)
    return arr, mode


def _describe(shape: tuple[int, ...]) -> str:
    if len(shape) == 2:
        return f"{shape[0]}x{shape[1]} greyscale"
    return f"{shape[0]}x{shape[1]} with {shape[2]} channels"
