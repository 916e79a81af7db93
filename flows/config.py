"""Every parameter of one pipeline run, validated once, from a file and the command line.

A run is described by a :class:`RunConfig`. It is built from defaults, then a YAML, TOML or
JSON file (``--config FILE``), then command-line overrides, and validated by pydantic with
unknown keys refused. Every problem is reported as a :class:`pipeline.errors.DataError` whose
message names the offending key::

    config.yaml: unknown key 'stepz'. Allowed keys: data, strict, inject, ...
    config.yaml: `steps` must be an integer >= 1. Got 'many' instead.

Example file (YAML)::

    data: ../shared/data/mnist
    inject: mixed-mild
    policy: relabel
    steps: 2000
    runner: dask
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from assay.pipeline.errors import DataError
from assay.pipeline.limits import (
    MAX_FOLDS,
    MAX_IMAGE_SIZE,
    MAX_SEEDS,
    MAX_STEPS,
    MIN_FOLDS,
    MIN_IMAGE_SIZE,
    MIN_STEPS,
)
from assay.pipeline.stages.base import DetectParams, GenerateParams

#: The stages of a run, in order. ``until`` stops after one of them.
STAGES: tuple[str, ...] = ("ingest", "validate", "detect", "clean", "generate", "report")

Stage = Literal["ingest", "validate", "detect", "clean", "generate", "report"]

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class RunConfig(BaseModel):
    """Parameters of one run of the assay pipeline.

    Parameters
    ----------
    data : str
        Dataset spec: ``digits``, an MNIST IDX folder, ``.npz``, ``.csv``, an image folder
        or an assay dataset folder.
    strict : bool
        Refuse non-image files in image folders instead of skipping them.
    image_size : int or None
        Side (8..1024) of the square images an image folder is scaled to; ``None`` takes
        the folder's typical size, at most 64 px on the longer side. Other formats are
        taken as they are.
    image_fit : {"pad", "crop"}
        How an image folder's scaling keeps the aspect ratio: padding in each image's
        border colour or centre crop.
    inject : str or None
        Injection preset name (or a JSON/TOML injection config file) applied after loading,
        so the run has known dirt with ground truth. ``None`` injects nothing.
    suite : str or None
        Great Expectations suite JSON; ``None`` uses the built-in suite.
    reference : str or None
        Dataset spec of a trusted reference for the class-balance expectation.
    data_docs : bool
        Also build the Great Expectations Data Docs next to ``validation.json`` (off by
        default: the site loads its scripts from the web, and the report already holds
        every validation result).
    policy : {"relabel", "drop", "review"}
        Cleaning policy.
    folds : int
        Folds of the out-of-fold classifier used for label-issue detection (2..50).
    steps : int or None
        Training steps of each GAN arm (1..1,000,000); ``None`` (the default): chosen for
        the data and the device (:data:`pipeline.stages.base.STEPS_HELP`).
    seeds : int
        Training seeds per GAN arm, trained side by side; the spread between them is part
        of every GAN metric's uncertainty, so the verdict says "helped" or "hurt" only
        when the difference is larger than it.
    decisions : str or None
        A person's edited ``review.csv`` (from the ``review`` policy), applied on top of
        the policy's decisions.
    device : str
        ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
    seed : int
        Random seed of every stage.
    runner : str
        Task runner: ``threads``, ``processes``, ``dask`` (a local cluster) or
        ``dask:ADDRESS`` (an existing scheduler, e.g. ``dask:tcp://10.0.0.5:8786``).
    workers : int or None
        Workers of the task runner (threads, processes or local Dask workers); ``None``
        uses the runner's default.
    run_dir : path or None
        Run folder to write, or to resume. ``None`` makes ``runs_root/<new run id>``.
    runs_root : path
        Where new run folders go.
    cache_dir : path or None
        Where cached stage results are kept; ``None`` uses ``.cache`` next to the run folder
        (``runs_root/.cache``), so every run under one root shares it.
    cache : bool
        Reuse results of finished stages whose inputs, parameters and code are unchanged.
        ``False`` recomputes every stage (and refreshes the cache).
    until : str
        Last stage to run (``report`` runs them all).
    progress : bool
        Print a line per stage (and let stages print their own progress bars).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    data: str = "digits"
    strict: bool = False
    image_size: int | None = Field(default=None, ge=MIN_IMAGE_SIZE, le=MAX_IMAGE_SIZE)
    image_fit: Literal["pad", "crop"] = "pad"
    inject: str | None = None
    suite: str | None = None
    reference: str | None = None
    data_docs: bool = False
    policy: Literal["relabel", "drop", "review"] = "relabel"
    folds: int = Field(default=DetectParams.folds, ge=MIN_FOLDS, le=MAX_FOLDS)
    steps: int | None = Field(default=GenerateParams.steps, ge=MIN_STEPS, le=MAX_STEPS)
    seeds: int = Field(default=GenerateParams.seeds, ge=1, le=MAX_SEEDS)
    decisions: str | None = None
    device: str = "auto"
    seed: int = Field(default=0, ge=0)
    runner: str = "threads"
    workers: int | None = Field(default=None, ge=1)
    run_dir: Path | None = None
    runs_root: Path = Path("runs")
    cache_dir: Path | None = None
    cache: bool = True
    until: Stage = "report"
    progress: bool = True

    @field_validator("data")
    @classmethod
    def _data_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name a dataset")
        return value

    @field_validator("inject", "suite", "reference", "decisions")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        if value is None or not value.strip() or value.strip().lower() == "none":
            return None
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        value = value.strip().lower()
        if not _DEVICE.match(value):
            raise ValueError("must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
        return value

    @field_validator("runner")
    @classmethod
    def _runner(cls, value: str) -> str:
        from assay.flows.runners import parse_runner

        try:
            return str(parse_runner(value))
        except DataError as exc:
            raise ValueError(str(exc).removeprefix("`runner` ")) from None

    # ------------------------------------------------------------------ derived values
    def stage_enabled(self, stage: str) -> bool:
        """Whether ``stage`` runs under :attr:`until`."""
        return STAGES.index(stage) <= STAGES.index(self.until)

    def resolved(self, *, run_id: str | None = None) -> RunConfig:
        """A copy with absolute paths and a run folder chosen (``runs_root/<run id>``).

        Idempotent: a config whose ``run_dir`` is set keeps it (made absolute).
        """
        from assay.pipeline.runfolder import new_run_id

        runs_root = self.runs_root.expanduser().resolve()
        if self.run_dir is None:
            run_dir = runs_root / (run_id or new_run_id())
        else:
            run_dir = self.run_dir.expanduser().resolve()
        cache_dir = (
            self.cache_dir.expanduser().resolve()
            if self.cache_dir is not None
            else run_dir.parent / ".cache"
        )
        paths = {
            key: str(Path(value).expanduser().resolve())
            for key in ("data", "inject", "suite", "reference", "decisions")
            if (value := getattr(self, key)) and Path(value).expanduser().exists()
        }
        return self.model_copy(
            update={"run_dir": run_dir, "runs_root": runs_root, "cache_dir": cache_dir, **paths}
        )

    def parameters(self) -> dict[str, Any]:
        """JSON-ready parameters (what ``run.json`` records)."""
        return self.model_dump(mode="json")


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _format_error(err: Mapping[str, Any], *, source: str) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ())) or "<root>"
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        allowed = ", ".join(RunConfig.model_fields)
        return f"{source}: unknown key {loc!r}. Allowed keys: {allowed}."
    msg = str(err.get("msg", "is not valid"))
    msg = msg.removeprefix("Value error, ")
    expected = msg[0].lower() + msg[1:] if msg else "is not valid"
    return f"{source}: `{loc}` {_phrase(expected)}. Got {_describe(err.get('input'))} instead."


