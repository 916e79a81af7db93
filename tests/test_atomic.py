import json

import numpy as np
import pytest

from assay.pipeline import atomic


def test_write_json_handles_numpy_and_nan(tmp_path):
    path = atomic.write_json(
        tmp_path / "a" / "x.json", {"i": np.int64(3), "f": float("nan"), "a": np.arange(2)}
    )
    assert json.loads(path.read_text()) == {"i": 3, "f": None, "a": [0, 1]}
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]


def test_atomic_dir_leaves_nothing_on_error_and_keeps_old(tmp_path):
    target = tmp_path / "ds"
    with atomic.atomic_dir(target) as tmp:
        (tmp / "f").write_text("old")
    with pytest.raises(RuntimeError), atomic.atomic_dir(target) as tmp:
        (tmp / "f").write_text("new")
        raise RuntimeError("crash")
    assert (target / "f").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_atomic_dir_replaces(tmp_path):
    target = tmp_path / "ds"
    for text in ("one", "two"):
        with atomic.atomic_dir(target) as tmp:
            (tmp / "f").write_text(text)
    assert (target / "f").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
