"""taugate/bench.py and `taugate bench`: cells, ratios, accuracy, skips, JSON, plot, and a
runtime-only run (no torch, no onnx, no taugate.training/export importable)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from taugate.bench import BenchConfig, run_bench
from taugate.exporting.synthetic import build_random_bundle, random_inputs
from taugate.runtime import ModeRuntime

FAST = {"batches": (1, 8), "threads": (1,), "budget_s": 0.01, "min_rounds": 2}


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory):
    return build_random_bundle(tmp_path_factory.mktemp("b") / "bundle", int8=True)


def test_cells_and_ratios(int8_bundle):
    result = run_bench(int8_bundle, BenchConfig(**FAST))
    assert [(c.mode, c.batch) for c in result.cells] == [
        ("rot0", 1), ("rot45", 1), ("rot0", 8), ("rot45", 8)]
    rt = ModeRuntime.open(int8_bundle)
    for c in result.cells:
        assert c.mac_ratio == rt.manifest.dense.macs / rt.manifest.modes[c.mode].macs
        assert set(c.speedup) == set(c.speedup_same) == {"fp32", "int8"}
        med = c.median_us
        assert c.speedup["int8"] == med["dense/fp32"] / med[f"{c.mode}/int8"]
        assert c.speedup_same["int8"] == med["dense/int8"] / med[f"{c.mode}/int8"]
        assert c.dense_int8_speedup == med["dense/fp32"] / med["dense/int8"]
        assert c.floor_us > 0 and "floor" not in med  # the floor ran in the same rounds
        assert c.ceiling == med["dense/fp32"] / c.floor_us
        assert c.rounds >= 2
    heads = result.headline()
    assert [(h["mode"], h["precision"]) for h in heads] == [
        ("rot0", "fp32"), ("rot0", "int8"), ("rot45", "fp32"), ("rot45", "int8")]
    for h in heads:
        assert (h["small"]["batch"], h["large"]["batch"]) == (1, 8)
        assert h["small"]["ceiling"] > 0 and h["large"]["floor_us"] > 0
    assert result.providers == {"fp32": ["CPUExecutionProvider"],
                                "int8": ["CPUExecutionProvider"]}


def test_accuracy_through_the_runtime(int8_bundle):
    x = random_inputs(3, 64)
    y = np.arange(64) % 10
    result = run_bench(int8_bundle, BenchConfig(modes=("rot45",), **FAST), {"rot45": (x, y)})
    want = {}
    for p in ("fp32", "int8"):
        rt = ModeRuntime.open(int8_bundle, precision=p)
        want[f"rot45/{p}"] = float((rt.predict("rot45", x) == y).mean())
        want[f"dense/{p}"] = float((rt.predict("dense", x) == y).mean())
    assert result.accuracy == {"rot45": want}


def test_fp32_only_bundle_skips_int8_and_says_so(tiny_bundle):
    result = run_bench(tiny_bundle, BenchConfig(**FAST))
    assert all(set(c.speedup) == {"fp32"} for c in result.cells)
    assert any("int8 skipped" in n for n in result.notes)


@pytest.mark.parametrize("kwargs, match", [
    ({"batches": (0,)}, "batches: expected sizes >= 1"),
    ({"threads": ()}, "threads: expected counts >= 1"),
    ({"precisions": ("fp16",)}, "precisions: expected a subset of fp32, int8"),
])
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BenchConfig(**kwargs)


def test_unknown_mode(int8_bundle):
    with pytest.raises(ValueError, match=r"modes \['rot9'\]: not in the bundle"):
        run_bench(int8_bundle, BenchConfig(modes=("rot9",), **FAST))




def test_cli_runtime_only(int8_bundle, tmp_path):
    """`taugate bench` with --data, --json, --plot while torch and onnx cannot be imported
    (the runtime-only install: numpy + onnxruntime, + matplotlib for --plot)."""
    data = tmp_path / "test.npz"
    np.savez(data, x=random_inputs(5, 32), y=np.arange(32) % 10)
    out_json, out_png = tmp_path / "b.json", tmp_path / "b.png"
    code = textwrap.dedent(f"""
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in ("torch", "torchvision", "onnx"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        from taugate.cli import main
        sys.exit(main(["bench", {str(int8_bundle)!r}, "--batch", "1,4", "--threads", "1",
                       "--budget", "0.01", "--data", {str(data)!r}, "--json", {str(out_json)!r},
                       "--plot", {str(out_png)!r}]))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       check=False)
    assert r.returncode == 0, r.stderr
    assert "providers used: {'fp32': ['CPUExecutionProvider']" in r.stdout
    assert "[4/4] rot45 batch 4 threads 1" in r.stderr  # progress
    doc = json.loads(out_json.read_text())
    assert len(doc["cells"]) == 4 and set(doc["accuracy"]) == {"rot0", "rot45"}
    assert doc["headline"][0]["small"]["floor_us"] > 0 and "ceiling" in doc["headline"][0]["large"]
    assert "rot0 fp32 (1 thread, MACs" in r.stdout and ", ceiling " in r.stdout
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("content, match", [
    ({"x": np.zeros((2, 784), np.float32)}, "expected arrays 'x' and 'y'"),
    ({"x": np.zeros((2, 784), np.float32), "y": np.zeros(3)}, "same number"),
])
def test_cli_bad_data(int8_bundle, tmp_path, capsys, content, match):
    from taugate.cli import main

    f = tmp_path / "d.npz"
    np.savez(f, **content)
    assert main(["bench", str(int8_bundle), "--data", str(f), "--batch", "1", "--threads",
                 "1"]) == 2
    assert match in capsys.readouterr().err


@pytest.mark.parametrize("entry", [
    {"facts": {"angle": 45.0}, "mode_facts": {"angle": 45.0}},  # format 1: angle on the entry
    {"facts": {"file": "modes/rot45.onnx", "facts": {"angle": 45.0}},
     "mode_facts": {"source": "mnist-rotation", "angle": 45.0}},  # format 2: entry["facts"]
], ids=["format1", "format2"])
def test_mnist_data_finds_the_angle_in_both_formats(data_root, entry):
    from types import SimpleNamespace

    from taugate.commands.bench import mnist_data

    manifest = SimpleNamespace(input=SimpleNamespace(features=784),
                               modes={"rot45": SimpleNamespace(**entry)})
    data, note = mnist_data(manifest, ["rot45"], data_root)
    assert note is None
    x, y = data["rot45"]
    assert x.shape == (10000, 784) and y.shape == (10000,)
