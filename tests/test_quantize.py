"""export/quantize.py and export/variants.py: int8 graphs stay close to the numpy model, the
guard refuses a variant that collapses, and the ops emitted are the documented ones."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from taugate.exporting.graph import build_graph
from taugate.exporting.quantize import SCHEMES, gemm_to_matmul, operators, quantize
from taugate.exporting.synthetic import random_hardened, random_inputs
from taugate.exporting.variants import QuantizationGuardError, int8_variant
from taugate.spec import HardenedLayer, HardenedModel


def mixed_model(seed: int = 0) -> HardenedModel:
    """Random MLP with half the thresholds 0 and half in [0.05, 0.45): the mix that made the
    old scaled form scale rows by 1e12."""
    rng = np.random.default_rng(seed)
    layers = list(random_hardened(seed, widths=(64, 32)).layers)
    for i in range(2):
        n = layers[i].out_features
        t = (0.05 + 0.4 * rng.random(n)).astype(np.float32)
        t[rng.random(n) < 0.5] = 0
        layers[i] = HardenedLayer(layers[i].weight, layers[i].bias, t)
    return HardenedModel(tuple(layers))


def run(data, x):
    sess = ort.InferenceSession(data if isinstance(data, bytes) else data.SerializeToString(),
                                providers=["CPUExecutionProvider"])
    return sess.run(None, {"pixels": x})[0]


def test_gemm_to_matmul_is_exact():
    model = mixed_model(1)
    proto = build_graph(model, "m")
    x = random_inputs(2, 300)
    mm = gemm_to_matmul(proto)
    assert "Gemm" not in {n.op_type for n in mm.graph.node}
    np.testing.assert_allclose(run(mm, x), run(proto, x), atol=1e-5, rtol=0)


EXPECTED_OPS = {
    "dynamic-per-channel": {"DynamicQuantizeLinear", "MatMulInteger", "Cast", "Mul", "Add",
                            "ThresholdedRelu", "Greater", "MatMul"},  # int8_gate.py: gates
    # lowered, the classifier head kept fp32
    "static-per-channel": {"QuantizeLinear", "DequantizeLinear", "Gemm", "Greater", "Cast",
                           "Mul"},
}


@pytest.mark.parametrize("scheme", SCHEMES)
def test_int8_stays_close_to_numpy(scheme):
    model = mixed_model(3)
    x = random_inputs(4, 512)
    q = quantize(build_graph(model, "m"), scheme, calibration=random_inputs(5, 512))
    got, want = run(q, x), model.forward(x)
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.95
    # a gate may flip where z is within int8 rounding of t: bound the typical error
    assert np.median(np.abs(got - want)) <= 0.01 * np.abs(want).max()
    ops = operators(q)
    assert {d for d, _ in ops} == {""}  # default ONNX domain only
    assert {op for _, op in ops} <= EXPECTED_OPS[scheme] | {"Relu"}
    assert EXPECTED_OPS[scheme] - {"Greater", "Cast", "Mul"} <= {op for _, op in ops}


def test_int8_keeps_opset_ir_and_metadata():
    import onnx

    proto = build_graph(mixed_model(6), "m", {"taugate.mode": "m"})
    q = onnx.load_from_string(quantize(proto))
    assert q.ir_version == proto.ir_version
    assert [(o.domain, o.version) for o in q.opset_import if o.domain in ("", "ai.onnx")] == \
        [("", 17)]
    assert {p.key: p.value for p in q.metadata_props} == {"taugate.mode": "m"}


def test_guard_refuses_a_collapsing_variant():
    """The old 1e12-scaled form loses everything in int8: the guard must say so."""
    model = mixed_model(7)
    x = random_inputs(8, 512)
    scaled = build_graph(model, "m", form="scaled").SerializeToString()
    with pytest.raises(QuantizationGuardError, match="int8 variant refused"):
        int8_variant("m", scaled, {"mode": (x, model.forward(x).argmax(1))}, 0.05)


def test_guard_accepts_the_default_form():
    model = mixed_model(7)
    x = random_inputs(8, 512)
    fp32 = build_graph(model, "m").SerializeToString()
    v = int8_variant("m", fp32, {"mode": (x, model.forward(x).argmax(1))}, 0.05)
    assert v.precision == "int8" and v.quantization == "dynamic-per-channel"
    assert 0.95 <= v.test_accuracy <= 1.0


@pytest.mark.parametrize("kwargs, match", [
    ({"scheme": "fp4"}, "quantization scheme: expected one of"),
    ({"scheme": "static-per-channel"}, "needs calibration inputs"),
])
def test_bad_quantize_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        quantize(build_graph(mixed_model(0), "m"), **kwargs)
