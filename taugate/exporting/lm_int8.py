"""The int8 variant of a decode graph (exporting/lm_graph.py): every weight ``MatMul`` becomes
onnxruntime's ``MatMulNBits`` (domain ``com.microsoft``) with ``bits=8``, pure bytes -> bytes.

Weights are int8 per block of :data:`BLOCK` input rows of each output unit (symmetric: zero
point 128 of the stored uint8, the operator's default; one float32 scale per block), and with
``accuracy_level=4`` onnxruntime quantizes the activations to int8 per block too, at run time,
inside the same kernel. At batch 1 that one kernel costs less than the
``DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul`` chain ``quantize_dynamic`` writes
(fused into ``DynamicQuantizeMatMul``), which quantizes the activations per tensor in a pass of
its own: measured side by side in docs/measured/lm-speed-int8.json. Scales per block also keep
more precision than per output unit. A weight whose input width is not a multiple of the block
(a mode's kept units) is padded with zero rows; the operator's ``K`` says where they start.
"""

from __future__ import annotations

import numpy as np

from taugate.exporting.lm_graph import MS

BLOCK = 128  # input rows per scale: a power of two >= 16 (the operator's rule)
ACCURACY_LEVEL = 4  # activations int8 per block: onnxruntime's integer kernels
SCHEME = f"int8-block{BLOCK}"  # the manifest's "quantization"


def quantize_weight(w: np.ndarray, block: int = BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """``w [K, N]`` (``x @ w``) -> ``MatMulNBits``' ``B`` ``[N, ceil(K/block), block]`` uint8
    and ``scales [N * ceil(K/block)]`` float32: ``w ~= (B - 128) * scale``, per block."""
    if w.ndim != 2:
        raise ValueError(f"a weight: expected a [K, N] matrix, got shape {w.shape}")
    k, n = w.shape
    blocks = -(-k // block)
    padded = np.zeros((blocks * block, n), np.float32)
    padded[:k] = w
    per_block = padded.T.reshape(n, blocks, block)
    scale = np.abs(per_block).max(-1) / np.float32(127)
    scale[scale == 0] = 1  # an all-zero block: any scale
    q = np.clip(np.rint(per_block / scale[..., None]), -127, 127).astype(np.int16) + 128
    return q.astype(np.uint8), scale.astype(np.float32).reshape(-1)


def dequantize_weight(b: np.ndarray, scales: np.ndarray, k: int) -> np.ndarray:
    """The ``[K, N]`` float32 weight ``B`` and ``scales`` stand for (the inverse of
    :func:`quantize_weight` up to rounding)."""
    n, blocks, block = b.shape
    w = (b.astype(np.float32) - 128) * scales.reshape(n, blocks, 1)
    return np.ascontiguousarray(w.reshape(n, blocks * block)[:, :k].T)


def quantize_decoder(data: bytes, block: int = BLOCK) -> bytes:
    """The int8 variant of a decode graph's bytes: each ``MatMul`` whose second input is an
    initializer becomes ``MatMulNBits`` (its weight replaced by ``B`` and ``scales``); the
    attention's products, the embedding and the norms stay float32. Checked by
    ``onnx.checker``."""
    import onnx
    from onnx import helper, numpy_helper

    if block < 16 or block & (block - 1):
        raise ValueError(f"block: expected a power of two >= 16, got {block}")
    model = onnx.load_from_string(bytes(data))
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    nodes, replaced, added = [], set(), []
    for node in g.node:
        if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx") \
                or node.input[1] not in inits:
            nodes.append(node)
            continue
        name = node.input[1]
        w = numpy_helper.to_array(inits[name]).astype(np.float32)
        b, scales = quantize_weight(w, block)
        replaced.add(name)
        added += [numpy_helper.from_array(b, f"{name}_q8"),
                  numpy_helper.from_array(scales, f"{name}_scales")]
        nodes.append(helper.make_node(
            "MatMulNBits", [node.input[0], f"{name}_q8", f"{name}_scales"], list(node.output),
            name=node.name, domain=MS, K=w.shape[0], N=w.shape[1], bits=8, block_size=block,
            accuracy_level=ACCURACY_LEVEL))
    still_used = {i for n in nodes for i in n.input}
    keep = [t for t in g.initializer if t.name not in replaced or t.name in still_used]
    del g.node[:]
    g.node.extend(nodes)
    del g.initializer[:]
    g.initializer.extend(keep + added)
    if not any(o.domain == MS for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS, 1))
    onnx.checker.check_model(model)
    return model.SerializeToString()
