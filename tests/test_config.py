"""Run configuration: defaults, files (YAML/TOML/JSON), overrides, and messages naming keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assay.flows.config import STAGES, RunConfig, load_config
from assay.pipeline.errors import DataError


def test_defaults():
    config = load_config()
    assert config.data == "digits"
    assert config.policy == "relabel"
    assert config.runner == "threads"
    assert config.folds == 5 and config.seed == 0 and config.device == "auto"
    assert config.inject is None and config.run_dir is None and config.cache is True
    assert config.until == "report" and all(config.stage_enabled(s) for s in STAGES)


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".toml", ".json"])
def test_every_file_format(tmp_path, suffix):
    values = {"data": "mnist", "inject": "labels-10", "policy": "drop", "steps": 300,
              "folds": 3, "seed": 7, "runner": "dask", "device": "cpu"}  # fmt: skip
    path = tmp_path / f"run{suffix}"
    if suffix == ".toml":
        path.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in values.items()))
    elif suffix == ".json":
        path.write_text(json.dumps(values))
    else:
        path.write_text("\n".join(f"{k}: {v}" for k, v in values.items()))
    config = load_config(path)
    assert config.model_dump(include=set(values)) == values


def test_toml_assay_table(tmp_path):
    path = tmp_path / "pyproject-like.toml"
    path.write_text('[assay]\ndata = "digits"\nsteps = 12\n')
    assert load_config(path).steps == 12


def test_overrides_win_and_none_is_ignored(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("steps: 100\npolicy: drop\n")
    config = load_config(path, overrides={"steps": 5, "policy": None, "run_dir": "x/y"})
    assert config.steps == 5 and config.policy == "drop" and config.run_dir == Path("x/y")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("stepz: 10\n", r"run.yaml: unknown key 'stepz'\. Allowed keys: data, "),
        ("steps: many\n", r"run.yaml: `steps` must be a valid integer.*Got 'many' instead"),
        ("steps: 0\n", r"`steps` must be greater than or equal to 1\. Got 0 instead"),
        ("folds: 1\n", r"`folds` must be greater than or equal to 2"),
        ("policy: burn\n", r"`policy` must be 'relabel', 'drop' or 'review'\. Got 'burn'"),
        ("runner: ray\n", r"`runner` must be 'threads', 'processes', 'dask' or 'dask:ADDRESS'"),
        ("device: tpu\n", r"`device` must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
        ("until: nowhere\n", r"`until` must be 'ingest', 'validate', "),
        ("data: ''\n", r"`data` must name a dataset"),
        ("cache: maybe\n", r"`cache` must be a valid boolean"),
    ],
)
def test_bad_values_name_the_key(tmp_path, text, match):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(DataError, match=match):
        load_config(path)


def test_override_errors_say_command_line():
    with pytest.raises(DataError, match=r"^command line: `seed` must be greater than or equal"):
        load_config(overrides={"seed": -1})


def test_several_problems_are_counted(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("stepz: 1\nfoldz: 2\n")
    with pytest.raises(DataError, match=r"unknown key 'stepz'.*\(1 more problem"):
        load_config(path)


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("missing.yaml", None, r"missing.yaml: config file not found"),
        ("run.ini", "a=1", r"run.ini: unknown config format '.ini'"),
        ("run.yaml", "- a\n- b\n", r"must hold a mapping of keys to values\. Got list"),
        ("run.toml", "steps = = 3", r"run.toml: cannot parse the config file"),
        ("run.json", "{bad json", r"run.json: cannot parse the config file"),
    ],
)
def test_unreadable_files(tmp_path, name, text, match):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(DataError, match=match):
        load_config(path)


def test_empty_file_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path) == RunConfig()


def test_inject_none_means_no_injection():
    assert load_config(overrides={"inject": "none"}).inject is None
    assert load_config(overrides={"inject": "labels-10"}).inject == "labels-10"


def test_runner_is_normalised():
    assert load_config(overrides={"runner": "DASK:tcp://h:8786"}).runner == "dask:tcp://h:8786"


def test_resolved_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = RunConfig().resolved(run_id="20260101-000000-abcd")
    assert config.run_dir == tmp_path / "runs" / "20260101-000000-abcd"
    assert config.cache_dir == tmp_path / "runs" / ".cache"
    assert config.resolved() == config  # idempotent
    explicit = RunConfig(run_dir=Path("elsewhere/r1")).resolved()
    assert explicit.run_dir == tmp_path / "elsewhere" / "r1"
    assert explicit.cache_dir == tmp_path / "elsewhere" / ".cache"


def test_until_limits_stages():
    config = RunConfig(until="detect")
    assert [s for s in STAGES if config.stage_enabled(s)] == ["ingest", "validate", "detect"]


def test_frozen():
    with pytest.raises(Exception, match="frozen"):
        RunConfig().steps = 3  # type: ignore[misc]
