"""int8 precision variants of exported graphs (onnxruntime.quantization), pure bytes -> bytes.

Two schemes (https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html):

- ``"dynamic-per-channel"``: weights int8 per output unit, activations quantized per batch at
  run time; each hard gate first lowered to ``ThresholdedRelu -> Mul`` and a narrow head
  (at most 32 outputs, e.g. the classifier) kept fp32 (int8_gate.py). onnxruntime's dynamic quantizer handles ``MatMul`` but not ``Gemm``, so every
  ``Gemm(transB=1)`` is first rewritten as ``MatMul`` (weight transposed once) + ``Add``; the
  quantized graph holds ``DynamicQuantizeLinear``, ``MatMulInteger``, ``Cast``, ``Mul``, ``Add``
  (all default domain), which onnxruntime fuses into its ``DynamicQuantizeMatMul`` kernel.
- ``"static-per-channel"``: activation ranges calibrated on the calibration split (MinMax),
  QDQ format around each ``Gemm``: ``QuantizeLinear`` / ``DequantizeLinear`` + the original ops,
  fused by onnxruntime into ``QGemm``.

The threshold ops of a gated layer (``ThresholdedRelu``, ``Mul``; ``Greater``, ``Cast``,
``Where`` where not lowered) stay float32: only the matrix products are int8. Needs onnx + onnxruntime (the export side, no torch);
onnx is imported inside the functions so the CLI can read :data:`SCHEMES` without it.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from taugate.exporting.int8_align import UNIT_MULTIPLE, align_units
from taugate.exporting.int8_gate import lower_gates_for_int8, narrow_heads

SCHEMES = ("dynamic-per-channel", "static-per-channel")
DEFAULT_SCHEME = "dynamic-per-channel"


def gemm_to_matmul(model):
    """A copy of ``model`` with each ``Gemm(A, W, b, transB=1)`` (alpha = beta = 1, W and b
    initializers) as ``MatMul(A, W.T) + b`` -- the form the dynamic quantizer handles."""
    import onnx
    from onnx import helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {t.name: t for t in g.initializer}
    nodes = []
    for node in g.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type != "Gemm" or attrs.get("transA", 0) != 0 or attrs.get("transB", 0) != 1
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0
                or len(node.input) != 3 or node.input[1] not in inits):
            nodes.append(node)
            continue
        w = inits[node.input[1]]
        wt = numpy_helper.to_array(w).T.copy()
        w.CopyFrom(numpy_helper.from_array(wt, w.name))
        mm = f"{node.name or node.output[0]}_mm"
        nodes.append(helper.make_node("MatMul", [node.input[0], w.name], [mm], name=mm))
        nodes.append(helper.make_node("Add", [mm, node.input[2]], list(node.output),
                                      name=f"{node.name or node.output[0]}_add"))
    del g.node[:]
    g.node.extend(nodes)
    return out


def fold_weight_transposes(model):
    """A copy of ``model`` with each ``Transpose`` of an initializer replaced by the transposed
    initializer. ``torch.onnx.export`` without constant folding writes a ``Linear`` on 3-D
    inputs (tokens) as ``Transpose(W) -> MatMul -> Add``; the quantizers only quantize a
    ``MatMul`` whose weight is an initializer, so without this every token Linear stays fp32."""
    import onnx
    from onnx import helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {t.name: t for t in g.initializer}
    nodes, folded = [], []
    for node in g.node:
        if node.op_type != "Transpose" or node.input[0] not in inits:
            nodes.append(node)
            continue
        perm = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "perm"),
                    None)
        arr = numpy_helper.to_array(inits[node.input[0]])
        folded.append(numpy_helper.from_array(np.ascontiguousarray(np.transpose(arr, perm)),
                                              node.output[0]))
    if not folded:
        return out
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in nodes for i in n.input} | {o.name for o in g.output}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep + folded)
    return out


class _Reader:
    """onnxruntime CalibrationDataReader over one float32 array, in batches."""

    def __init__(self, name: str, x: np.ndarray, batch: int = 256):
        self._it = iter([{name: x[i:i + batch]} for i in range(0, len(x), batch)])

    def get_next(self):
        return next(self._it, None)


def quantize(model, scheme: str = DEFAULT_SCHEME,
             calibration: np.ndarray | None = None, weights_only: bool = False,
             align: int = UNIT_MULTIPLE) -> bytes:
    """The int8 variant of ``model`` (an onnx.ModelProto or its bytes), serialized.
    ``calibration`` (the graph's inputs: float32, or int64 token ids) is needed by the static
    scheme only. ``weights_only``
    (dynamic scheme): only the ``MatMul`` nodes whose second input is a weight are quantized
    (a decoder's attention products of two activations, and its embedding ``Gather``, stay
    float32). ``align`` (dynamic scheme, not ``weights_only``): hidden widths are padded with
    inert units to a multiple of it (int8_align.py; the logits do not change), 1 pads nothing.
    The opset, IR version and metadata of the float graph are kept."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    if scheme not in SCHEMES:
        raise ValueError(f"quantization scheme: expected one of {', '.join(SCHEMES)}, "
                         f"got {scheme!r}")
    if isinstance(model, (bytes, bytearray)):
        model = onnx.load_from_string(bytes(model))
    model = fold_weight_transposes(model)
    if scheme.startswith("static") and (calibration is None or len(calibration) == 0):
        raise ValueError(f"quantization scheme {scheme!r} needs calibration inputs")
    # the quantizer logs per-node chatter at INFO/WARNING ("Please consider pre-processing ...")
    # through the root logger: quiet it for the call only, never for the whole process
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        with tempfile.TemporaryDirectory(prefix="taugate-quant-") as tmp:
            src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            if scheme == "dynamic-per-channel":
                extra = {"op_types_to_quantize": ["MatMul"],
                         # contrib ops (GroupQueryAttention) have no ONNX shape inference
                         "extra_options": {"MatMulConstBOnly": True,
                                           "DefaultTensorType": onnx.TensorProto.FLOAT}
                         } if weights_only else {}
                # the gates' int8 lowering: one operator fewer per gated layer, narrow heads
                # kept fp32 (int8_gate.py); a decoder's graph has neither
                heads = set() if weights_only else narrow_heads(model)
                lowered = model if weights_only else lower_gates_for_int8(model, heads)[0]
                matmuls = gemm_to_matmul(lowered)
                if not weights_only:  # hidden widths to the int8 kernels' tile (int8_align.py)
                    matmuls = align_units(matmuls, align)[0]
                onnx.save(matmuls, src)
                quantize_dynamic(src, dst, per_channel=True, weight_type=QuantType.QInt8,
                                 nodes_to_exclude=[f"{h}_mm" for h in sorted(heads)], **extra)
            else:
                onnx.save(model, src)
                name = model.graph.input[0].name
                # token ids stay int64 (the graph's input type); everything else is float32
                kind = np.int64 if np.asarray(calibration).dtype.kind in "iub" else np.float32
                quantize_static(src, dst, _Reader(name, np.ascontiguousarray(calibration, kind)),
                                quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
            q = onnx.load(dst)
    finally:
        root.setLevel(level)
    # keep what the runtime checks: IR version, opset, metadata (the quantizer may change them)
    q.ir_version = model.ir_version
    del q.metadata_props[:]
    q.metadata_props.extend(model.metadata_props)
    onnx.checker.check_model(q, full_check=True)
    return q.SerializeToString()


def operators(model) -> list[tuple[str, str]]:
    """Sorted (domain, op_type) pairs a graph uses (domain "" is the default ONNX domain)."""
    import onnx

    if isinstance(model, (bytes, bytearray)):
        model = onnx.load_from_string(bytes(model))
    return sorted({(n.domain, n.op_type) for n in model.graph.node})
