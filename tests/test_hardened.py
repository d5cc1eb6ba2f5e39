"""Hardening is exact: torch hard gate == numpy hardened == ONNX graph, and compaction keeps
predictions on the calibration set."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from taugate.exporting.graph import build_graph
from taugate.exporting.prune import PruneConfig, compact, firing_rates, keep_masks
from taugate.spec import HardenedLayer, HardenedModel
from taugate.training.families.mlp import MLP, BackboneConfig
from taugate.training.methods import get_method


def tiny_taugate(seed: int, hidden=(24, 16), tau_range=(-0.5, 1.5)):
    torch.manual_seed(seed)
    net = MLP(BackboneConfig(input_dim=784, hidden=hidden))
    method = get_method("taugate")
    model = method.wrap(net)
    with torch.no_grad():
        for act in model.acts:
            act.tau.uniform_(*tau_range)
            act.gain.uniform_(-1.5, 1.5)
    return method, model.set_hard(True)


def ort_logits(model: HardenedModel, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(build_graph(model, "t").SerializeToString(),
                                providers=["CPUExecutionProvider"])
    return sess.run(None, {"pixels": x})[0]


@pytest.mark.parametrize("seed, tau_range", [(0, (-0.5, 1.5)), (1, (-1.0, -0.1)), (2, (0.5, 3.0))])
def test_torch_numpy_onnx_agree(seed, tau_range):
    method, model = tiny_taugate(seed, tau_range=tau_range)
    x = np.random.default_rng(seed).random((256, 784), dtype=np.float32)
    torch_out = model(torch.from_numpy(x)).detach().numpy()
    hard = method.harden(model)
    assert np.abs(hard.forward(x) - torch_out).max() <= 1e-4
    assert np.abs(ort_logits(hard, x) - torch_out).max() <= 1e-4


def test_compaction_is_exact_on_calibration():
    method, model = tiny_taugate(3, tau_range=(0.0, 4.0))
    hard = method.harden(model)
    x = np.random.default_rng(3).random((512, 784), dtype=np.float32)
    masks = keep_masks(hard, firing_rates(hard, x), PruneConfig(below=0.0))
    small = compact(hard, masks)
    assert sum(small.widths) < sum(hard.widths), "expected some never-firing units"
    full, cut = hard.forward(x), small.forward(x)
    assert np.array_equal(full.argmax(1), cut.argmax(1))
    assert np.abs(full - cut).max() <= 1e-5
    assert np.abs(ort_logits(small, x) - full).max() <= 1e-4


def test_relu_layers_export_as_relu():
    method, model = tiny_taugate(4, tau_range=(-2.0, -1.0))
    hard = method.harden(model)
    ops = [n.op_type for n in build_graph(hard, "t").graph.node]
    assert ops.count("Relu") == 2 and "Where" not in ops and "Greater" not in ops


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(weight=np.zeros((3, 2), np.float32), bias=np.zeros(2, np.float32)), "bias"),
        (dict(weight=np.zeros(3, np.float32), bias=np.zeros(3, np.float32)), "2-D"),
        (dict(weight=np.zeros((3, 2), np.float32), bias=np.zeros(3, np.float32),
              threshold=-np.ones(3, np.float32)), ">= 0"),
    ],
)
def test_layer_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HardenedLayer(**kwargs)


def test_input_normalization_is_folded():
    torch.manual_seed(5)
    net = MLP(BackboneConfig(hidden=(8,)))
    hard = get_method("frozen").harden(net)
    x = np.random.default_rng(5).random((64, 784), dtype=np.float32)
    assert np.abs(hard.forward(x) - net(torch.from_numpy(x)).detach().numpy()).max() <= 1e-4
    assert hard.macs == 784 * 8 + 8 * 10
