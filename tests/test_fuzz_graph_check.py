"""Fuzz the graph check's reader against onnx's own parser (protobuf, upb).

Property: for any bytes, the reader either refuses them (``WireError``, which ``check_model``
turns into ``BundleIntegrityError``) or sees exactly what protobuf parses: opsets, every node's
operator, domain, inputs and outputs, subgraphs, initializer names with where their data lives,
graph inputs and outputs. Inputs are valid small models mutated at the message level (a field
of any nested message duplicated, another message of the same type merged in, a random field
appended) and at the byte level (truncations, splices, random bytes, flips). Bounded and
derandomized, so CI runs the same examples every time in about a second.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from test_graph_check_wire import ATTACKS, _external, _varint, benign, wrap

from taugate.bundle.graph_check import check_model, parse_model
from taugate.bundle.onnx_wire import WireError
from taugate.exporting.graph import build_graph
from taugate.exporting.synthetic import random_hardened
from taugate.runtime import BundleIntegrityError


def _rich() -> onnx.ModelProto:
    """Many kinds of fields: attributes of each type, value_info, sparse initializer, docs."""
    model = benign()
    g = model.graph
    g.node.append(helper.make_node("Constant", [], ["c"], name="const", doc_string="d",
                                   value=numpy_helper.from_array(np.ones(2, np.float32), "cv")))
    g.node.append(helper.make_node("Softmax", ["logits"], ["p"], axis=-1))
    g.node.append(helper.make_node("Split", ["p"], ["p1", "p2"], axis=1))
    g.node[-1].attribute.extend([helper.make_attribute("fs", [0.5, 1.5]),
                                 helper.make_attribute("ss", ["a", "b"]),
                                 helper.make_attribute("f", 0.25)])
    g.value_info.append(helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 3]))
    idx = numpy_helper.from_array(np.array([1], np.int64), "s_idx")
    g.sparse_initializer.append(helper.make_sparse_tensor(
        numpy_helper.from_array(np.ones(1, np.float32), "s"), idx, [3]))
    helper.set_model_props(model, {"taugate.mode": "m"})
    model.doc_string = "rich"
    return model


META = {"taugate.mode": "m", "taugate.format_version": "1"}
BASES = [benign(), _rich(),
         build_graph(random_hardened(0, widths=(5,), n_in=6, n_out=3), "m", META)]
_loop = ATTACKS["loop"]
DONORS = {  # merged into a message of the same type
    "GraphProto": list(ATTACKS.values()),
    "NodeProto": [_loop.node[0], onnx.NodeProto(op_type="Loop"), onnx.NodeProto(input=["x"])],
    "TensorProto": [_external("W", ".env"), TensorProto(dims=[2])],
    "AttributeProto": [onnx.AttributeProto(t=_external("k", ".env")),
                       onnx.AttributeProto(g=_loop), onnx.AttributeProto(ints=[1, 2])],
    "ModelProto": [onnx.ModelProto(graph=_loop), onnx.ModelProto(opset_import=[
        helper.make_opsetid("evil", 1)])],
}


def _messages(m):
    """Every message of ``m``, pre-order (the order :func:`encode` counts them in)."""
    yield m
    for fd, value in m.ListFields():
        if fd.message_type is not None:
            for sub in (value if fd.is_repeated else [value]):
                yield from _messages(sub)


def _field_bytes(m, fd, value) -> bytes:
    if fd.message_type is not None:
        return wrap(fd.number, value.SerializeToString())
    tmp = type(m)()
    if fd.is_repeated:
        getattr(tmp, fd.name).append(value)
    else:
        setattr(tmp, fd.name, value)
    return tmp.SerializeToString()


def encode(model, inject: dict[int, bytes]) -> bytes:
    """``model`` serialized field by field, with ``inject[i]`` appended to the i-th message."""
    counter = itertools.count()

    def enc(m) -> bytes:
        index, out = next(counter), bytearray()
        for fd, value in m.ListFields():
            for v in (value if fd.is_repeated else [value]):
                out += wrap(fd.number, enc(v)) if fd.message_type is not None \
                    else _field_bytes(m, fd, v)
        return bytes(out + inject.get(index, b""))
    return enc(model)


# -- the two views -----------------------------------------------------------------------------

def _ours(info):
    def tensor(t):
        return (t.name, t.data_location, tuple(sorted(t.external.items())))

    def graph(g):
        return (tuple((n.op_type, n.domain, n.name, n.overload, tuple(n.inputs),
                       tuple(n.outputs), tuple(graph(s) for s in n.subgraphs),
                       tuple(tensor(t) for t in n.tensors)) for n in g.nodes),
                tuple(tensor(t) for t in g.initializers), tuple(tensor(t) for t in g.sparse),
                tuple(g.inputs), tuple(g.outputs))
    return (tuple(info.opsets), None if info.graph is None else graph(info.graph),
            info.functions, info.training_info)


def _onnx(model):
    def tensor(t):
        return (t.name, t.data_location, tuple(sorted((e.key, e.value) for e in t.external_data)))

    def sparse(s):
        return [tensor(getattr(s, k)) for k in ("values", "indices") if s.HasField(k)]

    def node(n):
        subs, tensors = [], []
        for a in n.attribute:
            found = ([a.g] if a.HasField("g") else []) + list(a.graphs)
            subs += [graph(s) for s in found] or ([graph(onnx.GraphProto())]
                                                  if a.type in (5, 10) else [])
            tensors += [tensor(t) for t in ([a.t] if a.HasField("t") else []) + list(a.tensors)]
            for s in ([a.sparse_tensor] if a.HasField("sparse_tensor") else []) + \
                    list(a.sparse_tensors):
                tensors += sparse(s)
        return (n.op_type, n.domain, n.name, n.overload, tuple(n.input), tuple(n.output),
                tuple(subs), tuple(tensors))

    def graph(g):
        return (tuple(node(n) for n in g.node), tuple(tensor(t) for t in g.initializer),
                tuple(t for s in g.sparse_initializer for t in sparse(s)),
                tuple(v.name for v in g.input), tuple(v.name for v in g.output))
    return (tuple((o.domain, o.version) for o in model.opset_import),
            graph(model.graph) if model.HasField("graph") else None,
            len(model.functions), len(model.training_info))


def same_or_refused(data: bytes) -> str:
    """'refused' or 'same'; fails the test when the reader accepts bytes it reads differently
    from protobuf (or that protobuf refuses)."""
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
        parsed = True
    except DecodeError:
        parsed = False
    try:
        check_model(data, 2, "m")
    except BundleIntegrityError:
        pass  # the only exception the check may raise
    try:
        info = parse_model(data)
    except WireError:
        return "refused"
    assert parsed, "the reader accepted bytes that protobuf refuses"
    assert _ours(info) == _onnx(proto)
    return "same"


# -- the properties ----------------------------------------------------------------------------

def test_the_encoder_is_protobufs():
    for base in BASES:
        assert encode(base, {}) == base.SerializeToString()
        assert same_or_refused(base.SerializeToString()) == "same"


def test_a_repeated_element_twice_reads_the_same():
    """Appending one more element of a repeated field is valid protobuf: accepted, and read
    the same as onnx reads it (the reader is no refuse-everything stub)."""
    accepted = 0
    for base in BASES:
        for i, m in enumerate(_messages(base)):
            for fd, value in m.ListFields():
                if fd.is_repeated:
                    accepted += same_or_refused(encode(base, {i: _field_bytes(m, fd, value[0])
                                                              })) == "same"
    assert accepted > 50


_random_field = st.tuples(st.integers(0, 40), st.integers(0, 7), st.binary(max_size=12)).map(
    lambda f: _varint(f[0] << 3 | f[1]) + (_varint(len(f[2])) if f[1] == 2 else b"") + f[2])


@st.composite
def mutated(draw) -> bytes:
    base = draw(st.sampled_from(BASES))
    messages = list(_messages(base))
    inject = {}
    for _ in range(draw(st.integers(0, 2))):
        i = draw(st.integers(0, len(messages) - 1))
        m = messages[i]
        fields = m.ListFields()
        how = draw(st.sampled_from(["own", "donor", "random"]))
        if how == "own" and fields:
            fd, value = draw(st.sampled_from(fields))
            extra = _field_bytes(m, fd, value[draw(st.integers(0, len(value) - 1))]
                                 if fd.is_repeated else value)
        elif how == "donor" and type(m).__name__ in DONORS:
            extra = draw(st.sampled_from(DONORS[type(m).__name__])).SerializeToString()
        else:
            extra = draw(_random_field)
        inject[i] = inject.get(i, b"") + extra
    data = encode(base, inject)
    op = draw(st.sampled_from(["none", "truncate", "insert", "flip", "splice", "concat"]))
    at = draw(st.integers(0, len(data)))
    if op == "truncate":
        data = data[:at]
    elif op == "insert":
        data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    elif op == "flip" and at < len(data):
        data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:]
    elif op == "splice":
        j = draw(st.integers(at, len(data)))
        data = data[:at] + data[at:j] + data[at:]  # a slice repeated in place
    elif op == "concat":
        data = data + draw(st.sampled_from(BASES + DONORS["ModelProto"])).SerializeToString()
    return data


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_the_reader_agrees_with_onnx_or_refuses(data):
    same_or_refused(data)
