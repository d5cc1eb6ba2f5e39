"""The fp32 lowering of the hard gate (exporting/thresholded.py): rows scaled by 1/t,
``ThresholdedRelu(alpha=1)``, t folded into the consumer's columns."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import onnxruntime as ort
import pytest
import torch

from taugate.bundle.schema import scale_pairs
from taugate.bundle.steps import parse_step
from taugate.exporting.compact import compact, gate_margins, hard_gated, keep_masks
from taugate.exporting.lowering import export_onnx, lowered_model, shared_graph, state_of
from taugate.exporting.weightless import weightless
from taugate.spec import GatedSpec
from tests._gated_models import MLP_TARGETS, odd_mlp, random_spec


def _spec(kind: str) -> GatedSpec:
    spec = random_spec(MLP_TARGETS, seed=3)  # a third of the thresholds exactly 0: mixed layers
    first, second = (replace(t, act=a) for t, a in zip(spec.targets, ("act_a", "act_b")))
    spec = replace(spec, targets=(first, second))
    if kind == "all-positive":
        first = replace(first, threshold=first.threshold + np.float32(0.05))
    elif kind == "one-layer-relu":  # every kept t == 0: a plain Linear + Relu, not lowered
        second = replace(second, threshold=np.zeros_like(second.threshold))
    elif kind == "override":
        return replace(spec, overrides={"middle.bias": np.linspace(-0.2, 0.2, 16, dtype=np.float32)})
    return replace(spec, targets=(first, second))


def _lowered(kind: str):
    model = odd_mlp()
    spec = _spec(kind)
    x = torch.randn(512, 13, generator=torch.Generator().manual_seed(0))
    masks = keep_masks(spec, [np.ones(t.units, np.int64) for t in spec.targets])
    small, plan = compact(model, spec, masks)
    fast, tensors = lowered_model(small, plan, spec, state_of(model))
    proto = export_onnx(fast, x, "input", "logits")
    return model, spec, x, small, plan, fast, tensors, proto


def _run(proto, x):
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x.numpy()})[0]


@pytest.mark.parametrize("kind", ["mixed", "all-positive", "one-layer-relu", "override"])
def test_lowered_graph_matches_the_hard_gated_model(kind):
    model, spec, x, small, plan, fast, tensors, proto = _lowered(kind)
    hard = hard_gated(model, spec)
    clear = gate_margins(small, x) > 1e-5  # a tie within rounding may flip in either one
    assert clear.float().mean() > 0.9
    with torch.no_grad():
        want = hard(x[clear]).numpy()
        assert np.abs(fast(x[clear]).numpy() - want).max() <= 1e-5
    assert np.abs(_run(proto, x[clear]) - want).max() <= 1e-5
    ops = [n.op_type for n in proto.graph.node]
    if kind == "one-layer-relu":
        assert ops == ["Gemm", "ThresholdedRelu", "Gemm", "Relu", "Gemm"]
    else:
        assert ops == ["Gemm", "ThresholdedRelu", "Gemm", "ThresholdedRelu", "Gemm"]
    assert [a.f for n in proto.graph.node for a in n.attribute if n.op_type ==
            "ThresholdedRelu"] == [1.0] * ops.count("ThresholdedRelu")


def test_zero_threshold_units_are_relu_units():
    """A unit with t == 0 passes every z > 2**-40 unchanged, as the model's ReLU does."""
    model, spec, x, small, plan, fast, tensors, proto = _lowered("mixed")
    kept = plan["stem"].rows
    zero = spec.targets[0].threshold[kept] == 0
    assert zero.any() and (~zero).any()
    hidden = _run(_truncated(proto), x)  # the first ThresholdedRelu's output
    z = torch.relu(model.stem(x)).detach().numpy()[:, kept]
    rows = tensors["rscale.stem"]
    np.testing.assert_array_equal(rows[zero], np.float32(2.0 ** 40))
    np.testing.assert_allclose(hidden[:, zero] / rows[zero], z[:, zero], rtol=1e-6, atol=1e-12)


def _truncated(proto):
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(proto)
    name = next(n.output[0] for n in out.graph.node if n.op_type == "ThresholdedRelu")
    del out.graph.output[:]
    out.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT,
                                                               None))
    return out


@pytest.mark.parametrize("kind", ["mixed", "override"])
def test_shared_layout_rebuilds_scaled_rows_bit_for_bit(kind):
    model, spec, x, small, plan, fast, tensors, proto = _lowered(kind)
    graph = shared_graph(proto, fast, plan, spec, state_of(model), tensors)
    _, steps = weightless(graph, "m")  # raises unless every initializer is rebuilt exactly
    by_name = {s["name"]: s for s in steps}
    assert by_name["middle.weight"]["scale"] == [[1, "cscale.stem"], [0, "rscale.middle"]]
    assert by_name["stem.weight"]["scale"] == [0, "rscale.stem"]
    assert not any(k.startswith(("t.", "gain.")) for k in graph.tensors)
    parsed = parse_step(json.loads(json.dumps(by_name["middle.weight"])), "s", True, True)
    assert scale_pairs(parsed.scale) == ((1, "cscale.stem"), (0, "rscale.middle"))
    if kind == "override":
        assert by_name["middle.bias"]["source"] == "mode"
