"""taugate/exporting/int8_align.py: int8 variants pad their hidden widths to a multiple of 16
with inert units -- the same logits as the unpadded int8 graph, the manifest's units unchanged,
and every consumer of int8 variants (ModeRuntime, run_mixed's one graph, the memory budget,
``taugate info``, the graph check) serving them as before."""

from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import numpy_helper

from taugate import cli
from taugate.bundle.graph_check import check_model
from taugate.exporting.int8_align import align_units, padded_width
from taugate.exporting.int8_gate import lower_gates_for_int8, narrow_heads
from taugate.exporting.quantize import gemm_to_matmul, quantize
from taugate.exporting.synthetic import (
    build_random_bundle,
    graph_bytes,
    random_hardened,
    random_inputs,
)
from taugate.runtime import ModeRuntime
from taugate.spec import HardenedModel

WIDTHS = (40, 21)  # neither a multiple of 16: padded to 48 and 32


def _run(data, x):
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _gated(seed: int, widths=WIDTHS, heads: int = 10) -> HardenedModel:
    """Random thresholds, a third of them exactly 0 (plain ReLU units)."""
    return random_hardened(seed, widths=widths, n_out=heads, zero_every=3)


def _float_int8_form(model: HardenedModel):
    """The float graph the quantizer pads: gates lowered for int8, Gemm as MatMul + Add."""
    proto = onnx.load_from_string(graph_bytes(model, "m"))
    return gemm_to_matmul(lower_gates_for_int8(proto, narrow_heads(proto))[0])


def _shapes(data: bytes) -> dict:
    return {t.name: tuple(t.dims) for t in onnx.load_from_string(data).graph.initializer}


@pytest.mark.parametrize("heads", [10, 40])  # a narrow fp32 head; a wide one, quantized too
def test_padded_int8_graph_gives_the_unpadded_logits(heads):
    fp32 = graph_bytes(_gated(3, heads=heads), "m")
    padded, plain = quantize(fp32), quantize(fp32, align=1)
    for n in (1, 5, 256):
        x = random_inputs(n, n)
        np.testing.assert_array_equal(_run(padded, x), _run(plain, x))
    shapes = set(_shapes(padded).values())
    hidden = [padded_width(w) for w in WIDTHS]
    assert hidden == [48, 32]
    # both products and the head's rows padded; no tensor keeps an unaligned hidden width
    assert {(784, hidden[0]), (hidden[0], hidden[1]), (hidden[1], heads)} <= shapes
    assert {d for s in shapes for d in s} <= {784, *hidden, heads}
    assert (WIDTHS[0], WIDTHS[1]) in _shapes(plain).values()


def test_padded_units_are_inert():
    """Zero weights into and out of every padded unit, zero biases, and thresholds that keep a
    padded unit at 0 (its value is 0 whatever the input)."""
    proto = _float_int8_form(_gated(4))
    out, padded = align_units(proto)
    assert sorted(padded.values()) == [(21, 32), (40, 48)]
    arrays = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    before = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for name, a in arrays.items():
        b = before[name]
        if a.shape == b.shape:
            np.testing.assert_array_equal(a, b)
            continue
        np.testing.assert_array_equal(a[tuple(slice(0, n) for n in b.shape)], b)
        rest = a.copy()
        rest[tuple(slice(0, n) for n in b.shape)] = 0
        assert not rest.any(), name  # everything new is 0


def test_aligned_widths_are_unchanged():
    """The dense model (and any mode whose widths are multiples of 16) quantizes to the same
    bytes with and without alignment."""
    for widths in [(32, 16), (64, 48)]:
        fp32 = graph_bytes(_gated(5, widths), "dense")
        assert quantize(fp32) == quantize(fp32, align=1)
    proto = _float_int8_form(_gated(5, (32, 16)))
    out, padded = align_units(proto)
    assert padded == {} and out.SerializeToString() == proto.SerializeToString()


def test_only_the_exact_pattern_is_padded():
    proto = _float_int8_form(_gated(6))
    hidden = proto.graph.node[0].output[0]  # the first product's output made a graph output
    proto.graph.output.append(onnx.helper.make_tensor_value_info(hidden, 1, None))
    out, padded = align_units(proto)
    assert sorted(padded.values()) == [(21, 32)]  # the first layer stays 40 wide
    with pytest.raises(ValueError, match="multiple: expected an integer >= 1"):
        align_units(proto, 0)
    assert align_units(proto, 1)[1] == {}


@pytest.fixture(scope="module")
def unaligned_bundle(tmp_path_factory):
    return build_random_bundle(tmp_path_factory.mktemp("b") / "bundle", modes=("a", "b", "c"),
                               widths=WIDTHS, int8=True)


def test_consumers_serve_padded_variants(unaligned_bundle, monkeypatch):
    root = unaligned_bundle
    manifest = json.loads((root / "manifest.json").read_text())
    x = random_inputs(9, 64)
    names = np.array(["a", "b", "c", "a"] * 16)
    with ModeRuntime.open(root, providers="cpu", precision="int8") as rt:
        for mode in rt.modes:
            entry = manifest["modes"][mode]
            assert entry["units_kept"] == list(WIDTHS)  # the real units, not the padded ones
            data = (root / entry["variants"]["int8"]["file"]).read_bytes()
            check_model(data, manifest["format_version"], mode)
            assert (padded_width(WIDTHS[0]), padded_width(WIDTHS[1])) in _shapes(data).values()
            plain = quantize((root / entry["file"]).read_bytes(), align=1)
            np.testing.assert_array_equal(rt.run(mode, x), _run(plain, x))
        mixed = rt.run_mixed(names, x)
        assert rt._mixed_graph[1] is not None  # one graph holding the padded modes
        for mode in rt.modes:
            np.testing.assert_allclose(mixed[names == mode], rt.run(mode, x[names == mode]),
                                       atol=1e-5, rtol=0)
    with ModeRuntime.open(root, providers="cpu", precision="int8", max_sessions=1,
                          memory_budget="64M") as rt:
        for mode in ("a", "b", "a"):
            assert rt.run(mode, x).shape == (64, 10)
    monkeypatch.setattr(cli, "COMMANDS", {"info": "taugate.commands.info"})
    assert cli.main(["info", str(root)]) == 0
