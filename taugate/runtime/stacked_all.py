"""``run_all`` as one stacked graph: the shared first layer, then one batched ``MatMul`` per
layer for every mode.

As in :class:`shared_layer.SharedPlan`, a ``Gemm`` computes the union of the modes' kept
first-layer units once, transposed (``[units, N]``). Then, where the rest of every mode's graph
has the same operators (:mod:`stacked`), one ``Gather`` takes every mode's units at once
(``[M, k1, N]``, a mode's list padded by repeating a unit of its own; the padded units are
zeroed by the row scale, or left to the next layer's zero weights), each mode's first-layer row
scale ``1/t`` multiplies them, and each later layer is one batched ``MatMul`` of the stacked
padded weights ``[M, k_out, k_in]`` on ``[M, k_in, N]``: ~4 operators per layer for all modes
instead of ~4 per mode. The logits come out as ``[M, classes, N]``, and ``near`` counts per
mode and row the gate inputs within the tolerance of a threshold: those rows are rerun by the
mode's own session, so the answer stays within 1e-5 of ``run``. Used only with
``run_all(..., stacked=True)``: measured slower than :class:`shared_layer.SharedPlan`.
"""

from __future__ import annotations

import numpy as np

from taugate.runtime.onnx_build import model_bytes
from taugate.runtime.providers import create_session
from taugate.runtime.stacked import near_nodes, stack_nodes, stacked_bytes


class StackedPlan:
    """The stacked ``run_all`` graph of ``names`` (see the module docstring); ``alone``: modes
    run through their own sessions. ``nbytes``: the stacked constants (a padded copy)."""

    stacked = True

    def __init__(self, rt, names, alone, nodes, inits, outputs, features, opsets):
        self.names, self.alone = names, alone
        self.nbytes = stacked_bytes(inits)
        external = {k: v for k, v in inits.items() if v.dtype == np.float32 and v.ndim >= 2
                    and v.flags.c_contiguous}
        data = model_bytes(nodes, {"x": features}, outputs,
                           {k: v for k, v in inits.items() if k not in external}, opsets,
                           external=external)
        self.session, _ = create_session(data, rt._plan, rt._config, "run_all (stacked)",
                                         external)
        self.checked = len(outputs) > 1

    def run(self, rt, batch: np.ndarray) -> dict:
        from taugate.runtime.mixed import run_session

        out = {name: run_session(rt, name, batch) for name in self.alone}
        n, m = batch.shape[0], len(self.names)
        results = self.session.run(None, {"x": batch.reshape(n, -1)})
        logits = np.ascontiguousarray(results[0].reshape(m, -1, n).transpose(0, 2, 1))
        if self.checked:
            near = results[1].reshape(m, n) > 0
            if near.any():
                for j, rows in enumerate(near):
                    ix = np.flatnonzero(rows)
                    if len(ix):
                        logits[j][ix] = run_session(rt, self.names[j],
                                                    np.ascontiguousarray(batch[ix]))
        out.update(zip(self.names, logits))
        return out


def stacked_plan(rt, weight, bias, plans: dict, alone: list, opsets) -> StackedPlan | None:
    """The stacked plan of ``plans`` (name -> (keep, union, rest, first output, graph output,
    row scales, weights), as :func:`shared_layer.build_plan` finds them), or None where the
    modes' graphs do not stack or the padded copy would exceed ``mixed_graph.MAX_BYTES``."""
    from taugate.runtime.mixed_graph import MAX_BYTES, MAX_MODES

    parts = list(plans.values())
    if not 2 <= len(parts) <= MAX_MODES or len({(p[3], p[4]) for p in parts}) != 1:
        return None
    first, output = parts[0][3], parts[0][4]
    widths = [len(p[0]) for p in parts]
    built = stack_nodes([p[2] for p in parts], [p[6] for p in parts], [p[5] for p in parts],
                        first, widths, transposed=True)
    if built is None:
        return None
    rest, inits, gates = built
    m, k = len(parts), max(widths)
    pos = np.empty((m, k), np.int64)
    for i, p in enumerate(parts):
        own = np.searchsorted(p[1], p[0])
        pos[i, :len(own)], pos[i, len(own):] = own, own[0]
    nodes = [("Gemm", ["w_union", "x", "b_union"], "h", {"transB": 1}),
             ("Gather", ["h", "pos"], "zt", {"axis": 0})]
    inits.update({"w_union": weight, "b_union": bias.reshape(-1, 1), "pos": pos})
    scales = [p[5].get(first) for p in parts]
    if any(s is not None for s in scales):  # each mode's 1/t (1 without), 0 on padded units
        rs = np.zeros((m, k, 1), np.float32)
        for i, s in enumerate(scales):
            rs[i, :widths[i], 0] = 1.0 if s is None else s
        inits["rscale"] = rs
        nodes.append(("Mul", ["zt", "rscale"], "s/" + first, {}))
    else:
        nodes.append(("Identity", ["zt"], "s/" + first, {}))
    nodes += rest
    outputs = ["s/" + output]
    if near_nodes(gates, True, nodes, inits):
        outputs.append("near")
    if stacked_bytes(inits) > MAX_BYTES:
        return None
    return StackedPlan(rt, list(plans), alone, nodes, inits, outputs, weight.shape[1], opsets)
