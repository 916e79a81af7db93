"""Load labelled image datasets in every supported format; save the canonical format.

Data specs accepted by :func:`load`
-----------------------------------
``digits``
    scikit-learn's bundled handwritten digits: 1,797 greyscale 8x8 images, 10 classes,
    rescaled from 0..16 to 0..255 (``meta["original_range"] == [0, 16]``).
``mnist``
    the MNIST IDX folder at :func:`default_mnist_path`.
a folder of IDX files
    ``*-images-idx3-ubyte[.gz]`` + ``*-labels-idx1-ubyte[.gz]`` (gzip or not); several
    pairs (``train`` + ``t10k``) are concatenated with a ``split`` column. A path to one of
    the files loads just that pair.
a ``.npz`` file
    keys ``images``/``labels``, ``x``/``y`` or Keras' ``x_train``/``y_train`` (+ ``x_test``
    /``y_test``); see :mod:`pipeline.formats.npz`.
a ``.csv`` file
    ``label, pixel0 … pixelN`` rows of square greyscale images, header optional.
an image folder
    one sub-folder per class holding PNG/JPEG images; see
    :mod:`pipeline.formats.image_folder`.
a dataset folder written by :func:`save`
    ``images.npy`` + ``manifest.parquet`` + ``dataset.json``.

The names ``digits`` and ``mnist`` always mean the built-in datasets; write ``./digits`` to
load a folder of that name. Whatever the format, the result is a validated
:class:`~pipeline.dataset.Dataset` (uint8 images, int64 labels, class names, sample ids,
meta with ``source`` and ``format``). Anything missing or malformed raises
:class:`~pipeline.errors.DataError` with a message that names the file and says what was
expected and what was found.

The canonical format
--------------------
::

    <folder>/
      images.npy        uint8 (N, H, W) or (N, H, W, C), C-contiguous
      manifest.parquet  sample_id, label, + every per-sample column, one row per image
      dataset.json      schema_version, class names, shape, counts, source, meta,
                        content_hash (see Dataset.content_hash)

Written atomically: built in a temporary sibling folder and renamed into place.
``images.npy`` is written a block of images at a time and memory-mapped read-only on load,
so opening a large dataset costs almost nothing until pixels are touched and a dataset
larger than memory can be read; the loaded ``images`` refuse writes (a stage that needs to
change pixels works on a copy, e.g. :meth:`Dataset.subset` or ``np.array(images)``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from assay.pipeline.atomic import atomic_dir, write_json
from assay.pipeline.chunks import chunk_slices
from assay.pipeline.dataset import Dataset
from assay.pipeline.errors import DataError
from assay.pipeline.formats import idx
from assay.pipeline.formats.common import DataWarning, build_dataset, check_labels
from assay.pipeline.formats.csv_file import read_csv
from assay.pipeline.formats.image_folder import read_image_folder
from assay.pipeline.formats.npz import read_npz
from assay.pipeline.limits import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, check_int

__all__ = [
    "FORMATS",
    "SCHEMA_VERSION",
    "DataWarning",
    "check_output_location",
    "default_mnist_path",
    "detect_format",
    "load",
    "save",
]

SCHEMA_VERSION = 1
FORMATS = ("digits", "idx", "npz", "csv", "image_folder", "assay")
DATASET_FILES = ("images.npy", "manifest.parquet", "dataset.json")
BUILTIN = ("digits", "mnist")

_EXPECTED = (
    "Expected 'digits', 'mnist', a folder of MNIST IDX files "
    "(*-images-idx3-ubyte[.gz] + *-labels-idx1-ubyte[.gz]), an .npz file, a .csv file "
    "('label, pixel0 … pixelN'), an image folder with one sub-folder per class, or a "
    "dataset folder written by assay (images.npy + manifest.parquet + dataset.json)."
)


def default_mnist_path() -> Path:
    """The MNIST IDX folder: ``$ASSAY_MNIST``, else ``<repo root>/../shared/data/mnist``.

    The path is returned whether or not it exists.
    """
    env = os.environ.get("ASSAY_MNIST")
    if env:
        return Path(env).expanduser()
    repo_root = Path(__file__).resolve().parents[1]
    return repo_root.parent / "shared" / "data" / "mnist"


def detect_format(spec: str | os.PathLike[str]) -> str:
    """The format :func:`load` would use for ``spec``, one of :data:`FORMATS`.

    Raises
    ------
    DataError
        The path does not exist, or is not in any supported format.
    """
    text = os.fspath(spec)
    if text == "digits":
        return "digits"
    path = default_mnist_path() if text == "mnist" else Path(text).expanduser()
    if not path.exists():
        if text == "mnist":
            raise DataError(
                f"{path}: the MNIST folder was not found. Point the ASSAY_MNIST environment "
                f"variable at a folder holding t10k-images-idx3-ubyte.gz and "
                f"t10k-labels-idx1-ubyte.gz, or pass the folder's path."
            )
        raise DataError(f"{path}: no such file or folder. {_EXPECTED}")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".npz":
            return "npz"
        if suffix == ".csv":
            return "csv"
        if idx.is_idx_name(path.name):
            return "idx"
        if path.name in DATASET_FILES:
            return "assay"
        kind = f"a '{suffix}' file" if suffix else "a file without a suffix"
        raise DataError(f"{path}: unknown data format ({kind}). {_EXPECTED}")
    if not path.is_dir():
        raise DataError(f"{path}: neither a regular file nor a folder. {_EXPECTED}")
    if (path / "dataset.json").exists():
        return "assay"
    if (path / "run.json").exists() and (path / "dataset").is_dir():
        raise DataError(
            f"{path}: this is an assay run folder, not a dataset. Expected a dataset folder; "
            f"pass {path / 'dataset'} (the ingested data) or {path / 'cleaned'} (the cleaned "
            f"data)."
        )
    children = [p for p in path.iterdir() if not p.name.startswith(".")]
    if not children:
        raise DataError(f"{path}: the folder is empty, so the dataset is empty. {_EXPECTED}")
    if any(idx.is_idx_name(p.name) for p in children if p.is_file()):
        return "idx"
    if any(p.is_dir() for p in children):
        return "image_folder"
    raise DataError(
        f"{path}: unknown data format: the folder holds files "
        f"({', '.join(sorted(p.name for p in children)[:5])}{', …' if len(children) > 5 else ''})"
        f" but no IDX files, no dataset.json and no class sub-folders. {_EXPECTED}"
    )


def _input_path(spec: str | os.PathLike[str]) -> Path | None:
    text = os.fspath(spec)
    if text == "digits":
        return None
    path = default_mnist_path() if text == "mnist" else Path(text).expanduser()
    return path.resolve() if path.exists() else None


def check_output_location(
    out: str | os.PathLike[str],
    inputs: tuple[str | os.PathLike[str] | None, ...] | list[str | os.PathLike[str] | None] = (),
    *,
    option: str = "output",
    kind: str = "folder",
) -> Path:
    """Refuse an output location that would write into the input data or over a file.

    Cheap (no data is read); call it before any work starts.

    Parameters
    ----------
    out : path
        Where a command will write: a run folder, a runs root, a dataset folder
        (``kind="folder"``) or one file (``kind="file"``).
    inputs : sequence of data specs or paths
        What the command reads (``None`` entries and the built-in ``digits`` are skipped).
    option : str
        How the user named ``out`` (e.g. ``"--run-dir"``), for the message.
    kind : {"folder", "file"}
        What ``out`` must be.

    Returns
    -------
    Path
        ``out``, absolute.

    Raises
    ------
    DataError
        ``out`` (or one of its parents) is an existing file where a folder is needed, ``out``
        is an existing folder where a file is needed, ``out`` is an input file, or ``out``
        lies inside an input folder (writing there would change the user's data).
    """
    if kind not in ("folder", "file"):
        raise ValueError(f"`kind` must be 'folder' or 'file'. Got {kind!r} instead.")
    path = Path(out).expanduser()
    for parent in (path, *path.parents):
        if parent.exists():
            if parent.is_dir():
                if parent == path and kind == "file":
                    raise DataError(
                        f"{path}: {option} must name a file to write; found a folder there."
                    )
                break
            if parent == path and kind == "file":
                break  # an existing file is replaced (atomically)
            raise DataError(
                f"{path}: {option} must name a folder (new or existing), but "
                f"{'it' if parent == path else parent} is an existing file. Choose another "
                f"path."
            )
    resolved = path.resolve()
    for spec in inputs:
        if spec is None:
            continue
        source = _input_path(spec)
        if source is None:
            continue
        if resolved == source or (source.is_dir() and resolved.is_relative_to(source)):
            where = "is the input" if resolved == source else f"lies inside the input {source}"
            raise DataError(
                f"{path}: {option} {where}; writing there would change the data being read. "
                f"Choose a location outside {source}."
            )
    return resolved


def load(
    spec: str | os.PathLike[str],
    *,
    strict: bool = False,
    image_size: int | None = None,
    image_fit: str = "pad",
) -> Dataset:
    """Load a labelled image dataset from a data spec.

    Parameters
    ----------
    spec : str or path
        ``"digits"``, ``"mnist"``, or a path to an IDX folder, ``.npz``, ``.csv``, image
        folder or assay dataset folder (see the module docstring).
    strict : bool, default False
        Refuse, instead of skipping with a :class:`DataWarning`, files in an image folder
        that are not readable images; for an assay dataset folder, also recompute the
        content hash and refuse the folder when it differs from ``dataset.json``.
    image_size : int, optional
        Image folders only: the side of the square images (default: the folder's typical
        size, at most 64 px on the longer side); see :mod:`pipeline.formats.image_folder`
        for the size policy. Refused for other formats, whose images are taken as they are.
    image_fit : {"pad", "crop"}, default "pad"
        Image folders only: keep the aspect ratio by padding in each image's border
        colour or by centre crop.

    Returns
    -------
    Dataset
        ``images`` uint8 ``(N, H, W)`` or ``(N, H, W, C)``; ``labels`` int64 ``(N,)`` in
        ``0..K-1``; ``class_names`` (K,); ``sample_ids`` int64 ``(N,)`` (the row index
        unless the input carries ids); ``meta`` with at least ``source`` and ``format``.

    Raises
    ------
    DataError
        The spec names nothing that exists, an unknown format, or malformed data.
    """
    fmt = detect_format(spec)
    text = os.fspath(spec)
    if image_size is not None:
        check_int("image_size", image_size, low=MIN_IMAGE_SIZE, high=MAX_IMAGE_SIZE)
        if fmt != "image_folder":
            raise DataError(
                f"{text}: --image-size resizes image folders only; this is a {fmt} dataset, "
                "whose images are taken as they are. Leave out --image-size."
            )
    if fmt == "digits":
        return _load_digits()
    path = default_mnist_path() if text == "mnist" else Path(text).expanduser()
    if fmt == "idx":
        if path.is_file():
            pairs = [idx.partner_of(path)]
        else:
            pairs = idx.find_pairs(path)
        return idx.read_idx_pairs(pairs, source=str(path))
    if fmt == "npz":
        return read_npz(path)
    if fmt == "csv":
        return read_csv(path)
    if fmt == "image_folder":
        return read_image_folder(path, strict=strict, image_size=image_size, fit=image_fit)
    return _load_assay(path.parent if path.is_file() else path, strict=strict)


def save(dataset: Dataset, path: str | os.PathLike[str]) -> Path:
    """Write ``dataset`` in the canonical format, atomically, and return the folder.

    Parameters
    ----------
    dataset : Dataset
        Images ``(N, H, W[, C])`` uint8, labels, ids, per-sample columns and meta.
    path : str or path
        The dataset folder to write. An existing dataset folder there (one holding
        ``dataset.json``) or an empty folder is replaced; any other existing folder or file
        is left alone and a :class:`DataError` is raised.

    Returns
    -------
    Path
        ``path``, now holding ``images.npy``, ``manifest.parquet`` and ``dataset.json``.
    """
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise DataError(f"{path}: expected a folder to write the dataset into; found a file.")
        if (
            any(not p.name.startswith(".") for p in path.iterdir())
            and not (path / "dataset.json").exists()
        ):
            raise DataError(
                f"{path}: refusing to replace a folder that is not an assay dataset (it holds "
                f"files but no dataset.json). Expected a new path, an empty folder, or a "
                f"dataset folder written by assay."
            )
    summary = dataset.summary()
    manifest = dataset.manifest()
    info: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "format": "assay",
        "shape": [len(dataset), *dataset.image_shape],
        "dtype": "uint8",
        **summary,
        "columns": {c: str(manifest[c].dtype) for c in manifest.columns},
        "files": list(DATASET_FILES),
        "source": dataset.meta.get("source"),
        "source_format": dataset.meta.get("format"),
        "meta": dataset.meta,
    }
    with atomic_dir(path) as tmp:
        write_images_npy(tmp / "images.npy", dataset.images)
        manifest.to_parquet(tmp / "manifest.parquet", index=False)
        write_json(tmp / "dataset.json", info)
    return path


def write_images_npy(path: Path, images: np.ndarray) -> None:
    """Write ``images`` as a ``.npy`` file, :data:`~pipeline.chunks.CHUNK_ROWS` rows at a time.

    The file is byte for byte what ``np.save`` writes for the C-ordered array, but a
    memory-mapped or non-contiguous ``images`` is never copied whole into memory.

    Parameters
    ----------
    path : Path
        The file to write (the caller makes the write atomic).
    images : ndarray
        uint8 ``(N, H, W)`` or ``(N, H, W, C)``.
    """
    header = np.lib.format.header_data_from_array_1_0(images)
    header["fortran_order"] = False
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        for rows in chunk_slices(images.shape[0]):
            fh.write(np.ascontiguousarray(images[rows]).data)


# ---------------------------------------------------------------------- readers kept here
def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    raw = np.asarray(bunch.images)  # (1797, 8, 8) float64 in 0..16
    images = np.round(raw * 255.0 / 16.0).astype(np.uint8)
    return build_dataset(
        images,
        np.asarray(bunch.target),
        [str(c) for c in bunch.target_names],
        source="sklearn.datasets.load_digits",
        fmt="digits",
        meta={
            "original_range": [0, 16],
            "original_dtype": str(raw.dtype),
            "rescaled": "round(v * 255 / 16)",
        },
    )


def _load_assay(folder: Path, *, strict: bool) -> Dataset:
    source = str(folder)
    missing = [name for name in DATASET_FILES if not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"{folder}: incomplete assay dataset folder: {', '.join(missing)} missing. "
            f"Expected images.npy, manifest.parquet and dataset.json, as written by assay."
        )
    try:
        info = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{folder / 'dataset.json'}: not valid JSON ({exc}).") from exc
    if not isinstance(info, dict) or "class_names" not in info or "shape" not in info:
        raise DataError(
            f"{folder / 'dataset.json'}: expected an object with at least 'class_names' and "
            f"'shape', as written by assay."
        )
    version = info.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise DataError(
            f"{folder / 'dataset.json'}: dataset schema version {version!r} is newer than this "
            f"assay understands (up to {SCHEMA_VERSION}); upgrade assay to read it."
        )
    try:
        images = np.load(folder / "images.npy", mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise DataError(
            f"{folder / 'images.npy'}: expected a uint8 .npy array of images ({exc})."
        ) from exc
    except OSError as exc:
        raise DataError(f"{folder / 'images.npy'}: could not be read ({exc}).") from exc
    if images.dtype != np.uint8 or list(images.shape) != list(info["shape"]):
        raise DataError(
            f"{folder / 'images.npy'}: expected uint8 images of shape {tuple(info['shape'])} "
            f"as dataset.json says; found {images.dtype} of shape {images.shape}."
        )
    try:
        manifest = pd.read_parquet(folder / "manifest.parquet")
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise DataError(
            f"{folder / 'manifest.parquet'}: not a readable Parquet table ({exc})."
        ) from exc
    absent = [c for c in ("sample_id", "label") if c not in manifest.columns]
    if absent or len(manifest) != images.shape[0]:
        raise DataError(
            f"{folder / 'manifest.parquet'}: expected {images.shape[0]} rows with columns "
            f"sample_id and label; found {len(manifest)} rows with columns "
            f"{list(manifest.columns)}."
        )
    labels, class_names = check_labels(
        manifest["label"].to_numpy(),
        images.shape[0],
        [str(c) for c in info["class_names"]],
        source=str(folder / "manifest.parquet"),
    )
    extra = manifest.drop(columns=["sample_id", "label"])
    # The stored meta is kept as saved: it describes where the data came from.
    dataset = Dataset.create(
        images,
        labels,
        class_names,
        sample_ids=manifest["sample_id"].to_numpy(),
        meta=info.get("meta") or {},
        columns=extra if len(extra.columns) else None,
        source=source,
    )
    counts = info.get("class_counts")
    found = dataset.class_counts().tolist()
    if isinstance(counts, dict) and [int(v) for v in counts.values()] != found:
        raise DataError(
            f"{folder / 'manifest.parquet'}: the labels give class counts "
            f"{found} but dataset.json records "
            f"{list(counts.values())}; the folder was changed after assay wrote it."
        )
    if strict and info.get("content_hash") and dataset.content_hash() != info["content_hash"]:
        raise DataError(
            f"{folder}: content hash mismatch: dataset.json records {info['content_hash'][:12]}… "
            f"but the files hash to {dataset.content_hash()[:12]}…; the folder was changed "
            f"after assay wrote it."
        )
    return dataset
