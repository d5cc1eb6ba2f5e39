"""Several modes' graphs as one stacked graph: one batched ``MatMul`` per layer for all modes.

The fp32 lowering of one backbone gives every mode the same operator sequence (``Gemm``, the
gate, ``Gemm``, ..., under the same value names); only the kept sizes differ. Where they all
match, the modes are stacked on a leading mode axis instead of placed side by side: each
constant is padded to the largest size among the modes (weights ``[M, k_in, k_out]``, per-unit
vectors ``[M, 1, k]``; transposed layout ``[M, k_out, k_in]`` and ``[M, k, 1]``). A padded unit
has zero weights and bias, so it is exactly 0 before and after its gate (``Relu``,
``ThresholdedRelu`` with ``alpha >= 0``, ``z * Cast(Greater(z, t))`` with ``t`` padded by 0),
and the next layer's zero weights for it add exact zeros: each mode's real units are its own.
Graphs with another sequence, another operator or another constant shape give None and keep the
per-mode branches.

A batched ``MatMul`` need not round like the mode's own ``Gemm``; a hard gate could flip on a
value within rounding of its threshold. The stacked graph therefore counts per mode and row
the gate inputs within :data:`shared_layer.GATE_TOL` of a nonzero threshold (``alpha`` of a
``ThresholdedRelu``, in units of its rows' scale ``1/t``; a ``Greater`` threshold), output
``near``; the callers rerun rows with a nonzero count through the mode's own session.
"""

from __future__ import annotations

import numpy as np

from taugate.runtime import shared_layer

_UNARY = {"Relu", "ThresholdedRelu", "Cast"}
_BINARY = {"Add", "Mul", "Greater"}


def _vector(arr: np.ndarray):
    """A per-unit constant as 1-D; None for any other shape (scalars are handled apart)."""
    if arr.ndim == 1:
        return arr
    if arr.ndim == 2 and arr.shape[0] == 1:
        return arr[0]
    return None


def _same(node_lists: list) -> bool:
    ref = node_lists[0]
    return all(len(n) == len(ref) and all(a == b for a, b in zip(n, ref))
               for n in node_lists[1:])


def stack_nodes(node_lists: list, weights: list, scales: list, first: str, widths: list,
                transposed: bool, prefix: str = "s/"):
    """The modes' graphs (``node_lists[i]``: (op, inputs, outputs, attrs), identical for every
    mode; ``weights[i]``: its constants; ``scales[i]``: Gemm output -> row scale ``1/t``) as
    one stacked graph on the value ``first`` (``[M, R, widths[i]]`` rows, or ``[M, widths[i],
    N]`` when ``transposed``): (nodes, initializers, gates) or None when they do not stack.
    ``gates``: (value, lo, hi) stacked bounds of the near-threshold band (``lo = inf`` where a
    unit is not checked). Value names get ``prefix``; the first value is read as ``first``."""
    if not node_lists or not _same(node_lists):
        return None
    m = len(node_lists)
    names = set(weights[0])
    if any(set(w) != names for w in weights):
        return None
    nodes, inits, gates = [], {}, []
    width = {first: list(widths)}  # value -> its width in each mode

    def val(name: str) -> str:
        return prefix + name if name else name

    def units(arrs: list, key: str, pad: float = 0.0) -> str:
        """Per-unit vectors (or scalars) of every mode, stacked on the mode axis."""
        if all(a.size == 1 for a in arrs):
            if all(a.reshape(()) == arrs[0].reshape(()) for a in arrs):
                inits[key] = np.asarray(arrs[0], np.float32)
                return key
            out = np.array([a.reshape(()) for a in arrs], np.float32).reshape(m, 1, 1)
        else:
            vecs = [_vector(a) for a in arrs]
            if any(v is None for v in vecs):
                raise _NoStack
            k = max(len(v) for v in vecs)
            out = np.full((m, k), pad, np.float32)
            for i, v in enumerate(vecs):
                out[i, :len(v)] = v
            out = out.reshape(m, k, 1) if transposed else out.reshape(m, 1, k)
        inits[key] = out
        return key

    try:
        for j, (op, ins, outs, at) in enumerate(node_lists[0]):
            out = outs[0] if isinstance(outs, (list, tuple)) else outs
            if isinstance(outs, (list, tuple)) and len(outs) != 1:
                return None
            if op in ("Gemm", "MatMul"):
                a, b = ins[0], ins[1]
                if a in names or b not in names or a not in width or at.get("transA", 0) \
                        or at.get("alpha", 1.0) != 1.0 or at.get("beta", 1.0) != 1.0:
                    return None
                mats = [w[b] for w in weights]
                if any(w.ndim != 2 for w in mats):
                    return None
                if op == "MatMul" or not at.get("transB", 0):
                    mats = [w.T for w in mats]  # each [k_out, k_in]
                k_out, k_in = max(w.shape[0] for w in mats), max(w.shape[1] for w in mats)
                if any(w.shape[1] != width[a][i] for i, w in enumerate(mats)):
                    return None
                # [M, k_out, k_in] in both layouts: onnxruntime packs a MatMul's second
                # operand at every call, so the weights go first (W @ a^T, then transposed
                # back in the row layout: two cheap copies where packing them cost ~2x)
                st = np.zeros((m, k_out, k_in), np.float32)
                for i, w in enumerate(mats):
                    st[i, :w.shape[0], :w.shape[1]] = w
                key = f"{prefix}{j}/w"
                inits[key] = st
                product = val(out) if len(ins) < 3 or not ins[2] else f"{prefix}{j}/mm"
                if transposed:
                    nodes.append(("MatMul", [key, val(a)], product, {}))
                else:
                    nodes += [("Transpose", [val(a)], f"{prefix}{j}/at", {"perm": [0, 2, 1]}),
                              ("MatMul", [key, f"{prefix}{j}/at"], f"{prefix}{j}/pt", {}),
                              ("Transpose", [f"{prefix}{j}/pt"], product, {"perm": [0, 2, 1]})]
                if product != val(out):
                    if ins[2] not in names:
                        return None
                    bias = units([w[ins[2]] for w in weights], f"{prefix}{j}/b")
                    nodes.append(("Add", [product, bias], val(out), {}))
                width[out] = [w.shape[0] for w in mats]
            elif op in _BINARY:
                if ins[0] in names or ins[0] not in width or len(ins) != 2:
                    return None
                other = ins[1]
                if other in names:
                    arrs = [w[other] for w in weights]
                    if any(a.size not in (1, width[ins[0]][i]) for i, a in enumerate(arrs)):
                        return None
                    second = units(arrs, f"{prefix}{j}/c")
                    if op == "Greater":
                        gates.append(_greater_band(ins[0], arrs, width[ins[0]], transposed))
                elif other in width:
                    second = val(other)
                else:
                    return None
                nodes.append((op, [val(ins[0]), second], val(out), at))
                width[out] = width[ins[0]]
            elif op in _UNARY:
                if len(ins) != 1 or ins[0] not in width:
                    return None
                if op == "ThresholdedRelu":
                    alpha = at.get("alpha", 1.0)
                    if alpha < 0:
                        return None
                    if alpha:
                        gates.append(_trelu_band(ins[0], alpha, [s.get(ins[0]) for s in scales],
                                                 width[ins[0]], transposed))
                nodes.append((op, [val(ins[0])], val(out), at))
                width[out] = width[ins[0]]
            else:
                return None
    except _NoStack:
        return None
    gates = [g for g in gates if g is not None]
    return nodes, inits, [(val(v), lo, hi) for v, lo, hi in gates]


