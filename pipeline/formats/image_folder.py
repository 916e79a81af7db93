"""An image folder with one sub-folder per class (``root/<class>/<image>``), read with Pillow.

Class names are the sub-folder names in sorted order; label ``i`` is the ``i``-th name.
Files are taken in sorted order within each class folder (sub-folders included). Any
format Pillow reads (PNG, JPEG, WebP, BMP, TIFF, GIF, …) of any size and mode is accepted.

Every image is brought to one shape, by this policy (recorded in the dataset's ``meta`` as
``size_policy``):

- **orientation**: the EXIF orientation tag is applied first (a phone photo taken upright
  stays upright);
- **size**: ``image_size=N`` gives ``N x N`` images; by default the dataset's typical size
  (the median height and the median width of the images), so a folder of one size stays
  exactly as it is, unless its longer side exceeds :data:`~pipeline.limits.DEFAULT_MAX_SIDE`
  (64 px): then both sides are scaled down by the same factor to that bound (a folder
  of 500 x 375 photos becomes 64 x 48). The models are laid out for 8 to 64 px a side,
  and at a photo's own size every CPU epoch would cost hours and the pixel array of a
  large folder tens of gigabytes; ``image_size=N`` asks for more explicitly. An
  image of another size is scaled (Lanczos) with its aspect ratio kept, then either
  padded to the target (``fit="pad"``, the default: nothing is cut off) or centre-cropped
  to it (``fit="crop"``: no borders). Images already at the target size are not
  resampled. The padding takes the image's own border colour (the per-channel
  median of its outermost pixels), so the bands continue the background: black bands
  would be a high-contrast frame that only the size policy drew, and images of the same
  aspect ratio would share it, which makes distinct images look alike to the
  near-duplicate search and puts a "low information" band into every padded image;
- **mode**: if any image is in colour the dataset is RGB ``(N, H, W, 3)`` and greyscale
  images are repeated over the three channels, otherwise greyscale ``(N, H, W)``. Alpha is
  dropped; CMYK, palette and other colour modes are converted to RGB; 16-bit images
  (``I;16``, ``I``) are scaled from 0..65535 to 0..255.

The manifest keeps, per sample, the file's ``path`` relative to ``root`` and its
``original_height``, ``original_width`` (after orientation) and ``original_mode``.

Files are decoded in parallel worker processes (``workers``; by default one per usable
core for folders of a few hundred files and more), with a progress bar on a terminal.
Each block of decoded images is written to a spool file as it arrives
(:mod:`pipeline.spool`), and the dataset's images are a read-only memory map of it, so
a folder larger than memory can be loaded.

A file that Pillow cannot read as an image is skipped with a :class:`DataWarning`, or
refused with ``strict=True``. Hidden files and folders (name starting with ``.``) are
ignored silently.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError

from assay.pipeline.dataset import Dataset
from assay.pipeline.errors import DataError
from assay.pipeline.formats.common import DataWarning, build_dataset
from assay.pipeline.limits import DEFAULT_MAX_SIDE, MIN_IMAGE_SIZE
from assay.pipeline.spool import ImageSpool

GREY_MODES = frozenset({"1", "L", "LA", "I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
FITS = ("pad", "crop")
MAX_LISTED = 20
#: Folders with fewer files than this are decoded in this process (workers cost a start-up).
PARALLEL_FROM = 512
CHUNK = 128
#: EXIF orientations that swap width and height (rotations by 90 or 270 degrees).
_TRANSPOSED = frozenset({5, 6, 7, 8})


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


@dataclass(frozen=True)
class _Header:
    """What a file's header says: size after orientation, mode; or why it is no image."""

    height: int = 0
    width: int = 0
    mode: str = ""
    error: str | None = None


