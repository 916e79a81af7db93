"""The leave-one-family-out benchmark's score cache is named by the code that made it."""

from __future__ import annotations

from pathlib import Path

from benchmarks.detect import code_digest


def _tree(root: Path, detector: str) -> Path:
    (root / "pipeline" / "detect").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "pipeline" / "detect" / "vae.py").write_text(detector)
    (root / "models" / "vae.py").write_text("WIDTH = 32\n")
    (root / "README.md").write_text("not code")
    return root


def test_code_digest_changes_with_the_sources_only(tmp_path):
    a = code_digest(_tree(tmp_path / "a", "K = 4.0\n"))
    assert len(a) == 12 and a == code_digest(tmp_path / "a")
    assert code_digest(_tree(tmp_path / "b", "K = 4.0\n")) == a  # same sources elsewhere
    assert code_digest(_tree(tmp_path / "c", "K = 3.5\n")) != a  # a changed detector
    (tmp_path / "a" / "README.md").write_text("other prose")
    assert code_digest(tmp_path / "a") == a  # only Python sources count
    (tmp_path / "a" / "models" / "vae.py").rename(tmp_path / "a" / "models" / "gan.py")
    assert code_digest(tmp_path / "a") != a  # which file holds the code counts too
    # the project's own sources give a digest of the same form
    assert len(code_digest()) == 12
