"""`taugate train` and `taugate export` on a small part of the real MNIST: the dense frozen
model's accuracy is printed beside each mode, and a mode worse than it is refused by default."""

from __future__ import annotations

import json

import pytest

from taugate.cli import main

SMALL = ["--limit-train", "3000", "--limit-test", "500", "--calibration-size", "500"]


@pytest.fixture(scope="module")
def collapsed_run(data_root, tmp_path_factory):
    """A run whose rot45 adapter zeroed every unit (an absurd unit L1), like the 1024-wide
    backbone under the old fixed lambda."""
    run = tmp_path_factory.mktemp("collapse") / "run"
    argv = ["train", "--out", str(run), "--modes", "rot45", "--data-root", data_root, "--quiet",
            "--device", "cpu", "--epochs", "1", "--unit-l1", "100", "--gain-lr-scale", "16",
            *SMALL]
    return run, argv


def test_train_prints_dense_beside_the_mode_and_warns(collapsed_run, capsys):
    _, argv = collapsed_run
    assert main(argv) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("mode "))
    for column in ("acc dense", "acc soft", "acc hard", "MACs"):
        assert column in header
    row = next(line for line in out.splitlines() if line.startswith("rot45 ")).split()
    dense, _soft, hard = (float(v) for v in row[-3:])
    assert hard < 0.5 < dense, "collapsed, and the dense accuracy beside it shows it"
    assert "warning: mode rot45: test accuracy" in out and "will refuse it" in out


def test_export_refuses_a_mode_worse_than_dense(collapsed_run, data_root, tmp_path, capsys,
                                                caplog):
    run, _ = collapsed_run
    bundle = tmp_path / "bundle"
    args = ["export", str(run), "--out", str(bundle), "--data-root", data_root]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, "one line"
    for needle in ("mode rot45: test accuracy", "dense frozen model's", "--max-accuracy-drop",
                   "--allow-worse"):
        assert needle in err
    assert not bundle.exists(), "nothing written"

    assert main([*args, "--allow-worse"]) == 0
    assert "exported anyway (--allow-worse)" in caplog.text
    out = capsys.readouterr().out
    assert "warning: mode rot45: test accuracy" in out
    assert "acc dense" in out and "acc pruned" in out
    header = next(line for line in out.splitlines() if line.startswith("mode "))
    assert "MAC ratio  speedup b1  speedup b256" in header  # timed right after writing
    row = next(line for line in out.splitlines() if line.startswith("rot45 "))
    assert row.split()[row.split().index("fewer") + 1].endswith("x")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["modes"]["rot45"]["test_accuracy"] < 0.5
