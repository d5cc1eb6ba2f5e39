"""Hidden widths of int8 variants padded with inert units to a multiple of :data:`UNIT_MULTIPLE`.

onnxruntime's int8 products (MLAS QGEMM) run in tiles of 16 output columns on AMX (``TILE_N``
in ``qgemm_kernel_amx.cpp``; 16 int32 lanes of a 512-bit register on AVX-512 VNNI): a product
whose width is not a multiple of 16 runs its last columns through a slower remainder path. A
mode keeps whatever number of units its gates chose (336 and 647 on the width-1024 paper mode),
so before quantization each hidden width is padded up to the next multiple with *inert* units:

* the producing ``MatMul`` gets zero columns, the unit-wise ops between the two products
  (``Add`` of a bias, ``Mul`` by a per-unit vector, ``Relu``, ``ThresholdedRelu``) get zeros
  for the new units: a padded unit's value is exactly 0 for every input (every one of these
  ops maps 0 to 0);
* the consuming ``MatMul`` gets zero rows: a padded unit contributes nothing, whatever its
  value.

The logits are those of the unpadded graph: per-channel weight scales are per output unit (the
kept units' are unchanged), a dynamically quantized activation's range always includes 0 (so
adding zeros changes neither its scale nor its zero point), and an activation that is exactly 0
quantizes to the zero point and multiplies zero weights. The manifest's ``units_kept`` and
``macs`` keep describing the real units; the int8 graph computes the few padded ones too
(docs/int8.md, section 3b, measures what the padding gains and costs). A graph whose widths are
already multiples (the dense model) is returned unchanged.

Only the exact pattern is padded: ``MatMul(x, W)`` (W a 2-D initializer used by that node
alone) whose output runs through a single-consumer chain of the unit-wise ops above (their
other operand an initializer of one value per unit, used by that node alone) into the first
input of another ``MatMul(h, W2)`` (W2 a 2-D initializer used by that node alone); no value of
the chain is a graph output. Anything else is left as it is.
"""

from __future__ import annotations

import numpy as np

UNIT_MULTIPLE = 16  # hidden widths of int8 variants are padded to a multiple of this

_UNARY = ("Relu", "ThresholdedRelu")  # unit-wise ops that map 0 to 0
_PER_UNIT = ("Add", "Mul")  # with a per-unit vector: 0 + 0 = 0, 0 * 0 = 0


def padded_width(n: int, multiple: int = UNIT_MULTIPLE) -> int:
    """``n`` rounded up to a multiple of ``multiple``."""
    return -(-n // multiple) * multiple


def _chain(start, consumers, outputs, arrays, uses, n):
    """(the unit-wise nodes with their per-unit operand or None, the consuming MatMul) after a
    producer whose output ``start`` is ``n`` units wide, or None when the pattern does not
    hold."""
    steps, cur = [], start
    while True:
        users = consumers.get(cur, [])
        if cur in outputs or len(users) != 1:
            return None
        node = users[0]
        if node.op_type == "MatMul":
            w = arrays.get(node.input[1]) if len(node.input) == 2 else None
            if node.input[0] != cur or w is None or w.ndim != 2 or w.shape[0] != n \
                    or uses[node.input[1]] != 1:
                return None
            return steps, node
        if node.op_type in _UNARY and len(node.input) == 1:
            steps.append((node, None))
        elif node.op_type in _PER_UNIT and len(node.input) == 2 and cur in node.input:
            other = node.input[1] if node.input[0] == cur else node.input[0]
            v = arrays.get(other)
            if v is None or v.shape != (n,) or uses[other] != 1 or other == cur:
                return None
            steps.append((node, other))
        else:
            return None
        cur = node.output[0]


def align_units(model, multiple: int = UNIT_MULTIPLE):
    """A copy of ``model`` (an onnx.ModelProto, float32, ``Gemm`` already rewritten as
    ``MatMul + Add``: quantize.gemm_to_matmul) with every matching hidden width padded to a
    multiple of ``multiple`` as described above; returns (model, {producer MatMul name:
    (width, padded width)}). ``multiple`` 1 pads nothing."""
    import onnx
    from onnx import numpy_helper

    if int(multiple) != multiple or multiple < 1:
        raise ValueError(f"multiple: expected an integer >= 1, got {multiple!r}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    if multiple == 1:
        return out, {}
    inits = {t.name: t for t in g.initializer}
    arrays = {name: numpy_helper.to_array(t) for name, t in inits.items()
              if t.data_type == onnx.TensorProto.FLOAT}
    consumers: dict[str, list] = {}
    uses: dict[str, int] = {}
    for node in g.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
            uses[name] = uses.get(name, 0) + 1
    outputs = {o.name for o in g.output}
    padded, changed, cleared = {}, set(), set()
    for node in g.node:
        if node.op_type != "MatMul" or len(node.input) != 2 or node.input[1] not in arrays \
                or uses[node.input[1]] != 1 or arrays[node.input[1]].ndim != 2:
            continue
        n = arrays[node.input[1]].shape[1]
        to = padded_width(n, multiple)
        found = _chain(node.output[0], consumers, outputs, arrays, uses, n) if to != n else None
        if found is None:
            continue
        steps, consumer = found
        w = arrays[node.input[1]]
        arrays[node.input[1]] = np.concatenate([w, np.zeros((w.shape[0], to - n), w.dtype)], 1)
        for step, other in steps:
            if other is not None:
                v = arrays[other]
                arrays[other] = np.concatenate([v, np.zeros(to - n, v.dtype)])
                changed.add(other)
            cleared.add(step.output[0])
        w2 = arrays[consumer.input[1]]
        arrays[consumer.input[1]] = np.concatenate(
            [w2, np.zeros((to - n, w2.shape[1]), w2.dtype)], 0)
        changed.update((node.input[1], consumer.input[1]))
        cleared.add(node.output[0])
        padded[node.name or node.output[0]] = (n, to)
    for name in changed:
        inits[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(arrays[name]), name))
    if cleared:  # shapes recorded for the padded values no longer hold
        keep = [v for v in g.value_info if v.name not in cleared]
        del g.value_info[:]
        g.value_info.extend(keep)
    return out, padded
