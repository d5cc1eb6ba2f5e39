"""The example CNN (examples/mnist_cnn.py) is what the docs say it is, and the families table
(scripts/measure_families.py) counts FFN MACs and writes its rows from the measured numbers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from taugate.exporting.macs import linear_macs
from taugate.training.targets import resolve_targets

ROOT = Path(__file__).resolve().parents[1]


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cnn():
    return _load(ROOT / "examples" / "mnist_cnn.py").build().eval()


@pytest.fixture(scope="module")
def families():
    return _load(ROOT / "scripts" / "measure_families.py")


def test_the_example_cnn_has_two_conv_sites_with_folded_batchnorms(cnn):
    targets = resolve_targets(cnn, torch.rand(2, 784))
    assert [(s.producer, s.consumer, s.norm, s.units, s.conv) for s in targets.sites] == [
        ("c1", "c2", "bn1", 16, True), ("c2", "c3", "bn2", 32, True)]
    assert cnn(torch.rand(3, 784)).shape == (3, 10)


def test_ffn_macs_count_the_layers_the_sites_touch(cnn, families):
    targets = resolve_targets(cnn, torch.rand(2, 784))
    whole = linear_macs(cnn, torch.rand(1, 784))
    assert families.ffn_macs(targets) == whole - 32 * 10  # all but the head
    # c1 keeps 8 of 16 channels, c2 16 of 32: c1's rows, c2's rows and columns, c3's columns
    c1, c2, c3 = 784 * 1 * 8 * 9, 196 * 8 * 16 * 9, 49 * 16 * 32 * 9
    assert families.ffn_macs(targets, {"c1": 8, "c2": 16}) == c1 + c2 + c3
    assert targets.macs({"c1": 8, "c2": 16}) == c1 + c2 + c3 + 32 * 10


def test_the_table_has_one_row_per_family_from_its_numbers(families):
    mode = {"units_kept": [8, 16], "units_total": [16, 32], "mac_ratio": 2.5,
            "ffn_mac_ratio": 3.0, "accuracy": 0.97, "soft": 0.971, "frozen": 0.96,
            "speedup_b1": 1.1, "speedup_b256": 1.8}
    machine = {"cpu": "cpu", "cpu_count": 2, "onnxruntime": "1.x", "loadavg_before": [1.5, 1, 1],
               "loadavg_after": [2.5, 1, 1]}
    text = families.table([{"name": "cnn", "sites": ["c1", "c2"], "machine": machine,
                             "modes": {"rot0": mode, "rot45": dict(mode, accuracy=0.95)}}])
    row = text.splitlines()[2]
    assert row.startswith("| cnn | 2 | rot0 / rot45 | 8 16 / 8 16 (of 16 32) | 2.50× / 2.50×")
    assert "0.9700 / 0.9500 (0.9710 / 0.9710; 0.9600 / 0.9600)" in row
    assert "1.10× / 1.10× | 1.80× / 1.80× |" in row
    assert "load average 1.5–2.5" in text
