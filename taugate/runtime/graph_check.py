"""Refuse ONNX graphs a taugate exporter would not write, before onnxruntime sees them.

A bundle is untrusted input. Its sha256s only prove the files are the ones the manifest names,
not that a taugate exporter wrote them, so before a model reaches onnxruntime its bytes are
parsed here -- with a small reader of the protobuf wire format (standard library only: no onnx,
no torch) -- and refused with :class:`BundleIntegrityError` when:

* a node uses an operator (or domain) outside :data:`ALLOWED_OPS` for the bundle's format
  version: no control flow (``Loop``/``If``/``Scan``), no ``ConstantOfShape`` memory bombs, no
  custom domains;
* a node has a graph-valued attribute (a subgraph), the model carries local functions or
  training info, or imports an opset domain that is not allowed;
* a tensor (initializer, sparse initializer, or a tensor-valued attribute such as a
  ``Constant``'s value) stores its data outside the file: onnxruntime resolves such paths
  against the working directory, which would let a bundle read any file the server can (e.g.
  ``location=".env"``) and leak it through the logits. The one exception is the shared-backbone
  sentinel ``location="@taugate/materialized"`` (docs/bundle-v2.md section 4), for exactly the
  initializers the manifest says are materialized -- never a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from taugate.runtime.errors import BundleIntegrityError

MATERIALIZED = "@taugate/materialized"  # the only external-data "location" allowed
_DEFAULT = ("", "ai.onnx")
_MS = "com.microsoft"

_FORMAT1_OPS = frozenset({"Gemm", "Relu", "ThresholdedRelu", "Greater", "Where", "Cast", "Mul",
                          "Concat"})
_FORMAT2_OPS = _FORMAT1_OPS | frozenset({
    # torch.onnx.export of MLPs and small ViTs
    "MatMul", "Add", "Sub", "Div", "Erf", "Sqrt", "Pow", "Tanh", "Sigmoid", "Softmax",
    "LayerNormalization", "ReduceMean", "Transpose", "Reshape", "Flatten", "Slice", "Gather",
    "Unsqueeze", "Squeeze", "Shape", "Constant", "Identity", "Conv", "Split", "Expand",
    "Mod", "Equal",  # nn.MultiheadAttention through the TorchScript exporter
    # onnxruntime.quantization (quantize_dynamic / quantize_static QDQ and QOperator)
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger",
    "ConvInteger", "QLinearMatMul",
})
_FORMAT2_MS_OPS = frozenset({"DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QGemm",
                             "FusedGemm"})

# format_version -> domain -> operator types allowed. The one table (docs/security.md).
ALLOWED_OPS: dict[int, dict[str, frozenset]] = {
    1: {"": _FORMAT1_OPS},
    2: {"": _FORMAT2_OPS, _MS: _FORMAT2_MS_OPS},
}
# format_version -> opset domain -> highest version allowed.
ALLOWED_OPSETS: dict[int, dict[str, int]] = {
    1: {"": 17},
    2: {"": 21, _MS: 1},
}


# -- the wire format ---------------------------------------------------------------------------

class _WireError(ValueError):
    pass


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _WireError(f"truncated or overlong varint at byte {pos}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes, start: int = 0, end: int | None = None):
    """Yield ``(field_number, wire_type, value)`` of one message; value is an int (varint,
    fixed) or a ``(start, end)`` span (length-delimited). Groups are refused."""
    pos, end = start, len(buf) if end is None else end
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end)
        elif wire == 1:
            value, pos = pos, pos + 8
        elif wire == 5:
            value, pos = pos, pos + 4
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            value, pos = (pos, pos + length), pos + length
        else:
            raise _WireError(f"unsupported wire type {wire} at byte {pos}")
        if pos > end:
            raise _WireError(f"field {number} runs past the end of its message")
        yield number, wire, value


def _text(buf: bytes, span) -> str:
    return bytes(buf[span[0]:span[1]]).decode("utf-8", "replace")


# -- ONNX messages (field numbers from onnx/onnx.proto3) ------------------------------------

@dataclass
class TensorInfo:
    """What the check needs of a TensorProto: its name and where its data lives."""

    name: str = ""
    data_location: int = 0  # 1 = EXTERNAL
    external: dict = field(default_factory=dict)  # external_data key -> value


@dataclass
class NodeInfo:
    op_type: str = ""
    domain: str = ""
    name: str = ""
    subgraphs: list = field(default_factory=list)  # GraphInfo of graph-valued attributes
    tensors: list = field(default_factory=list)  # TensorInfo of tensor-valued attributes


@dataclass
class GraphInfo:
    nodes: list = field(default_factory=list)
    initializers: list = field(default_factory=list)  # TensorInfo, sparse ones included


@dataclass
class ModelInfo:
    opsets: list = field(default_factory=list)  # (domain, version)
    graph: GraphInfo | None = None
    functions: int = 0  # model-local functions
    training_info: int = 0


_MAX_DEPTH = 16  # subgraph nesting parsed at most (deeper is refused anyway)


def _tensor(buf, span) -> TensorInfo:
    t = TensorInfo()
    for number, wire, value in _fields(buf, *span):
        if number == 8 and wire == 2:
            t.name = _text(buf, value)
        elif number == 14 and wire == 0:
            t.data_location = value
        elif number == 13 and wire == 2:  # StringStringEntryProto {key = 1, value = 2}
            entry = {n: _text(buf, v) for n, w, v in _fields(buf, *value) if w == 2}
            t.external[entry.get(1, "")] = entry.get(2, "")
    return t


def _sparse(buf, span) -> list[TensorInfo]:
    # SparseTensorProto {values = 1, indices = 2}: both are TensorProtos with their own data.
    return [_tensor(buf, v) for n, w, v in _fields(buf, *span) if n in (1, 2) and w == 2]


def _attribute(buf, span, node: NodeInfo, depth: int) -> None:
    for number, wire, value in _fields(buf, *span):
        if wire != 2:
            continue
        if number in (6, 11):  # g, graphs
            node.subgraphs.append(_graph(buf, value, depth + 1))
        elif number in (5, 10):  # t, tensors
            node.tensors.append(_tensor(buf, value))
        elif number in (22, 23):  # sparse_tensor, sparse_tensors
            node.tensors.extend(_sparse(buf, value))


def _node(buf, span, depth: int) -> NodeInfo:
    node = NodeInfo()
    for number, wire, value in _fields(buf, *span):
        if wire != 2:
            continue
        if number == 4:
            node.op_type = _text(buf, value)
        elif number == 7:
            node.domain = _text(buf, value)
        elif number == 3:
            node.name = _text(buf, value)
        elif number == 5:
            _attribute(buf, value, node, depth)
    return node


def _graph(buf, span, depth: int = 0) -> GraphInfo:
    if depth > _MAX_DEPTH:
        raise _WireError(f"subgraphs nested deeper than {_MAX_DEPTH}")
    graph = GraphInfo()
    for number, wire, value in _fields(buf, *span):
        if wire != 2:
            continue
        if number == 1:
            graph.nodes.append(_node(buf, value, depth))
        elif number == 5:
            graph.initializers.append(_tensor(buf, value))
        elif number == 15:
            graph.initializers.extend(_sparse(buf, value))
    return graph


def parse_model(data: bytes) -> ModelInfo:
    """The parts of an ONNX ModelProto that :func:`check_model` judges (raises ValueError on
    bytes that are not a well-formed protobuf message)."""
    buf = memoryview(data)
    model = ModelInfo()
    for number, wire, value in _fields(buf):
        if number == 8 and wire == 2:  # OperatorSetIdProto {domain = 1, version = 2}
            domain, version = "", 0
            for n, w, v in _fields(buf, *value):
                if n == 1 and w == 2:
                    domain = _text(buf, v)
                elif n == 2 and w == 0:
                    version = v
            model.opsets.append((domain, version))
        elif number == 7 and wire == 2:
            model.graph = _graph(buf, value)
        elif number == 25 and wire == 2:
            model.functions += 1
        elif number == 20 and wire == 2:
            model.training_info += 1
    return model


# -- the check --------------------------------------------------------------------------------

def _domain(d: str) -> str:
    return "" if d in _DEFAULT else d


def _check_tensor(t: TensorInfo, where: str, materialized: frozenset) -> None:
    if t.data_location == 0 and not t.external:
        return
    location = t.external.get("location")
    if t.data_location == 1 and location == MATERIALIZED and set(t.external) == {"location"} \
            and t.name in materialized:
        return
    why = ("it is not one the manifest lists as materialized" if location == MATERIALIZED
           else "external data is not allowed (bundle files hold their weights inside, or use "
                f"location {MATERIALIZED!r} for initializers the manifest materializes)")
    raise BundleIntegrityError(f"{where}: tensor {t.name!r} refers to external data "
                               f"(location {location!r}): {why}")


def _walk(graph: GraphInfo, where: str, ops: dict, materialized: frozenset) -> None:
    for t in graph.initializers:
        _check_tensor(t, f"{where}: initializer", materialized)
    for node in graph.nodes:
        label = f"{where}: node {node.name!r}" if node.name else f"{where}: a node"
        domain = _domain(node.domain)
        if domain not in ops:
            raise BundleIntegrityError(f"{label}: operator {node.op_type!r} of domain "
                                       f"{node.domain!r} is not allowed: expected domains "
                                       f"{sorted(ops)}")
        if node.op_type not in ops[domain]:
            raise BundleIntegrityError(f"{label}: operator {node.op_type!r} (domain "
                                       f"{node.domain or 'ai.onnx'!r}) is not allowed in this "
                                       f"bundle format; allowed: {sorted(ops[domain])}")
        if node.subgraphs:
            raise BundleIntegrityError(f"{label}: operator {node.op_type!r} has a subgraph "
                                       f"attribute: subgraphs are not allowed")
        for t in node.tensors:
            _check_tensor(t, f"{label} ({node.op_type}) attribute", materialized)


def check_model(data: bytes, format_version: int, where: str,
                materialized: frozenset | set = frozenset()) -> ModelInfo:
    """Refuse ``data`` (ONNX model bytes) unless it keeps to what taugate writes for bundle
    ``format_version``; ``materialized``: initializer names the manifest materializes.

    Raises :class:`BundleIntegrityError` naming the file (``where``) and the offending
    operator, domain or tensor.
    """
    if format_version not in ALLOWED_OPS:
        raise BundleIntegrityError(f"{where}: no operator allowlist for format_version "
                                   f"{format_version!r}; known: {sorted(ALLOWED_OPS)}")
    try:
        model = parse_model(data)
    except (_WireError, RecursionError) as exc:
        raise BundleIntegrityError(f"{where}: not a well-formed ONNX model: {exc}") from None
    if model.graph is None:
        raise BundleIntegrityError(f"{where}: not an ONNX model (no graph)")
    if model.functions or model.training_info:
        raise BundleIntegrityError(f"{where}: model-local functions and training info are not "
                                   f"allowed")
    opsets = ALLOWED_OPSETS[format_version]
    for domain, version in model.opsets:
        d = _domain(domain)
        if d not in opsets or version > opsets[d]:
            allowed = {k or "ai.onnx": v for k, v in opsets.items()}
            raise BundleIntegrityError(f"{where}: opset import {domain or 'ai.onnx'!r} version "
                                       f"{version} is not allowed; allowed (highest version): "
                                       f"{allowed}")
    _walk(model.graph, where, ALLOWED_OPS[format_version], frozenset(materialized))
    return model
