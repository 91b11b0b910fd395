"""The CLI: every command has --help; bad input exits non-zero with a one-line reason."""

import subprocess
import sys

import pytest

from jobs.cli.main import build_parser, main

COMMANDS = [
    "models",
    "evaluate",
    "ope",
    "experiment",
    "generate",
    "import",
    "pipeline",
    "step",
    "publish",
    "simulate",
    "simulate-refresh",
    "refresh",
    "refresh-server",
    "spark-connect",
    "serve",
    "bench",
    "airflow-test",
    "backfill",
]


def test_every_command_is_registered():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "usage: homepage" in capsys.readouterr().out


def test_bad_input_is_one_line_and_non_zero(tmp_path, capsys):
    assert main(["pipeline", "--lake", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(
        "homepage pipeline: error: FileNotFoundError: no event partitions under"
    )
    assert main(["pipeline", "--lake", str(tmp_path), "--set", "mf.factors=lots"]) == 1
    assert "mf.factors must be an integer" in capsys.readouterr().err
    assert main(["generate", "--lake", str(tmp_path / "g"), "--users", "0"]) == 1
    assert "error: ValueError" in capsys.readouterr().err


def test_console_script_is_installed():
    out = subprocess.run(
        [sys.executable, "-m", "jobs.cli.main", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "generate" in out.stdout
