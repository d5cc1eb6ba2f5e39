"""The fp32 lowering of a conv site's gate (exporting/thresholded.py): the producer conv's output
channels scaled by 1/t after the BatchNorm fold, ``ThresholdedRelu(alpha=1)``, t (times the
gain) folded into the consumer conv's input channels; checked against the hard-gated torch model
(a tiny two-site CNN on random data, seeded)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from taugate.exporting.compact import compact, firing_counts, gate_margins, hard_gated, keep_masks
from taugate.exporting.lowering import export_onnx, lower_checked, lowered_model, state_of
from taugate.exporting.norms import folded_foundation
from taugate.spec import GatedSpec, GatedUnits


class TwoSiteCNN(nn.Module):
    """[N, 1, 8, 8] -> c1-bn1-relu -> c2-bn2-relu -> c3-relu -> mean -> Linear: two conv sites
    (c1 -> c2 and c2 -> c3), so c2 is both a consumer and a lowered producer."""

    def __init__(self):
        super().__init__()
        self.c1, self.bn1 = nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c2, self.bn2 = nn.Conv2d(8, 6, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(6)
        self.c3, self.head = nn.Conv2d(6, 4, 3, padding=1), nn.Linear(4, 3)
        with torch.no_grad():  # non-trivial statistics, as after training
            for bn in (self.bn1, self.bn2):
                bn.running_mean.uniform_(-0.3, 0.3)
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.2, 0.2)

    def forward(self, x):
        h = F.relu(self.bn1(self.c1(x)))
        h = F.relu(self.bn2(self.c2(h)))
        return self.head(F.relu(self.c3(h)).mean((2, 3)))


def _spec(kind: str) -> GatedSpec:
    rng = np.random.default_rng(4)
    t1, t2 = rng.uniform(0.02, 0.3, 8).astype(np.float32), rng.uniform(0.02, 0.3, 6)
    g1, g2 = rng.uniform(0.5, 1.5, 8).astype(np.float32), rng.uniform(0.5, 1.5, 6)
    g1[[2, 5]] = 0  # channels removed by their gain
    t1[[0, 3]] = 0  # plain-ReLU channels in a gated layer
    if kind == "unit-gain":
        g1, g2 = np.ones(8, np.float32), np.ones(6)
    if kind == "second-relu":  # every t == 0: c2 keeps a plain Relu, c1 is still lowered
        t2 = np.zeros(6)
    return GatedSpec((GatedUnits("c1", "c2", "relu", t1, g1, None, None, "bn1"),
                      GatedUnits("c2", "c3", "relu", t2.astype(np.float32),
                                 g2.astype(np.float32), None, None, "bn2")))


def _run(proto, x):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(proto.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x.numpy()})[0]


def _lowered(kind: str):
    torch.manual_seed(0)
    model = TwoSiteCNN().eval()
    spec = _spec(kind)
    x = torch.randn(256, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    folded = folded_foundation(model, [spec])
    hard = hard_gated(folded, spec)
    small, plan = compact(folded, spec, keep_masks(spec, firing_counts(hard, spec, x)))
    fast, tensors = lowered_model(small, plan, spec, state_of(folded))
    proto, diff, _ = lower_checked("m", small, x, "input", "logits", hard, lowered=fast)
    assert diff <= 1e-5
    return hard, small, fast, tensors, proto, x


@pytest.mark.parametrize("kind", ["mixed", "unit-gain", "second-relu"])
def test_the_lowered_conv_graph_matches_the_hard_gated_model(kind):
    hard, small, fast, tensors, proto, x = _lowered(kind)
    clear = gate_margins(small, x) > 1e-5  # a tie within rounding may flip in either one
    assert clear.float().mean() > 0.9
    with torch.no_grad():
        want = hard(x[clear]).numpy()
        np.testing.assert_allclose(fast(x[clear]).numpy(), want, rtol=0, atol=1e-5)
    np.testing.assert_allclose(_run(proto, x[clear]), want, rtol=0, atol=1e-5)
    kept = 8 if kind == "unit-gain" else 6  # zero-gain channels are gone from both convs
    assert small.c1.out_channels == small.c2.in_channels == kept
    assert tensors["cscale.c1"].shape == tensors["rscale.c1"].shape == (kept,)


@pytest.mark.parametrize("kind,ops", [
    ("mixed", ["Conv", "ThresholdedRelu", "Conv", "ThresholdedRelu", "Conv", "Relu"]),
    ("second-relu", ["Conv", "ThresholdedRelu", "Conv", "Relu", "Conv", "Relu"]),
])
def test_a_conv_gate_is_one_operator(kind, ops):
    """No Greater -> Cast -> Mul over every position: one ThresholdedRelu per gated conv, and
    the model's own ``F.relu`` after it is dropped (the gated output is already >= 0)."""
    proto = _lowered(kind)[4]
    got = [n.op_type for n in proto.graph.node]
    assert got[:len(ops)] == ops
    assert not {"Greater", "Cast", "Mul"} & set(got), got
    assert [a.f for n in proto.graph.node for a in n.attribute
            if n.op_type == "ThresholdedRelu"] == [1.0] * ops.count("ThresholdedRelu")


def test_a_non_relu_conv_site_keeps_the_elementwise_gate():
    torch.manual_seed(0)
    model = TwoSiteCNN().eval()
    spec = _spec("mixed")
    spec = replace(spec, targets=(replace(spec.targets[0], activation="gelu"),
                                  spec.targets[1]))
    x = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    folded = folded_foundation(model, [spec])
    small, plan = compact(folded, spec, [np.ones(8, bool), np.ones(6, bool)])
    fast, tensors = lowered_model(small, plan, spec, state_of(folded))
    assert "rscale.c1" not in tensors and "rscale.c2" in tensors
    ops = [n.op_type for n in export_onnx(fast, x, "input", "logits").graph.node]
    assert ops.count("ThresholdedRelu") == 1 and "Greater" in ops
