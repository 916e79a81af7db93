"""The built wheel installs one import package, ``assay``, with its suites and templates.

The wheel is built from this checkout and installed (not editable, no dependencies) into
a fresh virtual environment that borrows the test environment's third-party packages
through a path entry. ``assay run`` then runs from a folder that holds a ``flows/``
package and a ``models.py`` of its own, which must not collide with assay's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(root / "dist"), str(REPO)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = (root / "dist").glob("assay-*.whl")
    env_dir = root / "env"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # third-party packages come from the test environment; assay itself from the wheel
    (Path(site) / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
         str(wheel)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-2000:]
    return wheel


def test_wheel_holds_one_top_level_package_with_its_data(installed):
    names = zipfile.ZipFile(installed).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"assay"}
    for needed in ("assay/expectations/default.json", "assay/expectations/digits.json",
                   "assay/pipeline/report/templates/report.html",
                   "assay/pipeline/stages/detect.py", "assay/flows/cli.py",
                   "assay/models/gan.py"):  # fmt: skip
        assert needed in names, needed
    for folder in ("pipeline", "flows", "models", "expectations"):  # every package ships
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.relative_to(REPO).as_posix()
            assert f"assay/{rel}" in names, rel
    meta = [n for n in names if n.endswith(".dist-info/METADATA")]
    text = zipfile.ZipFile(installed).read(meta[0]).decode()
    assert "License-Expression: MIT" in text and "Project-URL" in text
    assert any(n.endswith("licenses/LICENSE") for n in names)


@pytest.mark.slow
def test_installed_wheel_runs_beside_a_users_flows_and_models(installed, tmp_path):
    env_bin = installed.parent.parent / "env" / "bin"
    work = tmp_path / "project"
    (work / "flows").mkdir(parents=True)
    (work / "flows" / "__init__.py").write_text("raise ImportError('the user flows package')\n")
    (work / "models.py").write_text("raise ImportError('the user models module')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    proc = subprocess.run(
        [str(env_bin / "assay"), "run", "--data", "digits", "--steps", "50", "--seeds", "1",
         "--folds", "2", "--device", "cpu", "--runs-root", str(tmp_path / "runs"), "--json"],
        cwd=work, env=env, capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    summary = json.loads(proc.stdout)
    assert summary["stages"]["report"] == "done"
    assert Path(summary["report"]).is_file()
    origin = subprocess.run(
        [str(env_bin / "python"), "-c", "import assay.pipeline as p; print(p.__file__)"],
        cwd=work, env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert Path(origin).is_relative_to(env_bin.parent)  # the wheel's copy, not the checkout
