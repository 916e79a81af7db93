"""What dirt to inject: the typed :class:`InjectionConfig`, the named presets, and
:func:`resolve`, which turns a preset name, a dict or a JSON/TOML file into a config.

Every kind of dirt has its own rate. A rate is a fraction of the *original* dataset size
``N``; the number of samples that receive that kind is exactly ``round(rate * N)``
(rounded half up), never a coin flip per sample, so a benchmark knows its ground truth.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from assay.pipeline.errors import DataError

LabelNoiseMode = Literal["symmetric", "asymmetric", "matrix"]
LABEL_NOISE_MODES: tuple[str, ...] = ("symmetric", "asymmetric", "matrix")

#: Image corruptions, in the order they are allocated.
CORRUPTION_KINDS: tuple[str, ...] = (
    "gaussian_noise",
    "salt_pepper",
    "blank",
    "inverted",
    "blur",
    "occlusion",
    "rotate_shift",
)
#: Duplicate kinds: appended as new samples.
DUPLICATE_KINDS: tuple[str, ...] = ("exact_duplicate", "near_duplicate")
#: Every value the manifest column ``injected`` can take, ``"clean"`` first.
KINDS: tuple[str, ...] = ("clean", "label_noise", *CORRUPTION_KINDS, "ood", *DUPLICATE_KINDS)
#: Injected kinds (everything but ``"clean"``) -> the config field holding its rate.
RATE_FIELDS: dict[str, str] = {
    "label_noise": "label_noise",
    **{kind: kind for kind in CORRUPTION_KINDS},
    "ood": "ood",
    "exact_duplicate": "exact_duplicates",
    "near_duplicate": "near_duplicates",
}

#: Classic asymmetric flips for handwritten digits (Patrini et al., 2017), by class name.
DIGIT_PAIRS: tuple[tuple[str, str], ...] = (
    ("2", "7"),
    ("3", "8"),
    ("5", "6"),
    ("6", "5"),
    ("7", "1"),
)

PairItem = int | str
TransitionMatrix = str | tuple[tuple[float, ...], ...] | None


def _fmt(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _check_rate(name: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(float(value))
        or not 0.0 <= float(value) < 1.0
    ):
        raise DataError(f"`{name}` must be in [0, 1). Got {_fmt(value)} instead.")
    return float(value)


def load_transition_matrix(source: str | os.PathLike | np.ndarray | Sequence) -> np.ndarray:
    """Load and check a row-stochastic label transition matrix.

    Parameters
    ----------
    source : path, array-like
        A ``.npy`` file (read with ``allow_pickle=False``), a ``.csv`` file (comma
        separated, no header), a ``.json`` file (a list of rows, or an object with key
        ``"matrix"``), or the matrix itself. ``T[i, j]`` is the probability that a sample
        of true class ``i`` is given label ``j``.

    Returns
    -------
    np.ndarray
        float64 ``(K, K)``, non-negative, finite, every row summing to 1.

    Raises
    ------
    DataError
        If the file is missing or unreadable, or the matrix is not square, not finite,
        has negative entries, or a row that does not sum to 1.
    """
    where = "`transition_matrix`"
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        where = f"{path}"
        if not path.is_file():
            raise DataError(
                f"{path}: transition matrix file not found; expected a .npy, .csv or .json "
                "file holding a K x K row-stochastic matrix."
            )
        suffix = path.suffix.lower()
        try:
            if suffix == ".npy":
                raw: Any = np.load(path, allow_pickle=False)
            elif suffix == ".csv":
                raw = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
            elif suffix == ".json":
                raw = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(raw, dict):
                    if "matrix" not in raw:
                        raise DataError(
                            f"{path}: expected a list of rows or an object with key "
                            f"'matrix'. Got keys {sorted(raw)} instead."
                        )
                    raw = raw["matrix"]
            else:
                raise DataError(
                    f"{path}: unknown transition matrix format {suffix!r}; expected .npy, "
                    ".csv or .json."
                )
        except DataError:
            raise
        except (OSError, ValueError, json.JSONDecodeError) as exc:
            raise DataError(
                f"{path}: could not read a transition matrix ({exc}); expected a K x K "
                "row-stochastic matrix of numbers."
            ) from exc
    else:
        raw = source
    try:
        matrix = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"{where}: the transition matrix must be a K x K matrix of numbers ({exc})."
        ) from exc
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 2:
        raise DataError(
            f"{where}: the transition matrix must be square K x K with K >= 2. "
            f"Got shape {matrix.shape} instead."
        )
    if not np.all(np.isfinite(matrix)):
        raise DataError(f"{where}: the transition matrix must be finite. Got NaN or inf.")
    if np.any(matrix < 0):
        raise DataError(
            f"{where}: the transition matrix must be non-negative. "
            f"Got minimum {matrix.min():g} instead."
        )
    sums = matrix.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > 1e-6)
    if bad.size:
        raise DataError(
            f"{where}: every row of the transition matrix must sum to 1. "
            f"Row {int(bad[0])} sums to {sums[bad[0]]:g} instead."
        )
    return matrix


@dataclass(frozen=True)
class InjectionConfig:
    """How much of each kind of dirt to inject. Every rate is a fraction of ``N``.

    Parameters
    ----------
    label_noise : float
        Fraction of samples whose label is changed to another class.
    label_noise_mode : {"symmetric", "asymmetric", "matrix"}
        ``"symmetric"``: the new label is a uniformly chosen *other* class.
        ``"asymmetric"``: class ``a`` becomes class ``b`` for each pair in ``pairs``; only
        samples of a source class are flipped. ``"matrix"``: the new label of a sample of
        class ``i`` is drawn from row ``i`` of ``transition_matrix`` with the diagonal
        left out, and samples are picked with weight ``1 - T[i, i]``, so rows keep their
        relative flip rates and every picked sample really changes class.
    pairs : tuple of (source, target) or None
        Asymmetric flips. Items are class names (str) or class indices (int). ``None``:
        the classic digit pairs 2->7, 3->8, 5->6, 6->5, 7->1 when the class names are
        digits, else the cycle ``i -> i + 1 (mod K)``.
    transition_matrix : str or tuple of tuples or None
        For ``"matrix"`` mode: a path to a ``.npy``/``.csv``/``.json`` file or the
        ``(K, K)`` row-stochastic matrix itself (arrays are stored as nested tuples).
    gaussian_noise, salt_pepper, blank, inverted, blur, occlusion, rotate_shift : float
        Fractions of samples receiving each image corruption.
    ood : float
        Fraction of samples replaced by out-of-distribution images (strokes, textures,
        smooth blobs, shapes) that belong to no class; they get a random label and
        ``true_label = -1``.
    exact_duplicates, near_duplicates : float
        Fractions of ``N`` appended as byte-equal copies / slightly shifted or noised
        copies of distinct clean originals.

    Raises
    ------
    DataError
        A rate outside [0, 1), rates summing to more than 1, an unknown mode, malformed
        pairs, or a transition matrix that is missing or not row-stochastic.
    """

    label_noise: float = 0.0
    label_noise_mode: LabelNoiseMode = "symmetric"
    pairs: tuple[tuple[PairItem, PairItem], ...] | None = None
    transition_matrix: TransitionMatrix = None
    gaussian_noise: float = 0.0
    salt_pepper: float = 0.0
    blank: float = 0.0
    inverted: float = 0.0
    blur: float = 0.0
    occlusion: float = 0.0
    rotate_shift: float = 0.0
    ood: float = 0.0
    exact_duplicates: float = 0.0
    near_duplicates: float = 0.0
    _matrix: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name in RATE_FIELDS.values():
            set_(self, name, _check_rate(name, getattr(self, name)))
        total = self.total_rate
        if total > 1.0 + 1e-9:
            raise DataError(f"The injection rates must sum to at most 1. Got {total:g} instead.")
        if self.label_noise_mode not in LABEL_NOISE_MODES:
            raise DataError(
                f"`label_noise_mode` must be one of {', '.join(map(repr, LABEL_NOISE_MODES))}. "
                f"Got {_fmt(self.label_noise_mode)} instead."
            )
        if self.pairs is not None:
            set_(self, "pairs", _normalise_pairs(self.pairs))
            if self.label_noise_mode != "asymmetric":
                raise DataError(
                    "`pairs` is only used with label_noise_mode='asymmetric'. "
                    f"Got label_noise_mode={self.label_noise_mode!r} instead."
                )
        tm = self.transition_matrix
        if tm is not None:
            if self.label_noise_mode != "matrix":
                raise DataError(
                    "`transition_matrix` is only used with label_noise_mode='matrix'. "
                    f"Got label_noise_mode={self.label_noise_mode!r} instead."
                )
            if isinstance(tm, str | os.PathLike):
                set_(self, "transition_matrix", os.fspath(tm))
                matrix = load_transition_matrix(tm)
            else:
                matrix = load_transition_matrix(tm)
                set_(self, "transition_matrix", tuple(tuple(map(float, r)) for r in matrix))
            matrix.setflags(write=False)
            set_(self, "_matrix", matrix)
        elif self.label_noise_mode == "matrix" and self.label_noise > 0:
            raise DataError(
                "label_noise_mode='matrix' needs `transition_matrix` (a path to a .npy, .csv "
                "or .json file, or a K x K array). Got None instead."
            )

    # ------------------------------------------------------------------ helpers
    @property
    def total_rate(self) -> float:
        """Sum of all rates: the fraction of ``N`` that is touched."""
        return float(sum(getattr(self, name) for name in RATE_FIELDS.values()))

    @property
    def matrix(self) -> np.ndarray | None:
        """The loaded transition matrix ``(K, K)`` (read-only), or ``None``."""
        return self._matrix

    def rates(self) -> dict[str, float]:
        """Injected kind (as written in the ``injected`` column) -> rate."""
        return {kind: getattr(self, name) for kind, name in RATE_FIELDS.items()}

    def counts(self, n: int) -> dict[str, int]:
        """Exact number of samples per kind for a dataset of ``n`` originals.

        ``floor(rate * n + 0.5)``: ``round(rate * n)`` with halves rounded up.
        """
        return {kind: int(math.floor(rate * n + 0.5)) for kind, rate in self.rates().items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of the fields (tuples become lists)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if not f.init:
                continue
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = [list(v) if isinstance(v, tuple) else v for v in value]
            out[f.name] = value
        return out

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if f.init)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, base_dir: Path | None = None) -> InjectionConfig:
        """Build a config from a mapping of fields.

        An optional ``"preset"`` key names a preset whose fields are the starting point;
        the other keys override them. A relative ``transition_matrix`` path is taken
        relative to ``base_dir`` when given.
        """
        if not isinstance(data, Mapping):
            raise DataError(
                f"An injection config must be a mapping of fields. Got {type(data).__name__}."
            )
        data = dict(data)
        valid = cls.field_names()
        unknown = sorted(k for k in data if k not in valid and k != "preset")
        if unknown:
            raise DataError(
                f"Unknown injection config key(s) {unknown}; valid keys are "
                f"{', '.join(('preset', *valid))}."
            )
        start: dict[str, Any] = {}
        if "preset" in data:
            start = preset_fields(data.pop("preset"))
        start.update(data)
        tm = start.get("transition_matrix")
        if isinstance(tm, str) and base_dir is not None and not Path(tm).is_absolute():
            start["transition_matrix"] = str(base_dir / tm)
        if isinstance(start.get("pairs"), Mapping):
            start["pairs"] = tuple(start["pairs"].items())
        return cls(**start)


def _normalise_pairs(pairs: Any) -> tuple[tuple[PairItem, PairItem], ...]:
    if isinstance(pairs, Mapping):
        pairs = list(pairs.items())
    try:
        items = [tuple(p) for p in pairs]
    except TypeError as exc:
        raise DataError(
            f"`pairs` must be a list of (source, target) class pairs. Got {pairs!r} instead."
        ) from exc
    out: list[tuple[PairItem, PairItem]] = []
    for p in items:
        if len(p) != 2 or not all(
            isinstance(v, str) or (isinstance(v, numbers.Integral) and not isinstance(v, bool))
            for v in p
        ):
            raise DataError(
                "`pairs` must be a list of (source, target) pairs of class names or indices. "
                f"Got {p!r} instead."
            )
        out.append(tuple(v if isinstance(v, str) else int(v) for v in p))  # type: ignore[misc]
    if not out:
        raise DataError("`pairs` must hold at least one (source, target) pair. Got none.")
    return tuple(out)


def _spread(total: float, kinds: Sequence[str]) -> dict[str, float]:
    each = total / len(kinds)
    return {kind: each for kind in kinds}


_CORRUPT_AND_OOD = (*CORRUPTION_KINDS, "ood")

#: Named configs for demos and benchmarks.
PRESETS: dict[str, InjectionConfig] = {
    "none": InjectionConfig(),
    "labels-10": InjectionConfig(label_noise=0.10),
    "labels-20": InjectionConfig(label_noise=0.20),
    "labels-30": InjectionConfig(label_noise=0.30),
    "labels-50": InjectionConfig(label_noise=0.50),
    "labels-asym-20": InjectionConfig(label_noise=0.20, label_noise_mode="asymmetric"),
    "corrupt-5": InjectionConfig(**_spread(0.05, _CORRUPT_AND_OOD)),
    "duplicates-5": InjectionConfig(exact_duplicates=0.025, near_duplicates=0.025),
    "mixed-mild": InjectionConfig(
        label_noise=0.08,
        **_spread(0.03, _CORRUPT_AND_OOD),
        exact_duplicates=0.01,
        near_duplicates=0.01,
    ),
    "mixed-heavy": InjectionConfig(
        label_noise=0.25,
        **_spread(0.08, _CORRUPT_AND_OOD),
        exact_duplicates=0.02,
        near_duplicates=0.02,
    ),
}


def preset_fields(name: Any) -> dict[str, Any]:
    """The fields of preset ``name`` as a dict (DataError when unknown)."""
    if not isinstance(name, str) or name not in PRESETS:
        raise DataError(
            f"Unknown injection preset {_fmt(name)}; valid presets are {', '.join(PRESETS)}."
        )
    cfg = PRESETS[name]
    return {f: getattr(cfg, f) for f in InjectionConfig.field_names()}


def _load_file(path: Path) -> InjectionConfig:
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
        else:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{path}: could not read the injection config ({exc}); expected a "
            f"{'JSON object' if suffix == '.json' else 'TOML table'} of config fields."
        ) from exc
    if isinstance(data, dict) and set(data) == {"injection"}:
        data = data["injection"]
    if not isinstance(data, dict):
        raise DataError(
            f"{path}: expected an object of injection config fields. "
            f"Got {type(data).__name__} instead."
        )
    try:
        return InjectionConfig.from_dict(data, base_dir=path.parent)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from exc


def resolve(
    config_or_preset: InjectionConfig | str | os.PathLike | Mapping[str, Any],
) -> InjectionConfig:
    """Turn what a user gave into an :class:`InjectionConfig`.

    Parameters
    ----------
    config_or_preset : InjectionConfig, str, path or dict
        A config (returned as is), a preset name from :data:`PRESETS`, a mapping of
        config fields (optionally with ``"preset"`` as the base), or a path to a
        ``.json``/``.toml`` file holding such fields (at the top level or in an
        ``injection`` table).

    Raises
    ------
    DataError
        Unknown preset, unknown key, missing file, or an invalid value.
    """
    if isinstance(config_or_preset, InjectionConfig):
        return config_or_preset
    if isinstance(config_or_preset, Mapping):
        return InjectionConfig.from_dict(config_or_preset)
    if isinstance(config_or_preset, str) and config_or_preset in PRESETS:
        return PRESETS[config_or_preset]
    if isinstance(config_or_preset, str | os.PathLike):
        path = Path(config_or_preset)
        if path.suffix.lower() in (".json", ".toml"):
            if not path.is_file():
                raise DataError(
                    f"{path}: injection config file not found; expected a .json or .toml "
                    "file of config fields."
                )
            return _load_file(path)
        raise DataError(
            f"Unknown injection preset {_fmt(os.fspath(config_or_preset))}; valid presets are "
            f"{', '.join(PRESETS)}, or give a path to a .json/.toml file of config fields."
        )
    raise DataError(
        "An injection config must be an InjectionConfig, a preset name, a dict or a path. "
        f"Got {type(config_or_preset).__name__} instead."
    )