def _phrase(msg: str) -> str:
    """Turn pydantic's 'input should be …' into 'must be …'."""
    for prefix in ("input should be ", "value should be "):
        if msg.startswith(prefix):
            return "must be " + msg[len(prefix) :]
    if msg.startswith("must ") or msg.startswith("is "):
        return msg
    return "is not valid: " + msg


def read_config_file(path: Path) -> dict[str, Any]:
    """The key/value mapping of a YAML, TOML or JSON config file (not yet validated)."""
    if not path.is_file():
        raise DataError(f"{path}: config file not found; expected a YAML, TOML or JSON file.")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: expected a UTF-8 text config file (YAML, TOML or JSON), but byte "
            f"{exc.start} is not UTF-8 ({exc.reason}). Save the file as UTF-8."
        ) from None
    except OSError as exc:
        raise DataError(f"{path}: the config file could not be read ({exc.strerror}).") from None
    try:
        if suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise DataError(
                f"{path}: unknown config format {suffix or '(no suffix)'!r}; "
                "expected .yaml, .yml, .toml or .json."
            )
    except DataError:
        raise
    except Exception as exc:  # the parsers' own messages say where the syntax broke
        raise DataError(f"{path}: cannot parse the config file: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise DataError(
            f"{path}: the config file must hold a mapping of keys to values. "
            f"Got {type(data).__name__} instead."
        )
    # A TOML file may group everything under an [assay] table.
    if set(data) == {"assay"} and isinstance(data["assay"], dict):
        data = data["assay"]
    return data


def load_config(
    path: str | Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Build a :class:`RunConfig` from defaults, a file, then overrides.

    Parameters
    ----------
    path : str, Path or None
        A ``.yaml``/``.yml``, ``.toml`` or ``.json`` file of parameters, or ``None``.
    overrides : mapping, optional
        Values that win over the file (e.g. command-line options). ``None`` values are
        ignored, so unset options keep the file's value.

    Returns
    -------
    RunConfig

    Raises
    ------
    pipeline.errors.DataError
        The file is missing or unreadable, has an unknown key or a value of the wrong
        type; the message names the key.
    """
    values: dict[str, Any] = {}
    source = "config"
    if path is not None:
        file = Path(path).expanduser()
        values.update(read_config_file(file))
        source = str(file)
    extra = {k: v for k, v in (overrides or {}).items() if v is not None}
    values.update(extra)
    try:
        return RunConfig.model_validate(values)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        key = str(first.get("loc", ("",))[0])
        where = "command line" if key in extra else source
        message = _format_error(first, source=where)
        if len(errors) > 1:
            message += f" ({len(errors) - 1} more problem(s) in the same config.)"
        raise DataError(message) from None
