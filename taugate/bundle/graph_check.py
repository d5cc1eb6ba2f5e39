"""Refuse ONNX graphs a taugate exporter would not write, before onnxruntime sees them.

A bundle is untrusted input. Its sha256s only prove the files are the ones the manifest names,
not that a taugate exporter wrote them, so before a model reaches onnxruntime its bytes are
parsed here -- with a strict reader of the protobuf wire format (:mod:`.onnx_wire`, standard
library only: no onnx, no torch) -- and refused with :class:`BundleIntegrityError` when:

* the bytes are not read exactly as protobuf (and so onnxruntime) reads them: a singular field
  twice (protobuf merges two ``graph`` fields into one graph; a checker that kept only one
  would never see the other's nodes), an unknown field, a malformed varint, ...;

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

from taugate.bundle.errors import BundleIntegrityError
from taugate.bundle.onnx_wire import WireError, parse

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
    "MaxPool", "AveragePool", "GlobalAveragePool",  # CNNs: max/avg/adaptive-avg(1) pooling
    "Neg",  # rotary position embeddings (LLaMA's rotate_half)
    "ArgMax",  # the router's mode choice (exporting/router.py): an index per row
    # onnxruntime.quantization (quantize_dynamic / quantize_static QDQ and QOperator)
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger",
    "ConvInteger", "QLinearMatMul",
})
_FORMAT2_MS_OPS = frozenset({"DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QGemm",
                             "FusedGemm"})

#: operators allowed (format 2) only when their one input is a ``Shape`` node's output: they
#: then allocate as many elements as an existing tensor's rank, never a size the file chooses
#: (ViT's ``cls_token.expand(batch, -1, -1)`` through the TorchScript exporter)
SHAPE_FED_OPS = frozenset({"ConstantOfShape"})

# Format 3's decode graphs (exporting/lm_graph.py): onnxruntime's attention with a key/value
# cache (in place, rotary) and the residual sum fused into the RMSNorm that follows it
_FORMAT3_MS_OPS = frozenset({"GroupQueryAttention", "SkipSimplifiedLayerNormalization"})
# format_version -> domain -> operator types allowed. The one table (docs/security.md).
# Format 3 (language-model decode graphs, bundle/lm.py): format 2's operators and the above
ALLOWED_OPS: dict[int, dict[str, frozenset]] = {
    1: {"": _FORMAT1_OPS},
    2: {"": _FORMAT2_OPS, _MS: _FORMAT2_MS_OPS},
    3: {"": _FORMAT2_OPS, _MS: _FORMAT2_MS_OPS | _FORMAT3_MS_OPS},
}
# format_version -> opset domain -> highest version allowed.
ALLOWED_OPSETS: dict[int, dict[str, int]] = {
    1: {"": 17},
    2: {"": 21, _MS: 1},
    3: {"": 21, _MS: 1},
}


# -- the view of the model the check judges ------------------------------------------------

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
    overload: str = ""
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    subgraphs: list = field(default_factory=list)  # GraphInfo of graph-valued attributes
    tensors: list = field(default_factory=list)  # TensorInfo of tensor-valued attributes


@dataclass
class GraphInfo:
    nodes: list = field(default_factory=list)
    initializers: list = field(default_factory=list)  # TensorInfo of dense initializers
    sparse: list = field(default_factory=list)  # TensorInfo of sparse initializers' parts
    inputs: list = field(default_factory=list)  # value names
    outputs: list = field(default_factory=list)


@dataclass
class ModelInfo:
    opsets: list = field(default_factory=list)  # (domain, version)
    graph: GraphInfo | None = None
    functions: int = 0  # model-local functions
    training_info: int = 0


_GRAPH_TYPES = (5, 10)  # AttributeProto.type GRAPH, GRAPHS


def _tensor(t: dict) -> TensorInfo:
    info = TensorInfo(t.get("name", ""), t.get("data_location", 0))
    for entry in t.get("external_data", ()):
        key = entry.get("key", "")
        if key in info.external:
            raise WireError(f"tensor {info.name!r}: external_data key {key!r} occurs twice")
        info.external[key] = entry.get("value", "")
    return info


def _sparse(s: dict) -> list[TensorInfo]:
    return [_tensor(s[k]) for k in ("values", "indices") if k in s]


def _both(a: dict, one: str, many: str) -> list:
    """An attribute's singular and repeated field of one kind (``t`` and ``tensors``, ...)."""
    return ([a[one]] if one in a else []) + a.get(many, [])


def _node(n: dict) -> NodeInfo:
    node = NodeInfo(n.get("op_type", ""), n.get("domain", ""), n.get("name", ""),
                    n.get("overload", ""), n.get("input", []), n.get("output", []))
    for a in n.get("attribute", ()):
        graphs = [_graph(g) for g in _both(a, "g", "graphs")]
        # a graph-typed attribute without a graph is refused like one with a graph
        node.subgraphs += graphs or ([GraphInfo()] if a.get("type") in _GRAPH_TYPES else [])
        node.tensors += [_tensor(t) for t in _both(a, "t", "tensors")]
        node.tensors += [t for s in _both(a, "sparse_tensor", "sparse_tensors") for t in _sparse(s)]
    return node


