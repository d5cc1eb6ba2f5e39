"""`taugate demo` shows what a mode is for: beside rot0/rot45 (the foundation's pretraining
mixture) it adapts to rot90, a shift the foundation never saw."""

from __future__ import annotations

from taugate.cli import build_parser
from taugate.commands.train import run_config


def test_demo_adapts_to_a_mode_outside_the_mixture(tmp_path):
    args = build_parser().parse_args(["demo", "--out", str(tmp_path)])
    args.foundation, args.foundation_only = None, False  # what demo.run sets
    config = run_config(args, str(tmp_path / "run"))
    assert config.foundation.modes == ("rot0", "rot45")
    assert config.modes == ("rot0", "rot45", "rot90")
    assert set(config.modes) - set(config.foundation.modes) == {"rot90"}
    assert not config.mixture_from_modes and config.adapt.method_config  # sparse by default


def test_demo_mixture_is_a_flag(tmp_path):
    args = build_parser().parse_args(["demo", "--out", str(tmp_path), "--mixture", "rot0",
                                      "--modes", "rot0,rot30"])
    args.foundation, args.foundation_only = None, False
    config = run_config(args, str(tmp_path / "run"))
    assert config.foundation.modes == ("rot0",) and config.modes == ("rot0", "rot30")
