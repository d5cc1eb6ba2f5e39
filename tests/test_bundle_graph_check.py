"""taugate.bundle.graph_check: operator allowlist and external-data refusal, on real graphs."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import random_hardened
from onnx import TensorProto, helper, numpy_helper

from taugate.bundle.graph_check import ALLOWED_OPS, MATERIALIZED, check_model, parse_model
from taugate.exporting.graph import FORMS, build_graph
from taugate.runtime import BundleIntegrityError, ModeRuntime

META = {"taugate.mode": "rot0", "taugate.format_version": "1"}


def _model(nodes, inits=(), opsets=(("", 17),), n_in=4, n_out=3, functions=()):
    graph = helper.make_graph(
        list(nodes), "g", [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", n_in])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", n_out])],
        initializer=list(inits))
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets],
                              ir_version=8, functions=list(functions))
    helper.set_model_props(proto, META)
    return proto


def _gemm_model(weight: onnx.TensorProto | None = None):
    w = weight if weight is not None else numpy_helper.from_array(np.ones((3, 4), np.float32), "W")
    b = numpy_helper.from_array(np.zeros(3, np.float32), "b")
    return _model([helper.make_node("Gemm", ["pixels", "W", "b"], ["logits"], transB=1)], [w, b])


def _external(name: str, location: str, dims=(3, 4)) -> onnx.TensorProto:
    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(dims))
    t.data_location = TensorProto.EXTERNAL
    entry = t.external_data.add()
    entry.key, entry.value = "location", location
    return t


@pytest.mark.parametrize("form", FORMS)
def test_the_exporters_graphs_pass_format_1(form):
    for thresholds in (False, True):
        data = build_graph(random_hardened(0, thresholds=thresholds), "m", META, form=form)
        info = check_model(data.SerializeToString(), 1, "m")
        ops = {n.op_type for n in info.graph.nodes}
        assert ops and ops <= ALLOWED_OPS[1][""]


def _loop():
    body = helper.make_graph([helper.make_node("Identity", ["c"], ["c_out"])], "body",
                             [helper.make_tensor_value_info(n, t, []) for n, t in
                              (("i", TensorProto.INT64), ("c", TensorProto.BOOL))],
                             [helper.make_tensor_value_info("c_out", TensorProto.BOOL, [])])
    return [helper.make_node("Loop", ["", ""], [], body=body)]


def _custom_domain():
    return [helper.make_node("Gemm", ["pixels", "W", "b"], ["logits"], domain="evil.ops")]


def _gemm_with_subgraph():
    g = helper.make_graph([], "sub", [], [])
    return [helper.make_node("Gemm", ["pixels", "W", "b"], ["logits"], transB=1, extra=g)]


# (case, nodes, opsets, message fragment)
REFUSED_GRAPHS = [
    ("loop", _loop(), (("", 17),), "operator 'Loop'"),
    ("if", [helper.make_node("If", ["c"], ["y"], then_branch=helper.make_graph([], "t", [], []),
                             else_branch=helper.make_graph([], "e", [], []))], (("", 17),),
     "operator 'If'"),
    ("scan", [helper.make_node("Scan", ["x"], ["y"], num_scan_inputs=1,
                               body=helper.make_graph([], "b", [], []))], (("", 17),),
     "operator 'Scan'"),
    ("constant-of-shape-bomb", [helper.make_node("ConstantOfShape", ["shape"], ["y"])],
     (("", 17),), "operator 'ConstantOfShape'"),
    ("custom-domain", _custom_domain(), (("", 17), ("evil.ops", 1)), "opset import 'evil.ops'"),
    ("custom-domain-node", _custom_domain(), (("", 17),), "domain 'evil.ops'"),
    ("subgraph-attribute", _gemm_with_subgraph(), (("", 17),), "subgraph"),
    ("future-opset", [helper.make_node("Relu", ["pixels"], ["logits"])], (("", 99),),
     "version 99"),
]


@pytest.mark.parametrize("nodes,opsets,needle", [r[1:] for r in REFUSED_GRAPHS],
                         ids=[r[0] for r in REFUSED_GRAPHS])
def test_refuses_operators_domains_and_subgraphs(nodes, opsets, needle):
    data = _model(nodes, opsets=opsets).SerializeToString()
    with pytest.raises(BundleIntegrityError, match="modes/x.onnx") as info:
        check_model(data, 1, "modes/x.onnx")
    assert needle in str(info.value)


def test_format_2_allows_more_than_format_1():
    data = _model([helper.make_node("MatMul", ["pixels", "W"], ["logits"])]).SerializeToString()
    check_model(data, 2, "m")
    with pytest.raises(BundleIntegrityError, match="operator 'MatMul'"):
        check_model(data, 1, "m")
    with pytest.raises(BundleIntegrityError, match="no operator allowlist for format_version 9"):
        check_model(data, 9, "m")


def test_format_3_adds_only_the_decoders_attention_and_fused_norm():
    from taugate.bundle.graph_check import ALLOWED_OPS

    assert ALLOWED_OPS[3][""] == ALLOWED_OPS[2][""]
    assert ALLOWED_OPS[3]["com.microsoft"] - ALLOWED_OPS[2]["com.microsoft"] == {
        "GroupQueryAttention", "SkipSimplifiedLayerNormalization"}


@pytest.mark.parametrize("op", ["GroupQueryAttention", "SkipSimplifiedLayerNormalization"])
def test_the_decoders_contrib_ops_are_refused_outside_format_3(op):
    node = helper.make_node(op, ["pixels", "W"], ["logits"], domain="com.microsoft")
    data = _model([node], opsets=[("", 17), ("com.microsoft", 1)]).SerializeToString()
    check_model(data, 3, "m")
    with pytest.raises(BundleIntegrityError, match=f"operator '{op}'"):
        check_model(data, 2, "m")


def test_refuses_model_local_functions():
    fn = helper.make_function("evil.ops", "F", ["x"], ["y"],
                              [helper.make_node("Relu", ["x"], ["y"])],
                              [helper.make_opsetid("", 17)])
    data = _model([helper.make_node("Relu", ["pixels"], ["logits"])],
                  functions=[fn]).SerializeToString()
    with pytest.raises(BundleIntegrityError, match="functions"):
        check_model(data, 1, "m")


@pytest.mark.parametrize("data", [b"not an onnx model", b"\x0a\xff\xff\xff\xff\xff", b""],
                         ids=["text", "truncated", "empty"])
def test_refuses_malformed_bytes(data):
    with pytest.raises(BundleIntegrityError, match="(well-formed|no graph)"):
        check_model(data, 1, "m")


# -- external data -----------------------------------------------------------------------------

def test_external_data_attack_is_real_and_refused(tmp_path, tiny_bundle, monkeypatch):
    """The issue's attack: a weight initializer with ``location=".env"``, resolved by
    onnxruntime against the working directory, leaks that file's bytes into the logits."""
    secret = np.arange(12, dtype=np.float32) + 0.5
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_bytes(secret.tobytes())
    attack = _gemm_model(_external("W", ".env")).SerializeToString()
    # without the check, onnxruntime does read it: the logits are the secret's row sums
    session = ort.InferenceSession(attack, providers=["CPUExecutionProvider"])
    leaked = session.run(None, {"pixels": np.ones((1, 4), np.float32)})[0]
    np.testing.assert_allclose(leaked[0], secret.reshape(3, 4).sum(axis=1))
    with pytest.raises(BundleIntegrityError, match=r"tensor 'W' refers to external data "
                                                   r"\(location '\.env'\)"):
        check_model(attack, 1, "modes/rot0.onnx")

    # and through a whole bundle whose manifest hash matches the attacking file
    root = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, root)
    mode = build_graph(random_hardened(1), "rot0", META)
    mode.graph.initializer[0].ClearField("raw_data")
    mode.graph.initializer[0].data_location = TensorProto.EXTERNAL
    entry = mode.graph.initializer[0].external_data.add()
    entry.key, entry.value = "location", ".env"
    data = mode.SerializeToString()
    (root / "modes" / "rot0.onnx").write_bytes(data)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["modes"]["rot0"]["sha256"] = hashlib.sha256(data).hexdigest()
    (root / "manifest.json").write_text(json.dumps(manifest))
    for lazy in (False, True):
        with pytest.raises(BundleIntegrityError, match=r"rot0: file 'modes/rot0.onnx'.*'\.env'"):
            ModeRuntime.open(root, lazy=lazy)


