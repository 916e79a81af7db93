"""The `assay` command: help, version, exit codes, and nothing left behind on bad input."""

import subprocess
import sys

import pytest

from assay.flows.cli import build_parser, main

SUBCOMMANDS = [
    ["run"],
    ["info"],
    ["inject"],
    ["validate"],
    ["expectations"],
    ["expectations", "learn"],
    ["detect"],
    ["clean"],
    ["gan"],
    ["report"],
    ["serve"],
    ["server"],
]


@pytest.mark.parametrize("words", SUBCOMMANDS, ids=lambda w: " ".join(w))
def test_every_subcommand_has_help(words, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*words, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: assay " + " ".join(words))


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("assay ")


def test_console_script_is_installed():
    proc = subprocess.run(
        [sys.executable, "-m", "assay.flows.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    assert "validate" in proc.stdout and "detect" in proc.stdout


def test_info_on_digits(capsys):
    assert main(["info", "--data", "digits"]) == 0
    out = capsys.readouterr().out
    assert "1797" in out and "8 x 8" in out and "0..255" in out


def test_unknown_command_is_a_usage_error():
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["frobnicate"])
    assert exc.value.code == 2


@pytest.mark.parametrize(
    "command",
    [
        ["info", "--data", "{missing}"],
        ["inject", "--data", "{missing}", "--out", "{out}"],
        ["validate", "--data", "{missing}", "--run-dir", "{out}"],
        ["detect", "--data", "{missing}", "--run-dir", "{out}"],
    ],
    ids=lambda c: c[0],
)
def test_missing_data_exits_2_and_writes_nothing(command, tmp_path, capsys):
    missing = tmp_path / "nope.npz"
    out = tmp_path / "out"
    argv = [w.format(missing=missing, out=out) for w in command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(missing) in err
    assert not out.exists()


def test_inject_bad_rate_exits_2(tmp_path, capsys):
    cfg = tmp_path / "rates.json"
    cfg.write_text('{"label_noise": 1.5}')
    out = tmp_path / "out"
    assert main(["inject", "--data", "digits", "--config", str(cfg), "--out", str(out)]) == 2
    assert "label_noise" in capsys.readouterr().err
    assert not out.exists()


# A stand-in for the command's work: a SIGTERM lands while code runs from source text
# (as when a dataclass is created during an import), then the command goes on working.
_TERM_INSIDE_EXEC = '''
import sys
import assay.flows.cli as cli

def work(argv):
    exec("import os, signal, time\\nos.kill(os.getpid(), signal.SIGTERM)\\ntime.sleep(30)")
    return 0

cli._main = work
if __name__ == "__main__":
    sys.exit(cli.main())
'''


def test_sigterm_inside_source_text_exits_143_under_python_m(tmp_path):
    """`python -m` ends a process by SIGINT after a KeyboardInterrupt left code run from a
    string, even one the program caught; the command's SIGTERM handler raises one."""
    (tmp_path / "term_inside_exec.py").write_text(_TERM_INSIDE_EXEC)
    proc = subprocess.run([sys.executable, "-m", "term_inside_exec"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 143, (proc.returncode, proc.stderr[-2000:])
    assert proc.stderr.strip().splitlines()[-1].startswith("assay: terminated;")