def default_size(typical: tuple[int, int]) -> tuple[int, int]:
    """The ``(height, width)`` of a folder's images when no size is given: the typical
    size, both sides scaled by one factor so that the longer is at most
    :data:`~pipeline.limits.DEFAULT_MAX_SIDE` (neither below ``MIN_IMAGE_SIZE``)."""
    h, w = typical
    longer = max(h, w)
    if longer <= DEFAULT_MAX_SIDE:
        return h, w
    scale = DEFAULT_MAX_SIDE / longer
    return (max(MIN_IMAGE_SIZE, round(h * scale)), max(MIN_IMAGE_SIZE, round(w * scale)))


def _chosen(typical: tuple[int, int], target: tuple[int, int]) -> str:
    if tuple(target) == tuple(typical):
        return "typical (median height, width)"
    return (f"typical (median height, width) {typical[0]} x {typical[1]}, scaled to "
            f"{DEFAULT_MAX_SIDE} px on the longer side")  # fmt: skip


def read_image_folder(
    root: Path,
    *,
    strict: bool = False,
    image_size: int | None = None,
    fit: str = "pad",
    workers: int | None = None,
    progress: bool | None = None,
) -> Dataset:
    """Load ``root/<class>/<image>`` files into one policy-shaped dataset.

    Parameters
    ----------
    root : Path
        The image folder.
    strict : bool, keyword-only
        Refuse (instead of skip with a warning) files that are not readable images.
    image_size : int, optional, keyword-only
        Side of the square images of the dataset; default the typical size (see the
        module docstring).
    fit : {"pad", "crop"}, keyword-only
        Keep the aspect ratio by padding or by centre-cropping.
    workers : int, optional, keyword-only
        Decoding processes (1: in this process).
    progress : bool, optional, keyword-only
        Show a progress bar; default when stderr is a terminal.

    Raises
    ------
    DataError
        No class folders, a class folder with no images, pixel values outside 0..255 in a
        float image, or (with ``strict``) any file that is not a readable image.
    """
    if image_size is not None and (int(image_size) != image_size or not 1 <= image_size):
        raise DataError(f"`image_size` must be a positive integer. Got {image_size!r} instead.")
    if fit not in FITS:
        raise DataError(f"`fit` must be one of {FITS}. Got {fit!r} instead.")
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
    files: list[Path] = []
    file_labels: list[int] = []
    per_class: list[list[Path]] = []
    for label, class_dir in enumerate(class_dirs):
        found = sorted(p for p in class_dir.rglob("*") if p.is_file() and _visible(p, root))
        per_class.append(found)
        files += found
        file_labels += [label] * len(found)

    n_workers = _n_workers(len(files), workers)
    show = sys.stderr.isatty() if progress is None else bool(progress)
    not_images: dict[int, str] = {}  # file index -> why it is not an image
    with _pool(n_workers) as pool:
        headers = _map(pool, _read_headers, files, show=show, desc="image headers")
        good = [i for i, h in enumerate(headers) if h.error is None]
        for i, header in enumerate(headers):
            if header.error is not None:
                not_images[i] = _not_an_image(files[i], header.error, root, strict=strict)
        heights = np.array([headers[i].height for i in good], dtype=np.int64)
        widths = np.array([headers[i].width for i in good], dtype=np.int64)
        # (1, 1) when nothing is left to decode: the class check below refuses the folder
        typical = (int(np.median(heights)), int(np.median(widths))) if good else (1, 1)
        if image_size is not None:
            target = (int(image_size), int(image_size))
        else:
            target = default_size(typical)
        colour = any(headers[i].mode not in GREY_MODES for i in good)
        jobs = [(files[i], target, colour, fit) for i in good]
        # Each block of decoded images goes straight to the spool (see pipeline.spool),
        # in file order: the folder is never held in memory twice.
        spool = ImageSpool((*target, 3) if colour else target)
        keep: list[int] = []
        with spool:
            decoded = _imap(pool, _decode, jobs, show=show, desc="images")
            for first, results in decoded:
                block = []
                for i, result in zip(good[first : first + len(results)], results, strict=True):
                    if isinstance(result, _Refused):
                        raise DataError(result.message)
                    if isinstance(result, str):
                        not_images[i] = _not_an_image(files[i], result, root, strict=strict)
                    else:
                        block.append(result)
                        keep.append(i)
                if block:
                    spool.append(np.stack(block))
            images = spool.finish()
    skipped = [(p, "not inside a class folder") for p in stray]
    skipped += [(files[i], not_images[i]) for i in sorted(not_images)]
    labels_kept = {file_labels[i] for i in keep}
    for label, class_dir in enumerate(class_dirs):
        if label not in labels_kept:
            n = len(per_class[label])
            extra = f" ({n} file(s) there, none a readable image)" if n else ""
            raise DataError(
                f"{class_dir}: the class folder '{class_dir.name}' holds no images{extra}; "
                f"expected at least one PNG/JPEG image in every class folder. Remove the "
                f"folder or add images to it."
            )
    kept = np.isin(np.asarray(good), keep)
    heights, widths = heights[kept], widths[kept]
    good = keep

    modes = Counter(headers[i].mode for i in good)
    n_resized = int(np.sum((heights != target[0]) | (widths != target[1])))
    meta: dict[str, Any] = {
        "image_modes": dict(sorted(modes.items())),
        "size_policy": {
            "image_size": list(target),
            "chosen": "given" if image_size is not None else _chosen(typical, target),
            "typical_size": list(typical),
            "fit": fit,
            "pad_colour": "the image's border colour (per-channel median)",
            "colour": bool(colour),
            "exif_orientation": True,
            "n_resized": n_resized,
            "original_sizes": {
                "height": [int(heights.min()), int(heights.max())],
                "width": [int(widths.min()), int(widths.max())],
            },
        },
    }
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
    columns = pd.DataFrame(
        {
            "path": [files[i].relative_to(root).as_posix() for i in good],
            "original_height": heights.astype(np.int64),
            "original_width": widths.astype(np.int64),
            "original_mode": [headers[i].mode for i in good],
        }
    )
    return build_dataset(
        images,
        np.asarray([file_labels[i] for i in good], dtype=np.int64),
        [d.name for d in class_dirs],
        source=str(root),
        fmt="image_folder",
        meta=meta,
        columns=columns,
    )