@pytest.mark.parametrize("where", ["initializer", "constant-attribute", "sparse-initializer"])
def test_refuses_external_data_wherever_a_tensor_lives(where):
    t = _external("W", "/etc/passwd")
    if where == "initializer":
        proto = _gemm_model(t)
    elif where == "constant-attribute":
        proto = _model([helper.make_node("Constant", [], ["W"], value=t),
                        helper.make_node("Relu", ["pixels"], ["logits"])])
    else:
        proto = _model([helper.make_node("Relu", ["pixels"], ["logits"])])
        idx = numpy_helper.from_array(np.array([0], np.int64), "W_idx")
        proto.graph.sparse_initializer.append(helper.make_sparse_tensor(t, idx, [3, 4]))
    with pytest.raises(BundleIntegrityError, match="'/etc/passwd'"):
        check_model(proto.SerializeToString(), 2, "m")


def test_the_materialized_sentinel_only_for_listed_initializers():
    data = _gemm_model(_external("W", MATERIALIZED)).SerializeToString()
    check_model(data, 2, "m", materialized={"W"})
    with pytest.raises(BundleIntegrityError, match="not one the manifest lists as materialized"):
        check_model(data, 2, "m", materialized={"other"})
    extra = _external("W", MATERIALIZED)
    entry = extra.external_data.add()
    entry.key, entry.value = "offset", "0"  # a sentinel with file-like fields is no sentinel
    with pytest.raises(BundleIntegrityError, match="external data"):
        check_model(_gemm_model(extra).SerializeToString(), 2, "m", materialized={"W"})


