"""CLI frictions from a new user's first hour: each error names the flag to change."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from taugate.cli import main
from taugate.commands.train import foundation_hidden, foundation_stem, method_config


def _foundation_json(path, hidden):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"kind": "taugate-foundation", "backbone": {"hidden": hidden}}))


@pytest.mark.parametrize("given, want", [
    ("run", "run/foundation"),  # the run directory
    ("run/foundation", "run/foundation"),  # the stem
    ("run/foundation.json", "run/foundation"),
    ("run/foundation.safetensors", "run/foundation"),
])
def test_foundation_accepts_run_dir_or_stem(tmp_path, given, want, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _foundation_json(tmp_path / "run" / "foundation.json", [1024, 1024])
    stem = foundation_stem(given)
    assert str(stem) == want and foundation_hidden(stem) == [1024, 1024]


@pytest.mark.parametrize("given, error", [("emptydir", ValueError), ("nothing", FileNotFoundError)])
def test_foundation_errors_name_the_flag(tmp_path, given, error, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(error, match="--foundation .*run directory.*stem"):
        foundation_stem(given)


@pytest.mark.parametrize("hidden, unit_l1", [([128, 128], 0.08), ([1024, 1024], 0.01),
                                             ([512, 512], 0.02), ([64, 192], 0.08)])
def test_sparse_is_width_aware(hidden, unit_l1):
    import argparse

    from taugate.commands.train import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--out", "x", "--sparse"])
    assert method_config(args, hidden)["unit_l1"] == pytest.approx(unit_l1)
    args = p.parse_args(["--out", "x", "--sparse", "--unit-l1", "0.5"])
    assert method_config(args, hidden)["unit_l1"] == 0.5, "an explicit flag wins"


def test_limit_train_names_calibration_size(tmp_path, capsys):
    code = main(["train", "--out", str(tmp_path / "r"), "--limit-train", "10", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "--limit-train 10" in err and "--calibration-size" in err
    assert not (tmp_path / "r").exists()


def test_existing_bundle_names_force(tmp_path, capsys):
    (tmp_path / "b").mkdir()
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "already exists; pass --force" in err and "overwrite=True" not in err


def test_info_shows_fewer_macs(tiny_bundle, capsys):
    from taugate.runtime import ModeRuntime

    assert main(["info", str(tiny_bundle)]) == 0
    out = capsys.readouterr().out
    rt = ModeRuntime.open(tiny_bundle)
    for mode in rt.modes:
        want = f"{rt.manifest.dense.macs / rt.info(mode)['macs']:.2f}x fewer"
        assert want in next(line for line in out.splitlines() if line.startswith(mode + " "))


def test_predict_into_a_closed_pipe_is_quiet(tiny_bundle, tmp_path):
    x = tmp_path / "many.npy"
    np.save(x, np.random.default_rng(0).random((100_000, 784), dtype=np.float32))
    proc = subprocess.Popen([sys.executable, "-m", "taugate.cli", "predict", str(tiny_bundle),
                             "--mode", "rot0", str(x)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()  # what `| head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == ""


def test_into_adds_modes_and_keeps_the_old(tiny_bundle, tmp_path):
    from taugate.exporting.merge import merge_into
    from taugate.exporting.synthetic import build_random_bundle
    from taugate.runtime import ModeRuntime

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    before = {m: ModeRuntime.open(bundle).run(m, np.ones((2, 784), np.float32))
              for m in ("rot0", "rot45")}
    extra = build_random_bundle(tmp_path / "extra", modes=("rot90",), seed=0)  # same dense
    assert merge_into(bundle, extra, verify=lambda p: ModeRuntime.open(p).close()) == ["rot90"]
    rt = ModeRuntime.open(bundle)
    assert rt.modes == ["rot0", "rot45", "rot90"]
    for m, logits in before.items():
        assert np.array_equal(rt.run(m, np.ones((2, 784), np.float32)), logits)
    with pytest.raises(FileExistsError, match="--force"):
        merge_into(bundle, extra)
    other = build_random_bundle(tmp_path / "other", modes=("rot30",), seed=7)  # another dense
    with pytest.raises(ValueError, match="not this run's foundation"):
        merge_into(bundle, other)

    def broken(path):
        raise RuntimeError("verification failed")

    with pytest.raises(RuntimeError):
        merge_into(bundle, extra, replace=True, verify=broken)
    assert ModeRuntime.open(bundle).modes == ["rot0", "rot45", "rot90"], "old bundle kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "extra", "other"]