# ----------------------------------------------------------------------------- workers
def _n_workers(n_files: int, workers: int | None) -> int:
    if workers is not None:
        if int(workers) < 1:
            raise DataError(f"`workers` must be >= 1. Got {workers!r} instead.")
        return int(workers)
    if n_files < PARALLEL_FROM:
        return 1
    return max(1, min(len(os.sched_getaffinity(0)), math.ceil(n_files / CHUNK)))


class _InProcess:
    """The in-process stand-in of a pool (one worker)."""

    def map(self, fn: Any, chunks: Any) -> Any:
        return map(fn, chunks)

    def __enter__(self) -> _InProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _pool(n_workers: int) -> Any:
    if n_workers <= 1:
        return _InProcess()
    # fork where the OS has it (as torch's DataLoader does on Linux): a worker starts in
    # milliseconds and imports nothing, where a spawned one re-imports the main program
    # (the CLI imports Prefect) first. The workers only run Pillow and numpy.
    method = "fork" if "fork" in get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(max_workers=n_workers, mp_context=get_context(method))


def _map(pool: Any, fn: Any, items: list[Any], *, show: bool, desc: str) -> list[Any]:
    """``fn`` over ``items`` in chunks on ``pool``, in order, with a progress bar."""
    out: list[Any] = []
    for _, part in _imap(pool, fn, items, show=show, desc=desc):
        out += part
    return out


def _imap(
    pool: Any, fn: Any, items: list[Any], *, show: bool, desc: str
) -> Iterator[tuple[int, list[Any]]]:
    """``fn`` over ``items`` in chunks on ``pool``: ``(index of the chunk's first item,
    its results)`` in order, as they finish, with a progress bar."""
    chunks = [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]
    from tqdm.auto import tqdm

    with tqdm(total=len(items), desc=desc, unit="file", disable=not show, leave=False) as bar:
        for k, part in enumerate(pool.map(fn, chunks)):
            yield k * CHUNK, part
            bar.update(len(part))


