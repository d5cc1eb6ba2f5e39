"""training/peers.py: Torch-Pruning and scratch peers have exactly the mode's kept units, and
their exported graphs compute what the torch models compute."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from taugate.lab.peers import (
    PeersConfig,
    harden,
    n_params,
    peer_graph,
    scratch_mlp,
    torch_pruned,
)
from taugate.training.families.mlp import MLP, BackboneConfig
from taugate.training.sources import Mode, ModeData, Split

pytest.importorskip("torch_pruning")


def fake_mode(n: int = 512, seed: int = 0) -> ModeData:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 784, generator=g)
    y = (x[:, 0] > 0.5).to(torch.int64)
    x[:, :200] = y[:, None].float()  # a strong signal: labels any small MLP can learn
    s = Split(x, y)
    return ModeData(Mode("rot0", 0.0), s, s, s)


def onnx_logits(graph: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(graph, providers=["CPUExecutionProvider"]).run(
        None, {"pixels": x})[0]


FAST = PeersConfig(finetune_epochs=1, scratch_epochs=1, taylor_batches=1)


@pytest.mark.parametrize("kept", [[5, 3], [16, 1], [1, 8]])
def test_torch_pruning_keeps_exactly_the_units(kept):
    torch.manual_seed(0)
    foundation = MLP(BackboneConfig(hidden=(16, 8))).eval()
    mode = fake_mode()
    model = torch_pruned(foundation, kept, mode, FAST)
    hard = harden(model)
    assert hard.widths == kept
    x = mode.test.x[:64]
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(onnx_logits(peer_graph(hard, "tp"), x.numpy()), want, atol=1e-4)
    assert n_params(hard) == sum(p.numel() for p in model.linears.parameters())
    # the foundation itself is untouched
    assert [lin.out_features for lin in foundation.linears] == [16, 8, 10]


def test_scratch_mlp_has_the_shape_and_learns():
    mode = fake_mode()
    model = scratch_mlp([12, 6], mode, PeersConfig(scratch_epochs=20))
    assert harden(model).widths == [12, 6]
    with torch.no_grad():
        acc = (model(mode.test.x).argmax(1) == mode.test.y).float().mean()
    assert acc > 0.75  # two balanced classes: chance is 0.5


def test_bad_config():
    with pytest.raises(ValueError, match="finetune_epochs/scratch_epochs/taylor_batches"):
        PeersConfig(finetune_epochs=0)
