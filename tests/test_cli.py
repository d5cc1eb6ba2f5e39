"""The `taugate` console script: every subcommand has --help, bad input ends in one clear line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from taugate.cli import COMMANDS, main


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert "usage: taugate " + command in capsys.readouterr().out


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "taugate.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for command in COMMANDS:
        assert command in out


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_subcommand_has_a_section_in_the_cli_docs(command):
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text("utf-8")
    assert f"## `taugate {command}`" in doc, f"docs/cli.md has no section for taugate {command}"


def test_bad_mode_is_one_clear_line(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "r"), "--modes", "rot45,sideways"]) == 2
    err = capsys.readouterr().err
    assert "taugate train: error:" in err and "'sideways'" in err and "rot<degrees>" in err


def test_missing_data_is_one_clear_line(tmp_path, capsys):
    nodata = tmp_path / "nodata"
    code = main(["train", "--out", str(tmp_path / "r"), "--data-root", str(nodata), "--quiet",
                 "--device", "cpu", "--foundation-only", "--no-download"])
    err = capsys.readouterr().err
    assert code == 2 and str(nodata / "MNIST" / "raw") in err and "--data-root" in err
    assert not (tmp_path / "r").exists(), "nothing written when the data is missing"


@pytest.mark.parametrize("flag,value,needle", [
    ("--max-in-flight", "0", "max_in_flight: expected an integer >= 1, got 0"),
    ("--header-timeout", "-1", "header_timeout_s: expected a number of seconds > 0"),
])
def test_serve_limits_are_checked_before_opening(tiny_bundle, capsys, flag, value, needle):
    assert main(["serve", str(tiny_bundle), flag, value]) == 2
    assert needle in capsys.readouterr().err