# -- int8 graphs that i12's quantized variants are made of -------------------------------------

def _quantized(tmp_path, how: str) -> bytes:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        quantize_dynamic,
        quantize_static,
    )

    src, dst = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(build_graph(random_hardened(0, thresholds=False), "m", META), src)
    if how == "dynamic":
        quantize_dynamic(str(src), str(dst), per_channel=True)
    else:
        class Reader(CalibrationDataReader):
            def __init__(self):
                rng = np.random.default_rng(0)
                self.batches = iter([{"pixels": rng.random((4, 784), dtype=np.float32)}] * 2)

            def get_next(self):
                return next(self.batches, None)

        fmt = QuantFormat.QDQ if how == "static-qdq" else QuantFormat.QOperator
        quantize_static(str(src), str(dst), Reader(), quant_format=fmt)
    return dst.read_bytes()


@pytest.mark.parametrize("how", ["dynamic", "static-qdq", "static-qoperator"])
def test_onnxruntime_quantized_graphs_pass_format_2(tmp_path, how):
    data = _quantized(tmp_path, how)
    info = check_model(data, 2, "m")
    assert {n.op_type for n in info.graph.nodes} & {"MatMulInteger", "QuantizeLinear", "QGemm"}


def test_parse_model_reads_nested_subgraphs():
    info = parse_model(_model(_loop()).SerializeToString())
    assert info.graph.nodes[0].op_type == "Loop"
    assert [n.op_type for n in info.graph.nodes[0].subgraphs[0].nodes] == ["Identity"]
    assert info.opsets == [("", 17)]

