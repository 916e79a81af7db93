"""The review loop: a person's decisions read back, validated, applied and recorded."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import make_tiny_dataset

from assay.pipeline.clean import REVIEW_COLUMNS, apply_review, clean, read_review, write_cleaned
from assay.pipeline.detect import run_detection
from assay.pipeline.errors import DataError
from assay.pipeline.runfolder import RunFolder
from assay.pipeline.stages import ingest


@pytest.fixture(scope="module")
def review_run(tmp_path_factory: pytest.TempPathFactory) -> RunFolder:
    """A tiny real run: snapshot, detection and the ``review`` policy's cleaned folder."""
    dataset = make_tiny_dataset(12)
    labels = dataset.labels.copy()
    labels[[0, 13, 26]] = [1, 2, 0]  # three wrong labels
    dataset = dataset.with_labels(labels)
    run = RunFolder(tmp_path_factory.mktemp("run") / "run")
    ingest(run, dataset)
    run_detection(
        dataset, out_dir=run.paths.detection, folds=2, progress=False, device="cpu",
        detectors=("label", "exact_duplicate", "image_property"), classifier={"model": "svc"},
    )  # fmt: skip
    cleaned, decisions = clean(dataset, run.issues(), policy="review")
    write_cleaned(cleaned, decisions, run.paths.cleaned)
    return run


def _edited(run: RunFolder, tmp_path, rows: list[dict]) -> tuple[pd.DataFrame, object]:
    """review.csv as the run wrote it, with ``rows`` decided (or added) by a person."""
    table = pd.read_csv(run.paths.cleaned / "review.csv", dtype=str, keep_default_na=False)
    assert tuple(table.columns) == REVIEW_COLUMNS
    assert (table["decision"] == "review").all()
    for row in rows:
        hit = table["sample_id"] == str(row["sample_id"])
        if hit.any():
            for key, value in row.items():
                table.loc[hit, key] = str(value)
        else:
            table = pd.concat([table, pd.DataFrame([{k: str(v) for k, v in row.items()}])])
    path = tmp_path / "my-decisions.csv"
    table.to_csv(path, index=False)
    return table, path


def test_review_round_trip(review_run: RunFolder, tmp_path):
    run = review_run
    dataset, before = run.dataset(), run.decisions()
    assert (before["decided_by"] == "policy").all()
    ids = dataset.sample_ids
    kept = before.loc[before["decision"] == "keep", "sample_id"].tolist()
    to_review = before.loc[before["decision"] == "review", "sample_id"].tolist()
    rows = [
        {"sample_id": kept[0], "decision": "drop"},  # overrule the policy
        {"sample_id": kept[1], "decision": "relabel", "new_label": "diagonal"},  # by name
        {"sample_id": kept[2], "decision": "keep"},
    ]
    if to_review:
        rows.append({"sample_id": to_review[0], "decision": "relabel", "new_label": 1})
    _, path = _edited(run, tmp_path, rows)

    cleaned, decisions = apply_review(
        dataset, before, path, issues=run.issues(), cleaning=run.cleaned().meta["cleaning"]
    )
    write_cleaned(cleaned, decisions, run.paths.cleaned, review_file=path)

    after, manifest = run.decisions().set_index("sample_id"), run.cleaned()
    assert len(after) == len(ids)
    by = "review:my-decisions.csv"
    assert after.loc[kept[0], "decision"] == "drop" and after.loc[kept[0], "decided_by"] == by
    assert after.loc[kept[1], ["decision", "new_label"]].tolist() == ["relabel", 2]
    assert after.loc[kept[2], ["decision", "decided_by"]].tolist() == ["keep", by]
    untouched = [s for s in ids if s not in {r["sample_id"] for r in rows}]
    assert (after.loc[untouched, "decided_by"] == "policy").all()
    pd.testing.assert_frame_equal(
        after.loc[untouched].reset_index(), before.set_index("sample_id").loc[untouched]
        .reset_index(), check_like=True,
    )  # fmt: skip
    # the cleaned manifest says who decided, and holds exactly the kept and relabelled ones
    table = manifest.manifest().set_index("sample_id")
    assert kept[0] not in table.index
    assert table.loc[kept[1], ["decided_by", "label"]].tolist() == [by, 2]
    assert table.loc[kept[1], "original_label"] == before.set_index("sample_id").loc[
        kept[1], "old_label"]
    assert (table.loc[[s for s in untouched if s in table.index], "decided_by"] == "policy").all()
    expected = set(after.index[after["decision"].isin(["keep", "relabel"])])
    assert set(manifest.sample_ids) == expected
    assert manifest.meta["cleaning"]["review"] == "my-decisions.csv"
    assert manifest.meta["cleaning"]["policy"] == "review"
    if to_review:
        assert table.loc[to_review[0], "label"] == 1
        still = pd.read_csv(run.paths.cleaned / "review.csv")
        assert to_review[0] not in set(still["sample_id"])
    assert (run.paths.cleaned / "review_applied.csv").read_bytes() == path.read_bytes()


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ({"sample_id": 9999, "decision": "drop"}, "sample_id 9999 is not in the dataset"),
        ({"sample_id": "seven", "decision": "drop"}, "sample_id must be an integer"),
        ({"decision": "relabel", "new_label": 3}, r"relabel needs new_label.* 0\.\.2 .*'3'"),
        ({"decision": "relabel", "new_label": ""}, "relabel needs new_label"),
        ({"decision": "burn"}, "decision must be one of keep, drop, relabel, review.*'burn'"),
        ({"decision": "keep", "new_label": "vertical"}, "would change the label"),
        ({"decision": "keep", "given_label": 2}, "does not match the dataset's label 0"),
    ],
)
def test_bad_decisions_name_the_file_and_row(review_run: RunFolder, tmp_path, row, match):
    dataset = review_run.dataset()
    sid = int(dataset.sample_ids[4])  # a horizontal bar, given label 0
    _, path = _edited(review_run, tmp_path, [{"sample_id": sid, **row}])
    with pytest.raises(DataError, match=r"my-decisions\.csv, row \d+ \(line \d+\): .*" + match):
        read_review(path, dataset=dataset)


def test_repeated_ids_missing_columns_and_missing_files(review_run: RunFolder, tmp_path):
    dataset = review_run.dataset()
    path = tmp_path / "r.csv"
    path.write_text("sample_id,decision\n3,drop\n3,keep\n")
    with pytest.raises(DataError, match=r"r\.csv, row 2 \(line 3\): sample_id 3 is already"):
        read_review(path, dataset=dataset)
    path.write_text("id,what\n3,drop\n")
    with pytest.raises(DataError, match=r"r\.csv: missing column\(s\) \['sample_id', 'decision'\]"):
        read_review(path, dataset=dataset)
    with pytest.raises(DataError, match="no such file"):
        read_review(tmp_path / "absent.csv", dataset=dataset)
