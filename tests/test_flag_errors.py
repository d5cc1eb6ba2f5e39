"""CLI errors speak in flags, never in Python keyword arguments; `taugate --help` says what
taugate does today."""

from __future__ import annotations

import pytest

from taugate.cli import build_parser, main


@pytest.mark.parametrize("args, flag", [
    (["--adapt-epochs", "0"], "--adapt-epochs"), (["--epochs", "0"], "--epochs"),
    (["--adapt-lr", "-1"], "--adapt-lr"), (["--sharpness", "0"], "--sharpness"),
    (["--hidden", "0"], "--hidden"), (["--batch-size", "0"], "--batch-size"),
    (["--adapt-min-steps", "-1"], "--adapt-min-steps"), (["--lr", "nan"], "--lr"),
    (["--retune-epochs", "-2"], "--retune-epochs"), (["--unit-l1", "-0.1"], "--unit-l1"),
])
def test_bad_numbers_are_refused_by_flag(tmp_path, capsys, args, flag):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--out", str(tmp_path / "r"), "--quiet", *args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"argument {flag}" in err, err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, fragment", [
    (["--method", "lora", "--method-option", "rank=0"], "--method-option rank: expected"),
    (["--family", "vit", "--family-option", "heads=5"], "--family-option heads: expected"),
])
def test_option_errors_name_the_flag(tmp_path, capsys, args, fragment):
    assert main(["train", "--out", str(tmp_path / "r"), "--quiet", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1, err


def test_help_describes_today():
    text = build_parser().format_help()
    for fragment in ("your own PyTorch model", "ViT", "bundle", "int8", "onnxruntime"):
        assert fragment in " ".join(text.split()), fragment
    assert "on a frozen MLP" not in text
