"""taugate/exporting/int8_gate.py: the hard gate lowered for int8 (``ThresholdedRelu -> Mul``),
the same function as ``Greater -> Cast -> Mul``, one operator fewer, in every int8 variant."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import numpy_helper

from taugate.exporting.int8_gate import lower_gates_for_int8, narrow_heads
from taugate.exporting.quantize import operators, quantize
from taugate.exporting.synthetic import graph_bytes, random_hardened, random_inputs
from taugate.spec import HardenedModel


def _run(model, x):
    data = model if isinstance(model, bytes) else model.SerializeToString()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _with_zero_thresholds(seed: int) -> HardenedModel:
    """Random thresholds in [0, 0.5), a third of them exactly 0 (plain ReLU units)."""
    return random_hardened(seed, widths=(48, 24), zero_every=3)


def test_the_lowered_gate_computes_the_same_logits():
    model = onnx.load_from_string(graph_bytes(_with_zero_thresholds(3), "rot45"))
    lowered, count = lower_gates_for_int8(model)
    assert count == 2
    ops = [n.op_type for n in lowered.graph.node]
    assert ops == ["Gemm", "ThresholdedRelu", "Mul"] * 2 + ["Gemm"]
    assert len(lowered.graph.node) == len(model.graph.node) - 2
    x = random_inputs(4, 512)
    np.testing.assert_allclose(_run(lowered, x), _run(model, x), rtol=1e-5, atol=1e-5)
    onnx.checker.check_model(lowered, full_check=True)


def test_a_narrow_fp32_head_takes_the_last_gates_threshold():
    model = onnx.load_from_string(graph_bytes(_with_zero_thresholds(3), "rot45"))
    heads = narrow_heads(model)
    assert heads == {"gemm2"}  # the 10-class head; the 48- and 24-unit hidden layers are not
    lowered, count = lower_gates_for_int8(model, heads)
    assert count == 2
    assert [n.op_type for n in lowered.graph.node] == [
        "Gemm", "ThresholdedRelu", "Mul", "Gemm", "ThresholdedRelu", "Gemm"]
    x = random_inputs(4, 512)
    np.testing.assert_allclose(_run(lowered, x), _run(model, x), rtol=1e-5, atol=1e-5)
    ops = [op for _, op in operators(quantize(model.SerializeToString()))]
    assert "MatMul" in ops  # the head stays fp32 in the int8 variant


def test_graphs_without_the_pattern_are_left_alone():
    plain = onnx.load_from_string(graph_bytes(random_hardened(1, thresholds=False), "dense"))
    out, count = lower_gates_for_int8(plain)
    assert count == 0 and out.SerializeToString() == plain.SerializeToString()
    negative = onnx.load_from_string(graph_bytes(_with_zero_thresholds(5), "m"))
    t = next(i for i in negative.graph.initializer if i.name == "act0_t")
    arr = numpy_helper.to_array(t).copy()
    arr[1] = -0.25  # a negative threshold: that gate is not lowerable, kept as is
    t.CopyFrom(numpy_helper.from_array(arr, t.name))
    out, count = lower_gates_for_int8(negative)
    assert count == 1 and [n.op_type for n in out.graph.node].count("Greater") == 1


def test_int8_variants_use_the_lowered_gate_and_keep_the_predictions():
    fp32 = graph_bytes(_with_zero_thresholds(7), "rot45")
    data = quantize(fp32)
    ops = {op for _, op in operators(data)}
    assert "ThresholdedRelu" in ops and "Greater" not in ops
    x = random_inputs(8, 1024)
    agree = (_run(data, x).argmax(1) == _run(fp32, x).argmax(1)).mean()
    assert agree >= 0.97
