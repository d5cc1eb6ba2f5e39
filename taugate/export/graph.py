"""Pure builder: a hardened (compacted) MLP -> ``onnx.ModelProto``.

Opset 17 and IR version 8 are set explicitly: onnx's own newer defaults are refused by
onnxruntime-directml 1.24. Each affine layer is a Gemm (transB=1); a hidden layer whose
thresholds are all 0 is a plain Relu (onnxruntime fuses Gemm+Relu); otherwise the threshold
activation ``z * 1[z > t]`` is built by :func:`threshold_nodes`.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
INPUT_NAME = "pixels"
OUTPUT_NAME = "logits"
BATCH = "batch"
FORMAT_VERSION = 1


def threshold_nodes(z: str, t_name: str, out: str, prefix: str) -> list[onnx.NodeProto]:
    """``out = where(z > t, z, 0)``: exact for any t >= 0."""
    return [
        helper.make_node("Greater", [z, t_name], [f"{prefix}_fire"], name=f"{prefix}_greater"),
        helper.make_node("Where", [f"{prefix}_fire", z, "zero"], [out], name=f"{prefix}_where"),
    ]


def build_graph(model, name: str, metadata: dict | None = None) -> onnx.ModelProto:
    """ONNX model for a :class:`~taugate.export.hardened.HardenedModel`.

    Input ``pixels`` float32 [batch, in] in [0, 1]; output ``logits`` float32 [batch, classes].
    ``metadata`` lands in ``metadata_props`` (strings).
    """
    inits, nodes = [], []
    need_zero = False
    h = INPUT_NAME
    last = len(model.layers) - 1
    for i, layer in enumerate(model.layers):
        w, b = f"W{i}", f"b{i}"
        inits += [numpy_helper.from_array(np.asarray(layer.weight, np.float32), w),
                  numpy_helper.from_array(np.asarray(layer.bias, np.float32), b)]
        z = OUTPUT_NAME if i == last else f"z{i}"
        nodes.append(helper.make_node("Gemm", [h, w, b], [z], name=f"gemm{i}", transB=1))
        if i == last:
            break
        h = f"h{i}"
        if layer.is_relu:
            nodes.append(helper.make_node("Relu", [z], [h], name=f"relu{i}"))
        else:
            t = f"t{i}"
            inits.append(numpy_helper.from_array(np.asarray(layer.threshold, np.float32), t))
            nodes += threshold_nodes(z, t, h, prefix=f"act{i}")
            need_zero = True
    if need_zero:
        inits.append(numpy_helper.from_array(np.zeros((), np.float32), "zero"))
    n_in, n_out = model.layers[0].in_features, model.layers[-1].out_features
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [BATCH, n_in])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [BATCH, n_out])],
        initializer=inits,
    )
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="taugate",
        ir_version=IR_VERSION,
    )
    helper.set_model_props(proto, {k: str(v) for k, v in (metadata or {}).items()})
    onnx.checker.check_model(proto, full_check=True)
    return proto
