"""The int8 lowering of the hard gate: ``Gemm -> ThresholdedRelu -> Mul`` instead of
``Gemm -> Greater -> Cast -> Mul``, before quantization (one operator fewer per gated layer).

The fp32 lowering (exporting/thresholded.py) scales a producer's rows by ``1/t`` and folds
``t`` into the consumer's columns; that widens the range of the activations the next layer
quantizes per tensor (units with ``t = 0`` take ``t = 2**-40``: a 1e12 scale), which int8
cannot take. Here ``t`` comes back right after the gate instead: ``Mul(ThresholdedRelu(z/t), t)``
is ``z * 1[z > t]`` in the producer's own range, so the consumer keeps its weights. The rows'
``1/t`` costs int8 nothing: weights are quantized per output unit, so a row's scale lands in
its quantization scale and its int8 values stay the same.

Only the exact pattern is rewritten: ``Gemm(x, W, b)`` (transB=1, alpha = beta = 1, W and b
initializers) whose output feeds only ``Greater(z, T)`` (T an initializer of one threshold per
unit, all finite and >= 0) and ``Mul(z, Cast(Greater))``; anything else is left as it is. The
int8 variant is still checked against the fp32 graph by the export's accuracy guard.
"""

from __future__ import annotations

import numpy as np

ZERO_THRESHOLD = 2.0 ** -40  # stands for t == 0 (both lowerings): a power of two scales exactly


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


HEAD_WIDTH = 32  # a Gemm with at most this many outputs stays fp32 in int8 variants


def _plain_gemm(node, inits) -> bool:
    a = _attrs(node)
    return node.op_type == "Gemm" and len(node.input) == 3 and node.input[1] in inits \
        and node.input[2] in inits \
        and (a.get("transA", 0), a.get("transB", 0), a.get("alpha", 1.0), a.get("beta", 1.0)) \
        == (0, 1, 1.0, 1.0)


def narrow_heads(model, width: int = HEAD_WIDTH) -> set[str]:
    """Names of the Gemm nodes (``node.name or its output``) that write a graph output with at
    most ``width`` columns, such as a classifier head: their few multiply-adds cost less in fp32 than the fixed work of
    a dynamically quantized product (quantizing the input, rescaling the output: about 5 us a
    call at batch 1 for a 647x10 head, against 2 us in fp32)."""
    inits = {t.name: t for t in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    return {n.name or n.output[0] for n in model.graph.node
            if _plain_gemm(n, inits) and n.output[0] in outputs
            and inits[n.input[1]].dims[0] <= width}


def lower_gates_for_int8(model, fp32_heads=frozenset()):
    """A copy of ``model`` (onnx.ModelProto) with every matching hard gate lowered as above;
    returns (model, number of gates lowered). A gate whose only consumer is one of
    ``fp32_heads`` (Gemm names that stay fp32: :func:`narrow_heads`) needs no ``Mul``: its
    ``t`` goes into the head's columns, as in the fp32 lowering."""
    import onnx
    from onnx import helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {t.name: t for t in g.initializer}
    consumers: dict[str, list] = {}
    for node in g.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    by_output = {o: n for n in g.node for o in n.output}
    drop, replace, lowered = set(), {}, 0
    for gemm in g.node:
        if not _plain_gemm(gemm, inits):
            continue
        z = gemm.output[0]
        users = consumers.get(z, [])
        greater = next((n for n in users if n.op_type == "Greater" and n.input[0] == z), None)
        mul = next((n for n in users if n.op_type == "Mul"), None)
        if greater is None or mul is None or len(users) != 2 \
                or greater.input[1] not in inits:
            continue
        cast = consumers.get(greater.output[0], [])
        if len(cast) != 1 or cast[0].op_type != "Cast" or consumers.get(cast[0].output[0]) != [mul]:
            continue
        if by_output.get(mul.input[0] if mul.input[1] == cast[0].output[0] else mul.input[1]) \
                is not gemm:
            continue
        t = numpy_helper.to_array(inits[greater.input[1]]).astype(np.float32)
        w = numpy_helper.to_array(inits[gemm.input[1]])
        if t.ndim != 1 or t.shape[0] != w.shape[0] or not np.all(np.isfinite(t)) \
                or np.any(t < 0):
            continue
        t_eff = np.where(t > 0, t, ZERO_THRESHOLD).astype(np.float32)
        s = (np.float32(1) / t_eff).astype(np.float32)
        b = numpy_helper.to_array(inits[gemm.input[2]])
        inits[gemm.input[1]].CopyFrom(numpy_helper.from_array(
            (w * s[:, None]).astype(np.float32), gemm.input[1]))
        inits[gemm.input[2]].CopyFrom(numpy_helper.from_array(
            (b * s).astype(np.float32), gemm.input[2]))
        inits[greater.input[1]].CopyFrom(numpy_helper.from_array(t_eff, greater.input[1]))
        base = gemm.name or z
        gated = f"{base}_thresholded"
        users = consumers.get(mul.output[0], [])
        head = users[0] if len(users) == 1 and (users[0].name or users[0].output[0]) in \
            fp32_heads and _plain_gemm(users[0], inits) and users[0].input[0] == mul.output[0] \
            else None
        if head is not None:  # t into the fp32 head's columns: no Mul
            hw = numpy_helper.to_array(inits[head.input[1]])
            inits[head.input[1]].CopyFrom(numpy_helper.from_array(
                (hw * t_eff[None, :]).astype(np.float32), head.input[1]))
            gated = mul.output[0]
        replace[greater.output[0]] = [helper.make_node(
            "ThresholdedRelu", [z], [gated], alpha=1.0, name=f"{base}_thresholdedrelu")]
        replace[mul.output[0]] = [] if head is not None else [helper.make_node(
            "Mul", [gated, greater.input[1]], list(mul.output), name=f"{base}_rescale")]
        drop.add(cast[0].output[0])
        lowered += 1
    if not lowered:
        return out, 0
    nodes = []
    for node in g.node:
        if node.output[0] in drop:
            continue
        nodes.extend(replace.get(node.output[0], [node]))
    del g.node[:]
    g.node.extend(nodes)
    return out, lowered
