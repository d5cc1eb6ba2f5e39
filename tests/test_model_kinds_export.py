"""`taugate train --model FILE.py:FACTORY` + `taugate export` on a model with a functional
tanh-GELU, a Linear -> BatchNorm1d -> ReLU and a bias-free SwiGLU block: both layouts, the
runtime against the trained hard-gated torch model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from _export_runs import _pretrain_user, _tabular_modes

from taugate.cli import main
from taugate.runtime import ModeRuntime

MODEL = '''
import torch.nn.functional as F
from torch import nn


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 24), nn.Linear(24, 16, bias=False)
        self.bn = nn.BatchNorm1d(16)
        self.mid = nn.Linear(16, 12)
        self.gate = nn.Linear(12, 20, bias=False)
        self.up = nn.Linear(12, 20, bias=False)
        self.down = nn.Linear(20, 12, bias=False)
        self.act = nn.SiLU()
        self.head = nn.Linear(12, 2)

    def forward(self, x):
        h = self.fc2(F.gelu(self.fc1(x), approximate="tanh"))
        h = self.mid(F.relu(self.bn(h)))
        h = h + self.down(self.act(self.gate(h)) * self.up(h))
        return self.head(h)


def build():
    return Mixed()
'''


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mixed")
    modes = ("a", "b")
    _tabular_modes(tmp / "modes", modes)
    (tmp / "user_model.py").write_text(MODEL)
    _pretrain_user(tmp, tmp / "modes", modes)
    run = tmp / "run"
    assert main(["train", "--out", str(run), "--quiet", "--device", "cpu", "--modes-dir",
                 str(tmp / "modes"), "--model", f"{tmp / 'user_model.py'}:build",
                 "--weights", str(tmp / "user.safetensors"),
                 "--method-option", "unit_l1=0.02"]) == 0
    return run, modes


def test_every_kind_is_a_target(mixed_run):
    from taugate.training.loaded import load_run

    run = load_run(mixed_run[0], modes=["a"])
    got = [(s.producer, s.activation, s.functional, s.up, s.norm) for s in run.sites]
    assert got == [("fc1", "gelu_tanh", True, None, None), ("fc2", "relu", True, None, "bn"),
                   ("gate", "silu", False, "up", None)]


@pytest.mark.parametrize("layout", ["shared", "standalone"])
def test_exported_modes_match_the_trained_hard_gated_model(mixed_run, tmp_path, layout):
    from taugate.training.loaded import load_run

    run_dir, modes = mixed_run
    out = tmp_path / layout
    assert main(["export", str(run_dir), "--out", str(out), "--layout", layout,
                 "--allow-worse"]) == 0
    rt = ModeRuntime.open(out)
    run = load_run(run_dir)
    for name in modes:
        mode = run.modes[name]
        x = mode.calibration[0][:64]  # pruning is exact where it was decided
        with torch.no_grad():
            want = mode.hard_model()(x).numpy()
        np.testing.assert_allclose(rt.run(name, x.numpy()), want, atol=1e-4)
    with torch.no_grad():
        dense = run.foundation(x).numpy()
    np.testing.assert_allclose(rt.run("dense", x.numpy()), dense, atol=1e-4)
    if layout == "standalone":
        graph = onnx.load(str(next((out / "modes").glob("a*.onnx"))))
        shapes = {i.name: list(i.dims) for i in graph.graph.initializer}
        assert shapes["gate.weight"][0] == shapes["up.weight"][0] == shapes["down.weight"][1]
        assert not any("bn." in n for n in shapes)  # folded into fc2