def _not_an_image(file: Path, why: str, root: Path, *, strict: bool) -> str:
    """``why``, for the skipped list, or (with ``strict``) the refusal."""
    if strict:
        raise DataError(
            f"{file}: expected only image files (PNG, JPEG, …) in the class "
            f"folders of {root}, but this file {why}. Remove it, or load "
            f"without --strict to skip it with a warning."
        )
    return why


def _read_headers(files: list[Path]) -> list[_Header]:
    return [_read_header(f) for f in files]


def _read_header(file: Path) -> _Header:
    """Size after EXIF orientation and mode, without decoding the pixels."""
    try:
        with Image.open(file) as img:
            w, h = img.size
            orientation = img.getexif().get(0x0112, 1)
            if orientation in _TRANSPOSED:
                w, h = h, w
            return _Header(height=int(h), width=int(w), mode=img.mode)
    except UnidentifiedImageError:
        return _Header(error="is not an image Pillow can identify")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return _Header(error=f"could not be decoded as an image ({exc})")


@dataclass(frozen=True)
class _Refused:
    """A readable image the folder must not hold (the message names the file)."""

    message: str


def _decode(
    jobs: list[tuple[Path, tuple[int, int], bool, str]],
) -> list[np.ndarray | str | _Refused]:
    """Per job: policy-shaped pixels, why the file is not an image, or a refusal."""
    out: list[np.ndarray | str | _Refused] = []
    for file, target, colour, fit in jobs:
        try:
            out.append(_decode_one(file, target, colour, fit))
        except DataError as exc:
            out.append(_Refused(str(exc)))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            out.append(f"could not be decoded as an image ({exc})")
    return out


def _decode_one(file: Path, target: tuple[int, int], colour: bool, fit: str) -> np.ndarray:
    with Image.open(file) as raw:
        img = ImageOps.exif_transpose(raw)
        img = _to_8bit(img, file)
        img = img.convert("RGB" if colour else "L")
        if (img.height, img.width) != target:
            img = _fit(img, target, fit)
        return np.asarray(img, dtype=np.uint8)


def _to_8bit(img: Image.Image, file: Path) -> Image.Image:
    """16-bit images scaled to 0..255; float images kept if they hold 0..255."""
    if img.mode in SIXTEEN_BIT_MODES:
        arr = np.asarray(img, dtype=np.float64) / 257.0
        return Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8), mode="L")
    if img.mode == "F":
        arr = np.asarray(img)
        if arr.size and (np.nanmin(arr) < 0 or np.nanmax(arr) > 255):
            raise DataError(
                f"{file}: pixel values must lie in 0..255; this float image holds values "
                f"from {np.nanmin(arr)} to {np.nanmax(arr)}. Convert it to 8-bit first."
            )
        return Image.fromarray(np.nan_to_num(arr).astype(np.uint8), mode="L")
    return img


def _fit(img: Image.Image, target: tuple[int, int], fit: str) -> Image.Image:
    """Scale keeping the aspect ratio, then pad (in the image's border colour) or
    centre-crop to ``target (H, W)``."""
    th, tw = target
    if fit == "pad":
        colour = border_colour(np.asarray(img))
        return ImageOps.pad(img, (tw, th), method=Image.Resampling.LANCZOS, color=colour)
    return ImageOps.fit(img, (tw, th), method=Image.Resampling.LANCZOS)


def border_colour(pixels: np.ndarray) -> int | tuple[int, ...]:
    """Per-channel median of an image's outermost rows and columns, ``(H, W[, C])`` uint8.

    Examples
    --------
    >>> img = np.full((4, 5), 200, np.uint8); img[1:3, 1:4] = 0
    >>> border_colour(img)
    200
    """
    edge = np.concatenate(
        [pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]], axis=0
    ).reshape(-1, *pixels.shape[2:])
    median = np.median(edge, axis=0).round().astype(int)
    return int(median) if median.ndim == 0 else tuple(int(v) for v in median)