def _graph(g: dict) -> GraphInfo:
    return GraphInfo([_node(n) for n in g.get("node", ())],
                     [_tensor(t) for t in g.get("initializer", ())],
                     [t for s in g.get("sparse_initializer", ()) for t in _sparse(s)],
                     [v.get("name", "") for v in g.get("input", ())],
                     [v.get("name", "") for v in g.get("output", ())])


def parse_model(data: bytes) -> ModelInfo:
    """The parts of an ONNX ModelProto that :func:`check_model` judges, read as protobuf (and so
    onnxruntime) reads them, or :class:`~taugate.bundle.onnx_wire.WireError` (a ValueError) for
    bytes that are malformed or that protobuf would read in a way this view cannot show
    (a singular field twice, an unknown field, ...: see :mod:`taugate.bundle.onnx_wire`)."""
    m = parse(memoryview(data), "ModelProto")
    return ModelInfo([(o.get("domain", ""), o.get("version", 0)) for o in m.get("opset_import", ())],
                     _graph(m["graph"]) if "graph" in m else None,
                     len(m.get("functions", ())), len(m.get("training_info", ())))


# -- the check --------------------------------------------------------------------------------

def _domain(d: str) -> str:
    return "" if d in _DEFAULT else d


def _check_tensor(t: TensorInfo, where: str, materialized: frozenset | None) -> None:
    """``materialized``: the names that may carry the sentinel (the manifest's list, for the
    main graph's dense initializers), None where no tensor may."""
    if t.data_location == 0 and not t.external:
        return
    location = t.external.get("location")
    if t.data_location == 1 and location == MATERIALIZED and set(t.external) == {"location"} \
            and materialized is not None and t.name in materialized:
        return
    if location != MATERIALIZED:
        why = ("external data is not allowed (bundle files hold their weights inside, or use "
               f"location {MATERIALIZED!r} for initializers the manifest materializes)")
    elif materialized is not None:
        why = "it is not one the manifest lists as materialized"
    else:
        why = (f"{MATERIALIZED!r} is never a file: only a graph initializer the manifest lists "
               f"as materialized may name it")
    raise BundleIntegrityError(f"{where}: tensor {t.name!r} refers to external data "
                               f"(location {location!r}): {why}")


def _walk(graph: GraphInfo, where: str, ops: dict, materialized: frozenset,
          shape_fed_ok: bool = False) -> None:
    seen: set = set()
    for t in graph.initializers:
        if t.name in seen:
            raise BundleIntegrityError(f"{where}: initializer {t.name!r} occurs twice: expected "
                                       f"unique initializer names")
        seen.add(t.name)
        _check_tensor(t, f"{where}: initializer", materialized)
    for t in graph.sparse:
        _check_tensor(t, f"{where}: sparse initializer", None)
    shapes = {o for node in graph.nodes if node.op_type == "Shape" and not node.domain
              for o in node.outputs}
    for node in graph.nodes:
        label = f"{where}: node {node.name!r}" if node.name else f"{where}: a node"
        domain = _domain(node.domain)
        if domain not in ops:
            raise BundleIntegrityError(f"{label}: operator {node.op_type!r} of domain "
                                       f"{node.domain!r} is not allowed: expected domains "
                                       f"{sorted(ops)}")
        shape_fed = (shape_fed_ok and node.op_type in SHAPE_FED_OPS and domain == ""
                     and len(node.inputs) == 1 and node.inputs[0] in shapes)
        if node.op_type not in ops[domain] and not shape_fed:
            raise BundleIntegrityError(f"{label}: operator {node.op_type!r} (domain "
                                       f"{node.domain or 'ai.onnx'!r}) is not allowed in this "
                                       f"bundle format; allowed: {sorted(ops[domain])}")
        if node.overload:
            raise BundleIntegrityError(f"{label}: operator {node.op_type!r} names a function "
                                       f"overload {node.overload!r}: functions are not allowed")
        if node.subgraphs:
            raise BundleIntegrityError(f"{label}: operator {node.op_type!r} has a subgraph "
                                       f"attribute: subgraphs are not allowed")
        for t in node.tensors:
            _check_tensor(t, f"{label} ({node.op_type}) attribute", None)


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
    except WireError as exc:
        raise BundleIntegrityError(f"{where}: not a well-formed ONNX model: {exc}") from None
    if model.graph is None:
        raise BundleIntegrityError(f"{where}: not an ONNX model (no graph)")
    if model.functions or model.training_info:
        raise BundleIntegrityError(f"{where}: model-local functions and training info are not "
                                   f"allowed")
    opsets = ALLOWED_OPSETS[format_version]
    for domain, version in model.opsets:
        d = _domain(domain)
        if d not in opsets or not 1 <= version <= opsets[d]:
            allowed = {k or "ai.onnx": v for k, v in opsets.items()}
            raise BundleIntegrityError(f"{where}: opset import {domain or 'ai.onnx'!r} version "
                                       f"{version} is not allowed; allowed (highest version): "
                                       f"{allowed}")
    _walk(model.graph, where, ALLOWED_OPS[format_version], frozenset(materialized),
          shape_fed_ok=format_version >= 2)
    return model
