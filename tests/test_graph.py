"""export/graph.py: every activation form matches the numpy HardenedModel.forward."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from taugate.exporting.graph import FORMS, build_graph
from taugate.exporting.synthetic import random_hardened
from taugate.spec import HardenedLayer, HardenedModel


def with_thresholds(model: HardenedModel, kinds: tuple[str, ...], seed: int = 0) -> HardenedModel:
    """Thresholds per hidden layer: "zero" (all 0), "positive" (all > 0) or "mixed"."""
    rng = np.random.default_rng(seed)
    layers = list(model.layers)
    for i, kind in enumerate(kinds):
        n = layers[i].out_features
        t = (0.05 + 0.4 * rng.random(n)).astype(np.float32)
        if kind == "zero":
            t[:] = 0
        elif kind == "mixed":
            t[rng.random(n) < 0.5] = 0
        layers[i] = HardenedLayer(layers[i].weight, layers[i].bias, t)
    return HardenedModel(tuple(layers))


def run(proto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"pixels": x})[0]


def clear_of_thresholds(model: HardenedModel, x: np.ndarray, margin: float = 1e-4) -> np.ndarray:
    """Rows whose pre-activations are all at least ``margin`` away from a positive threshold:
    a step gate flips under float rounding right at ``z == t`` in any implementation."""
    ok = np.ones(len(x), bool)
    h = x
    for layer in model.layers[:-1]:
        z = h @ layer.weight.T + layer.bias
        near = (np.abs(z - layer.threshold) < margin) & (layer.threshold > 0)
        ok &= ~near.any(axis=1)
        h = np.where(z > layer.threshold, z, 0).astype(np.float32)
    return x[ok]


CASES = [("zero", "zero"), ("positive", "positive"), ("mixed", "mixed"), ("zero", "mixed"),
         ("positive", "zero"), ("mixed", "positive")]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("kinds", CASES, ids=["-".join(c) for c in CASES])
def test_onnx_matches_numpy(form, kinds):
    model = with_thresholds(random_hardened(3, widths=(24, 12)), kinds)
    x = clear_of_thresholds(model, np.random.default_rng(1).random((600, 784), dtype=np.float32))
    assert len(x) > 500
    got = run(build_graph(model, "m", form=form), x)
    np.testing.assert_allclose(got, model.forward(x), atol=1e-4, rtol=0)


@pytest.mark.parametrize("form", FORMS)
def test_relu_when_thresholds_all_zero(form):
    model = with_thresholds(random_hardened(4, widths=(8, 6)), ("zero", "zero"))
    ops = [n.op_type for n in build_graph(model, "m", form=form).graph.node]
    assert ops == ["Gemm", "Relu", "Gemm", "Relu", "Gemm"]


def test_default_form_is_relu_or_mask_multiply():
    model = with_thresholds(random_hardened(5, widths=(8, 6)), ("mixed", "zero"))
    ops = [n.op_type for n in build_graph(model, "m").graph.node]
    assert ops == ["Gemm", "Greater", "Cast", "Mul", "Gemm", "Relu", "Gemm"]


@pytest.mark.parametrize("kinds", CASES, ids=["-".join(c) for c in CASES])
def test_default_form_keeps_weights_unscaled(kinds):
    """No row scaling (the old 1e12 for t == 0): every initializer is a trained tensor as is."""
    model = with_thresholds(random_hardened(6, widths=(16, 12)), kinds)
    inits = {t.name: numpy_helper.to_array(t) for t in build_graph(model, "m").graph.initializer}
    for i, layer in enumerate(model.layers):
        np.testing.assert_array_equal(inits[f"gemm{i}_W"], layer.weight)
        np.testing.assert_array_equal(inits[f"gemm{i}_b"], layer.bias)


@pytest.mark.parametrize("kinds", CASES, ids=["-".join(c) for c in CASES])
def test_default_form_survives_fp16(kinds):
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = with_thresholds(random_hardened(7, widths=(24, 12)), kinds)
    x = clear_of_thresholds(model, np.random.default_rng(2).random((600, 784), dtype=np.float32),
                            margin=5e-3)
    half = convert_float_to_float16(build_graph(model, "m"), keep_io_types=True)
    got, want = run(half, x), model.forward(x)
    np.testing.assert_allclose(got, want, atol=0.02 * np.abs(want).max(), rtol=0)


def test_unknown_form_is_refused():
    with pytest.raises(ValueError, match="form: expected one of"):
        build_graph(random_hardened(0, widths=(4,)), "m", form="sigmoid")
