"""The stage commands compose: validate, detect, clean, gan, report one by one on one run
folder give what ``assay run`` gives, and a stage whose input is missing names the stage
to run first."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from assay.flows.cli import main
from assay.pipeline.hashing import tree_hash

PARAMS = ["--inject", "labels-10", "--seed", "0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    """200 of scikit-learn's digits (20 per class) as an .npz."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = np.concatenate([np.flatnonzero(digits.target == k)[:20] for k in range(10)])
    path = tmp_path_factory.mktemp("data") / "digits200.npz"
    np.savez(path, images=np.round(digits.images[keep] * 255 / 16).astype(np.uint8),
             labels=digits.target[keep])  # fmt: skip
    return str(path)


@pytest.fixture(scope="module")
def both(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("stages")
    one = root / "one-by-one"
    transcript = []
    for argv in (
        ["validate", "--run-dir", str(one), "--data", data, *PARAMS],
        ["detect", "--run-dir", str(one), "--folds", "2", "--device", "cpu"],
        ["clean", "--run-dir", str(one), "--policy", "relabel"],
        ["gan", "--run-dir", str(one), "--steps", "10", "--seeds", "1", "--device", "cpu"],
        ["report", "--run-dir", str(one)],
    ):
        transcript.append((argv[0], main(argv)))
    flow = root / "flow"
    code = main(["run", "--run-dir", str(flow), "--data", data, *PARAMS, "--folds", "2",
                 "--steps", "10", "--seeds", "1", "--device", "cpu", "--quiet"])  # fmt: skip
    return {"one": one, "flow": flow, "transcript": transcript, "run_code": code}


@pytest.mark.slow
def test_stage_by_stage_gives_what_run_gives(both):
    assert both["transcript"] == [(s, 0) for s in ("validate", "detect", "clean", "gan",
                                                   "report")]  # fmt: skip
    assert both["run_code"] == 0
    one, flow = both["one"], both["flow"]
    assert tree_hash(one / "dataset") == tree_hash(flow / "dataset")
    for rel in ("validation/sample_flags.parquet", "detection/issues.parquet",
                "detection/noise_matrix.npy", "cleaned/decisions.parquet",
                "cleaned/manifest.parquet", "cleaned/images.npy"):  # fmt: skip
        assert (one / rel).read_bytes() == (flow / rel).read_bytes(), rel
    a = json.loads((one / "gan/metrics.json").read_text())["arms"]
    b = json.loads((flow / "gan/metrics.json").read_text())["arms"]
    assert set(a) == set(b)
    for arm in a:
        assert a[arm]["label_accuracy"] == b[arm]["label_accuracy"], arm
    va = json.loads((one / "run.json").read_text())["verdict"]
    vb = json.loads((flow / "run.json").read_text())["verdict"]
    assert va["headline"] == vb["headline"]
    assert (one / "report.html").is_file()


@pytest.mark.slow
def test_a_finished_stage_by_stage_folder_resumes_from_its_record(both, capsys):
    """``assay run --run-dir`` on it reloads the parameters the stage commands recorded."""
    record = json.loads((both["one"] / "run.json").read_text())["parameters"]
    assert record["inject"] == "labels-10" and record["folds"] == 2 and record["steps"] == 10
    code = main(["run", "--run-dir", str(both["one"]), "--steps", "11", "--quiet"])
    assert code == 2
    assert "`steps` 11 differs from the 10 this run recorded" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["detect", "clean", "gan", "report"])
def test_missing_dataset_names_validate(tmp_path, capsys, command):
    run = tmp_path / "empty"
    assert main([command, "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert "run `assay validate --data SPEC --run-dir" in err and "Traceback" not in err
    assert not run.exists()  # nothing was created


def test_later_stages_name_the_first_missing_input(data, tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["validate", "--run-dir", str(run), "--data", data,
                 "--quiet"]) == 0  # fmt: skip
    for command in ("clean", "gan"):
        assert main([command, "--run-dir", str(run)]) == 2
        assert "run `assay detect" in capsys.readouterr().err  # the first missing input
    assert not (run / "gan").exists() and not (run / "cleaned").exists()


def test_json_output_is_one_document(data, tmp_path, capsys):
    run = tmp_path / "j"
    assert main(["validate", "--run-dir", str(run), "--data", data,
                 "--json"]) == 0  # fmt: skip
    document = json.loads(capsys.readouterr().out)
    assert document["stage"] == "validate" and document["n_expectations"] > 0
    assert main(["info", "--data", data, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 200


def test_a_different_dataset_is_refused_in_a_used_run_folder(data, tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["validate", "--run-dir", str(run), "--data", data,
                 "--quiet"]) == 0  # fmt: skip
    before = tree_hash(run / "dataset")
    assert main(["detect", "--run-dir", str(run), "--data", "digits"]) == 2
    assert "already holds a different dataset" in capsys.readouterr().err
    assert tree_hash(run / "dataset") == before
    assert isinstance(pd.read_parquet(Path(run) / "validation/sample_flags.parquet"),
                      pd.DataFrame)  # fmt: skip


@pytest.mark.slow
def test_review_round_trip_through_the_cli(data, tmp_path, capsys):
    """Policy ``review`` -> a person edits review.csv -> ``clean --decisions`` applies it."""
    run = tmp_path / "review"
    assert main(["validate", "--run-dir", str(run), "--data", data, "--inject", "labels-20",
                 "--quiet"]) == 0  # fmt: skip
    assert main(["detect", "--run-dir", str(run), "--folds", "2", "--device", "cpu",
                 "--quiet"]) == 0  # fmt: skip
    assert main(["clean", "--run-dir", str(run), "--policy", "review", "--quiet"]) == 0
    review = pd.read_csv(run / "cleaned/review.csv")
    assert len(review) >= 2 and set(review["decision"]) == {"review"}
    edited = review.copy()
    edited["new_label"] = ""  # as a person leaves it where no label changes
    edited.loc[0, "decision"] = "drop"
    edited.loc[1, "decision"] = "relabel"
    edited.loc[1, "new_label"] = str((int(edited.loc[1, "given_label"]) + 1) % 10)
    file = tmp_path / "decided.csv"
    edited.to_csv(file, index=False)
    assert main(["clean", "--run-dir", str(run), "--policy", "review", "--decisions",
                 str(file), "--json"]) == 0  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    assert summary["decisions"]["drop"] >= 1 and summary["decisions"]["relabel"] >= 1
    decisions = pd.read_parquet(run / "cleaned/decisions.parquet").set_index("sample_id")
    first, second = int(edited.loc[0, "sample_id"]), int(edited.loc[1, "sample_id"])
    assert decisions.loc[first, "decision"] == "drop"
    assert decisions.loc[second, "new_label"] == int(edited.loc[1, "new_label"])
    assert decisions.loc[first, "decided_by"] == f"review:{file.name}"
    untouched = decisions.drop(index=[first, second])
    assert set(untouched["decided_by"]) == {"policy"}
    record = json.loads((run / "run.json").read_text())["parameters"]
    assert record["decisions"] == str(file)  # a resumed run applies the same review

    bad = edited.copy()
    bad.loc[0, "sample_id"] = 999_999
    bad.to_csv(tmp_path / "bad.csv", index=False)
    before = tree_hash(run / "cleaned")
    assert main(["clean", "--run-dir", str(run), "--policy", "review", "--decisions",
                 str(tmp_path / "bad.csv")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "bad.csv" in err and "row 1" in err and "Traceback" not in err
    assert tree_hash(run / "cleaned") == before  # nothing changed