class _NoStack(Exception):
    pass


def _band(value: str, centres: list, tols: list, transposed: bool):
    """(value, lo, hi) stacked: ``centre - tol < v < centre + tol`` for the checked units
    (bounds rounded outwards to float32), an empty band (lo = inf, hi = -inf) elsewhere."""
    m, k = len(centres), max(len(c) for c in centres)
    if not any(np.isfinite(t).any() for t in tols):
        return None
    lo = np.full((m, k), np.inf, np.float32)
    hi = np.full((m, k), -np.inf, np.float32)
    for i, (c, t) in enumerate(zip(centres, tols)):
        ok = np.isfinite(t)
        c64, t64 = np.asarray(c, np.float64)[ok], np.asarray(t, np.float64)[ok]
        lo[i, :len(c)][ok] = np.nextafter((c64 - t64).astype(np.float32), np.float32(-np.inf))
        hi[i, :len(c)][ok] = np.nextafter((c64 + t64).astype(np.float32), np.float32(np.inf))
    shape = (m, k, 1) if transposed else (m, 1, k)
    return value, lo.reshape(shape), hi.reshape(shape)


def _greater_band(value: str, thresholds: list, widths: list, transposed: bool):
    """A ``Greater(z, t)`` gate: its units of nonzero ``t`` (a unit at ``t == 0`` that flips
    moves by at most the tolerance)."""
    centres, tols = [], []
    for t, k in zip(thresholds, widths):
        t = np.broadcast_to(np.asarray(t, np.float32).reshape(-1), (k,))
        centres.append(t)
        tols.append(np.where(t != 0, shared_layer.GATE_TOL, np.inf))
    return _band(value, centres, tols, transposed)


def _trelu_band(value: str, alpha: float, scales: list, widths: list, transposed: bool):
    """A ``ThresholdedRelu(alpha)`` gate on rows scaled by ``1/t``: the band is the tolerance
    in units of that scale; units lowered from ``t == 0`` are not checked."""
    centres, tols = [], []
    for r, k in zip(scales, widths):
        centres.append(np.full(k, alpha, np.float32))
        if r is None:
            tols.append(np.full(k, shared_layer.GATE_TOL))
        else:
            r = np.asarray(r, np.float64)
            tols.append(np.where(r != shared_layer.ZERO_SCALE, shared_layer.GATE_TOL * r, np.inf))
    return _band(value, centres, tols, transposed)


def near_nodes(gates: list, transposed: bool, nodes: list, inits: dict) -> str | None:
    """Append the near-threshold count of every gate: ``near`` ([M, R, 1] rows, or [M, 1, N]
    transposed), the number of gate units of each mode and row inside their band. Each gate:
    ``Less``, ``Greater``, ``And``, ``Cast`` and one batched ``MatMul`` with ones to sum the
    units; the gates' counts are added by one ``Sum``. None when no unit is checked."""
    if not gates:
        return None
    counts = []
    for g, (value, lo, hi) in enumerate(gates):
        p = f"near/{g}/"
        k = lo.shape[1] if transposed else lo.shape[2]
        inits[p + "lo"], inits[p + "hi"] = lo, hi
        inits[p + "ones"] = np.ones((1, k) if transposed else (k, 1), np.float32)
        nodes += [("Less", [value, p + "hi"], p + "below", {}),
                  ("Greater", [value, p + "lo"], p + "above", {}),
                  ("And", [p + "below", p + "above"], p + "hit", {}),
                  ("Cast", [p + "hit"], p + "f", {"to": 1})]
        nodes.append(("MatMul", [p + "ones", p + "f"] if transposed else [p + "f", p + "ones"],
                      p + "count", {}))
        counts.append(p + "count")
    nodes.append(("Sum", counts, "near", {}))
    return "near"


def stacked_bytes(inits: dict) -> int:
    """Bytes of the stacked (padded) constants: a copy beside the modes' own weights."""
    return sum(a.nbytes for a in inits.values())
