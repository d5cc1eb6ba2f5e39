"""The rest of a mode's MLP graph rewritten to run on transposed activations ([units, N]).

``run_all``'s shared graph (:mod:`shared_layer`) computes the union of the modes' first-layer
units transposed, so each mode takes its units as whole rows (a ``Gather`` along axis 0; along
axis 1 onnxruntime copies element by element). Continuing in that layout spares a
``Transpose`` per mode: ``a @ op(B) + c`` becomes ``op(B)^T @ a^T + c^T`` (one ``Gemm``), and a
per-unit vector of an elementwise op becomes a column. Only what the shared plan accepts is
rewritten (``Gemm`` and ``MatMul`` with a constant weight, ``Add``/``Mul``/``Greater`` with a
per-unit or scalar constant, ``Cast``, ``Relu``, ``ThresholdedRelu``); anything else gives
None and the mode runs through its own session.
"""

from __future__ import annotations

import numpy as np

_UNARY = {"Cast", "Relu", "ThresholdedRelu"}
_BINARY = {"Add", "Mul", "Greater"}


def _column(arr: np.ndarray) -> np.ndarray | None:
    """A per-unit constant as a column ([k, 1]); a scalar as it is; None for anything else."""
    if arr.size == 1:
        return arr
    if arr.ndim == 1:
        return arr.reshape(-1, 1)
    if arr.ndim == 2 and arr.shape[0] == 1:
        return np.ascontiguousarray(arr.T)
    return None


def transposed_rest(rest: list, weights: dict, prefix: str):
    """``rest`` ((op, inputs, output, attrs) after the first layer, on [N, units]) as nodes on
    [units, N] with their initializers (names under ``prefix``), or None when an op is not
    one this rewrites. Value names are prefixed; the caller transposes the graph output back."""
    nodes, inits = [], {}

    def const(name: str, arr: np.ndarray, tag: str) -> str:
        key = f"{prefix}{name}{tag}"
        inits[key] = arr
        return key

    def value(name: str) -> str:
        return prefix + name if name else name

    for op, ins, out, at in rest:
        if op == "Gemm":
            a, b = ins[0], ins[1]
            w = weights.get(b)
            if a in weights or w is None or w.ndim != 2 or at.get("transA", 0):
                return None
            new = [const(b, w, ""), value(a)]
            if len(ins) > 2 and ins[2]:
                c = weights.get(ins[2])
                col = _column(c) if c is not None else None
                if col is None:
                    return None
                new.append(const(ins[2], col, "/col"))
            attrs = {k: v for k, v in at.items() if k in ("alpha", "beta")}
            if not at.get("transB", 0):
                attrs["transA"] = 1
            nodes.append(("Gemm", new, value(out), attrs))
        elif op == "MatMul":
            w = weights.get(ins[1])
            if ins[0] in weights or w is None or w.ndim != 2:
                return None
            nodes.append(("Gemm", [const(ins[1], w, ""), value(ins[0])], value(out),
                          {"transA": 1}))
        elif op in _BINARY:
            new = []
            for name in ins:
                arr = weights.get(name)
                if arr is None:
                    new.append(value(name))
                    continue
                col = _column(arr)
                if col is None:
                    return None
                new.append(const(name, col, "/col"))
            nodes.append((op, new, value(out), at))
        elif op in _UNARY:
            nodes.append((op, [value(i) for i in ins], value(out), at))
        else:
            return None
    return nodes, inits
