"""The graph check reads bytes exactly as protobuf (and so onnxruntime) does, or refuses them.

Protobuf MERGES repeated occurrences of a singular message field: two ``ModelProto.graph`` fields
make one graph with both node lists. A checker that kept only the last graph let the first one's
external data, unlisted operators, ``Loop`` and ``ConstantOfShape`` reach onnxruntime.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from taugate.bundle.graph_check import check_model, parse_model
from taugate.bundle.onnx_wire import ONEOFS, SCHEMA, WireError
from taugate.runtime import BundleIntegrityError


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def wrap(number: int, payload: bytes) -> bytes:
    """One length-delimited field: tag, length, payload."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _external(name: str, location: str, dims=(3, 4)) -> TensorProto:
    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(dims))
    t.data_location = TensorProto.EXTERNAL
    entry = t.external_data.add()
    entry.key, entry.value = "location", location
    return t


def _io(name, dims):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def benign(with_w: bool = True) -> onnx.ModelProto:
    """pixels [N, 4] -> Gemm(W, b) -> logits [N, 3]."""
    inits = [numpy_helper.from_array(np.zeros(3, np.float32), "b")]
    if with_w:
        inits.insert(0, numpy_helper.from_array(np.ones((3, 4), np.float32), "W"))
    graph = helper.make_graph([helper.make_node("Gemm", ["pixels", "W", "b"], ["logits"],
                                                transB=1)], "g",
                              [_io("pixels", ["N", 4])], [_io("logits", ["N", 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def graph_first(attack: onnx.GraphProto, model: onnx.ModelProto) -> bytes:
    """A ModelProto holding only ``attack`` as its graph, then ``model``: two graph fields."""
    return onnx.ModelProto(graph=attack).SerializeToString() + model.SerializeToString()


def _loop_graph() -> onnx.GraphProto:
    body = helper.make_graph([helper.make_node("Identity", ["c"], ["c_out"])], "body",
                             [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                              helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                             [helper.make_tensor_value_info("c_out", TensorProto.BOOL, [])])
    return helper.make_graph([helper.make_node("Loop", ["", ""], [], body=body)], "a", [], [])


ATTACKS = {
    "unlisted-operator": helper.make_graph([helper.make_node("Hardmax", ["logits"], ["h"])],
                                           "a", [], []),
    "loop": _loop_graph(),
    "constant-of-shape": helper.make_graph(
        [helper.make_node("ConstantOfShape", ["shape"], ["big"])], "a", [], [],
        [numpy_helper.from_array(np.array([1 << 16, 1 << 16], np.int64), "shape")]),
    "external-data": helper.make_graph([], "a", [], [], [_external("W", ".env")]),
}
OPS = {"unlisted-operator": "Hardmax", "loop": "Loop", "constant-of-shape": "ConstantOfShape"}


@pytest.mark.parametrize("case", sorted(ATTACKS))
def test_a_second_graph_field_is_refused(case):
    data = graph_first(ATTACKS[case], benign(with_w=case != "external-data"))
    merged = onnx.load_from_string(data)  # what protobuf (and onnxruntime) builds: both graphs
    assert [n.op_type for n in merged.graph.node][-1] == "Gemm"
    if case in OPS:
        assert merged.graph.node[0].op_type == OPS[case]
    else:
        assert merged.graph.initializer[0].external_data[0].value == ".env"
    with pytest.raises(BundleIntegrityError, match=r"modes/x\.onnx: not a well-formed ONNX "
                                                   r"model: ModelProto\.graph \(field 7\) occurs "
                                                   r"more than once"):
        check_model(data, 2, "modes/x.onnx")


def test_the_merged_external_data_attack_is_real(tmp_path, monkeypatch):
    """Without the refusal, onnxruntime merges the graphs and leaks ./.env into the logits."""
    secret = np.arange(12, dtype=np.float32) + 0.5
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_bytes(secret.tobytes())
    data = graph_first(ATTACKS["external-data"], benign(with_w=False))
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    leaked = session.run(None, {"pixels": np.ones((1, 4), np.float32)})[0]
    np.testing.assert_allclose(leaked[0], secret.reshape(3, 4).sum(axis=1))
    with pytest.raises(BundleIntegrityError, match="occurs more than once"):
        check_model(data, 2, "m")


def test_two_whole_models_concatenated_are_refused():
    data = graph_first(ATTACKS["loop"], benign()) + benign().SerializeToString()
    with pytest.raises(BundleIntegrityError, match="occurs more than once"):
        check_model(data, 2, "m")


# -- nested messages ---------------------------------------------------------------------------

def _model_with_node(node: bytes, graph_extra: bytes = b"") -> bytes:
    """``benign()`` with one more node (raw NodeProto bytes) and raw bytes appended to its
    graph; lengths re-encoded."""
    model = benign()
    graph = model.graph.SerializeToString() + wrap(1, node) + graph_extra
    model.ClearField("graph")
    return model.SerializeToString() + wrap(7, graph)


def _constant(attribute: bytes) -> bytes:
    return helper.make_node("Constant", [], ["k"]).SerializeToString() + wrap(5, attribute)


def _attr_tensor_twice() -> bytes:
    first = onnx.AttributeProto(t=_external("k", ".env")).SerializeToString()
    good = helper.make_attribute("value", numpy_helper.from_array(np.ones(2, np.float32), "k"))
    return _model_with_node(_constant(first + good.SerializeToString()))


def _tensor_field_twice(field: str, value) -> bytes:
    t = numpy_helper.from_array(np.ones(2, np.float32), "k")
    setattr(t, field, getattr(t, field))  # present, even when the default
    extra = TensorProto()
    setattr(extra, field, value)
    attr = onnx.AttributeProto(name="value", type=onnx.AttributeProto.TENSOR)
    body = attr.SerializeToString() + wrap(5, t.SerializeToString() + extra.SerializeToString())
    return _model_with_node(_constant(body))


def _node_twice(field: str, value: str) -> bytes:
    node = helper.make_node("Relu", ["logits"], ["r"], name="relu", domain="")
    extra = onnx.NodeProto()
    setattr(extra, field, value)
    return _model_with_node(node.SerializeToString() + extra.SerializeToString())


def _value_info(extra_type: bytes, typed: bool = False) -> bytes:
    vi = (_io("extra", ["N", 3]) if typed else onnx.ValueInfoProto(name="extra")).SerializeToString()
    return _model_with_node(helper.make_node("Relu", ["logits"], ["r"]).SerializeToString(),
                            wrap(13, vi + wrap(2, extra_type)))


def _opset_version_twice() -> bytes:
    model = benign()
    op = helper.make_opsetid("", 17).SerializeToString() + onnx.OperatorSetIdProto(
        version=99).SerializeToString()
    return model.SerializeToString() + wrap(8, op)


def _external_key_twice() -> bytes:
    t = _external("k", "@taugate/materialized")
    entry = t.external_data.add()
    entry.key, entry.value = "location", ".env"
    return _model_with_node(_constant(helper.make_attribute("value", t).SerializeToString()))


def _sequence_type() -> bytes:
    seq = onnx.TypeProto(sequence_type=onnx.TypeProto.Sequence()).SerializeToString()
    return onnx.TypeProto(tensor_type=onnx.TypeProto.Tensor(elem_type=1)).SerializeToString() + seq


NESTED = [
    ("attribute-t-twice", _attr_tensor_twice, r"AttributeProto\.t \(field 5\) occurs more"),
    ("tensor-data-location-twice", lambda: _tensor_field_twice("data_location", 0),
     r"TensorProto\.data_location"),
    ("tensor-name-twice", lambda: _tensor_field_twice("name", "W"), r"TensorProto\.name"),
    ("node-op-type-twice", lambda: _node_twice("op_type", "Loop"), r"NodeProto\.op_type"),
    ("node-domain-twice", lambda: _node_twice("domain", "evil.ops"), r"NodeProto\.domain"),
    ("opset-version-twice", _opset_version_twice, r"OperatorSetIdProto\.version"),
    ("value-info-type-twice", lambda: _value_info(onnx.TypeProto().SerializeToString(), typed=True),
     r"ValueInfoProto\.type"),
    ("type-oneof-two-members", lambda: _value_info(_sequence_type()), "more than one member of "
                                                                        "a oneof"),
    ("external-data-key-twice", _external_key_twice, "external_data key 'location' occurs twice"),
    ("unknown-model-field", lambda: benign().SerializeToString() + wrap(99, b"x"),
     "ModelProto: unknown field number 99"),
    ("graph-as-varint", lambda: benign().SerializeToString() + b"\x38\x01",
     r"ModelProto\.graph \(field 7\): wire type 0, expected 2"),
    ("data-location-2", lambda: _model_with_node(_constant(wrap(5, b"\x70\x02"))),
     r"TensorProto\.data_location: enum value 2"),
    ("overlong-varint", lambda: b"\x08" + b"\xff" * 10 + b"\x01", "varint"),
    ("group", lambda: benign().SerializeToString() + b"\x0b\x0c", "wire type 3"),
    ("not-utf8", lambda: _node_twice("doc_string", "x")[:-1] + b"\xff", "UTF-8"),
    ("deep-types", lambda: _value_info(_deep_type(80)), "nested deeper than 64"),
]


def _deep_type(n: int) -> bytes:
    t = onnx.TypeProto(tensor_type=onnx.TypeProto.Tensor(elem_type=1)).SerializeToString()
    for _ in range(n):
        t = wrap(4, wrap(1, t))  # sequence_type { elem_type { ... } }
    return t


@pytest.mark.parametrize("build,needle", [c[1:] for c in NESTED], ids=[c[0] for c in NESTED])
def test_nested_ambiguities_are_refused(build, needle):
    with pytest.raises(BundleIntegrityError, match=needle):
        check_model(build(), 2, "m")


def test_protobuf_merges_a_repeated_attribute_tensor():
    """Why the nested refusal matters: protobuf keeps the first ``t``'s external data."""
    merged = onnx.load_from_string(_attr_tensor_twice())
    t = merged.graph.node[-1].attribute[0].t
    assert t.external_data[0].value == ".env" and t.data_location == TensorProto.EXTERNAL


def test_the_benign_model_reads_like_onnx():
    info = parse_model(benign().SerializeToString())
    assert [n.op_type for n in info.graph.nodes] == ["Gemm"]
    assert [t.name for t in info.graph.initializers] == ["W", "b"]
    assert (info.graph.inputs, info.graph.outputs) == (["pixels"], ["logits"])
    check_model(benign().SerializeToString(), 1, "m")


def test_wire_errors_are_value_errors():
    with pytest.raises(ValueError, match="occurs more than once"):
        parse_model(graph_first(ATTACKS["loop"], benign()))
    assert issubclass(WireError, ValueError)


# -- the schema is onnx's own ------------------------------------------------------------------

_TYPES = {1: "double", 2: "float", 3: "int64", 4: "uint64", 5: "int32", 9: "string",
          12: "bytes"}


def _messages(desc, out):
    name = desc.full_name.removeprefix("onnx.")
    if name in out:
        return out
    out[name] = desc
    for f in desc.fields:
        if f.message_type is not None and f.message_type.name not in ("FunctionProto",
                                                                      "TrainingInfoProto"):
            _messages(f.message_type, out)
    return out


def test_the_schema_matches_onnx_descriptors():
    messages = _messages(onnx.ModelProto.DESCRIPTOR, {})
    assert set(SCHEMA) == set(messages)
    for name, desc in messages.items():
        ours = SCHEMA[name]
        assert set(ours) == {f.number for f in desc.fields}, name
        for f in desc.fields:
            mine = ours[f.number]
            assert (mine.name, mine.repeated) == (f.name, f.is_repeated), (name, f.name)
            if f.message_type is not None:
                target = f.message_type.full_name.removeprefix("onnx.")
                assert mine.kind in (target, "opaque"), (name, f.name)
            elif f.enum_type is not None:
                values = sorted(v.number for v in f.enum_type.values)
                assert mine.kind == f"enum:{values[0]}-{values[-1]}", (name, f.name)
                assert values == list(range(values[0], values[-1] + 1))
            else:
                assert mine.kind == _TYPES[f.type], (name, f.name)
        oneofs = [frozenset(x.number for x in o.fields) for o in desc.oneofs]
        assert oneofs == ([ONEOFS[name]] if name in ONEOFS else []), name
