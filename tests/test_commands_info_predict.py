"""`taugate info` and `taugate predict` (and `serve`'s argument handling), run in-process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from taugate import cli
from taugate.runtime import ModeRuntime

MINE = {name: f"taugate.commands.{name}" for name in ("info", "predict", "serve")}


@pytest.fixture
def main(monkeypatch):
    # Only this suite's commands: the registry's other modules belong to other suites.
    monkeypatch.setattr(cli, "COMMANDS", MINE)
    return cli.main


def test_info_text(main, tiny_bundle, capsys):
    assert main(["info", str(tiny_bundle)]) == 0
    out = capsys.readouterr().out
    for needle in ("taugate-bundle v2", "created by taugate", "25,760 MACs", "verification  OK",
                   "rot45", "angle=45", "32/32 16/16", "1.00x fewer", "0.5000",
                   "pixels float32 [batch, 784] in [0, 1], image 1x28x28"):
        assert needle in out


def test_info_json(main, tiny_bundle, capsys):
    assert main(["info", str(tiny_bundle), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["ok"] and info["format_version"] == 2 and info["family"] == "mlp"
    assert info["modes"][1]["facts"] == {"angle": 45.0}
    assert [m["name"] for m in info["modes"]] == ["rot0", "rot45"]
    assert info["modes"][1]["units_kept"] == [32, 16] and info["modes"][1]["mac_ratio"] == 1.0
    assert info["verification"]["models_load"] == "ok" and info["dense"]["macs"] == 25760


@pytest.mark.parametrize("as_json", [False, True])
def test_info_broken_bundle_fails(main, tiny_bundle, tmp_path, capsys, as_json):
    root = shutil.copytree(tiny_bundle, tmp_path / "b")
    (root / "modes" / "rot45.onnx").write_bytes(b"tampered")
    assert main(["info", str(root)] + (["--json"] if as_json else [])) == 1
    out, err = capsys.readouterr()
    assert "verification FAILED" in err and "sha256 mismatch" in err
    if as_json:
        assert json.loads(out)["error"] == "BundleIntegrityError"


def test_info_missing_bundle(main, tmp_path, capsys):
    assert main(["info", str(tmp_path / "nope")]) == 1
    assert "not a directory" in capsys.readouterr().err


@pytest.fixture(scope="module")
def expected(tiny_bundle):
    x = np.random.default_rng(11).random((4, 784), dtype=np.float32)
    return x, ModeRuntime.open(tiny_bundle).predict("rot45", x)


@pytest.mark.parametrize("convert", [
    lambda x: x, lambda x: x.reshape(4, 28, 28), lambda x: x.reshape(4, 1, 28, 28),
    lambda x: x.astype(np.float64)], ids=["flat", "images", "channels", "float64"])
def test_predict_npy(main, tiny_bundle, tmp_path, capsys, expected, convert):
    x, classes = expected
    np.save(tmp_path / "x.npy", convert(x))
    assert main(["predict", str(tiny_bundle), "--mode", "rot45", str(tmp_path / "x.npy")]) == 0
    assert capsys.readouterr().out.split() == [str(c) for c in classes]


def test_predict_png_and_json(main, tiny_bundle, tmp_path, capsys):
    from PIL import Image

    rt = ModeRuntime.open(tiny_bundle)
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255  # a white "1" on black
    Image.fromarray(digit).save(tmp_path / "one.png")
    Image.fromarray(255 - np.kron(digit, np.ones((2, 2), np.uint8))).save(tmp_path / "inv.png")
    args = ["predict", str(tiny_bundle), "--mode", "rot0", "--json"]
    assert main(args + [str(tmp_path / "one.png")]) == 0
    result = json.loads(capsys.readouterr().out)["predictions"]
    assert len(result) == 1 and result[0]["class"] == int(rt.predict("rot0", digit)[0])
    np.testing.assert_allclose(result[0]["logits"], rt.run("rot0", digit)[0], rtol=1e-5)
    # 56x56 black-on-white: resized to 28x28 (bilinear) and inverted
    assert main(args + ["--invert", str(tmp_path / "inv.png")]) == 0
    result = json.loads(capsys.readouterr().out)["predictions"]
    from taugate.commands.predict import load_image

    pixels = load_image(tmp_path / "inv.png", invert=True)
    assert pixels.shape == (28, 28) and pixels.dtype == np.uint8
    assert result[0]["class"] == int(rt.predict("rot0", pixels)[0])


@pytest.mark.parametrize("setup,args,needle", [
    (lambda p: np.save(p / "x.npy", np.zeros((2, 10), np.float32)), ["--mode", "rot0", "x.npy"],
     "unsupported shape"),
    (lambda p: np.save(p / "x.npy", np.zeros((2, 784), np.int32)), ["--mode", "rot0", "x.npy"],
     "unsupported dtype int32"),
    (lambda p: np.save(p / "x.npy", np.zeros((2, 784), np.float32)), ["--mode", "rot9", "x.npy"],
     "unknown mode 'rot9'"),
    (lambda p: (p / "x.txt").write_text("1"), ["--mode", "rot0", "x.txt"],
     "unsupported file type .txt"),
    (lambda p: (p / "x.png").write_bytes(b"not a png"), ["--mode", "rot0", "x.png"],
     "cannot read as an image"),
    (lambda p: None, ["--mode", "rot0", "missing.npy"], "no such file"),
], ids=["shape", "dtype", "mode", "suffix", "bad-png", "missing"])
def test_predict_errors(main, tiny_bundle, tmp_path, capsys, setup, args, needle):
    setup(tmp_path)
    args = [str(tmp_path / a) if a.startswith(("x.", "missing")) else a for a in args]
    assert main(["predict", str(tiny_bundle), *args]) == 2
    assert needle in capsys.readouterr().err


def test_predict_png_without_pillow(monkeypatch, tmp_path):
    from taugate.commands.predict import load_image

    monkeypatch.setitem(sys.modules, "PIL", None)  # makes `from PIL import Image` fail
    with pytest.raises(RuntimeError, match="pip install pillow"):
        load_image(tmp_path / "x.png")


def test_serve_refuses_a_broken_bundle_before_listening(main, tmp_path, capsys):
    assert main(["serve", str(tmp_path), "--port", "1"]) == 2
    assert "no manifest.json" in capsys.readouterr().err


def test_info_subprocess_smoke(tiny_bundle):
    code = ("import sys, taugate.cli as c; c.COMMANDS = {'info': 'taugate.commands.info'}; "
            "sys.exit(c.main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", code, "info", str(tiny_bundle), "--json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ok"] is True


def test_info_measure_shows_the_speedup_beside_the_mac_ratio(main, tiny_bundle, capsys,
                                                             monkeypatch):
    from taugate.commands import _speedup

    monkeypatch.setattr(_speedup, "BUDGET_S", 0.01)  # the columns, not the timing, are tested
    assert main(["info", str(tiny_bundle)]) == 0
    assert "speedup b1" not in capsys.readouterr().out  # runtime-only by default: no timing
    assert main(["info", str(tiny_bundle), "--measure"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("mode "))
    assert header.split()[header.split().index("ratio") + 1:][:4] == ["speedup", "b1",
                                                                       "speedup", "b256"]
    row = next(line for line in out.splitlines() if line.startswith("rot45 "))
    assert row.split()[row.split().index("fewer") + 1].endswith("x")
    assert main(["info", str(tiny_bundle), "--measure", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info["modes"][0]["measured_speedup"]) == {"batch1", "batch256"}
    assert all(v > 0 for v in info["modes"][0]["measured_speedup"].values())
