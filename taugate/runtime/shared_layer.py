"""``run_all``'s shared first layer: the union of the modes' kept first-layer units, computed once.

On a shared-layout fp32 bundle, every mode's first ``Gemm`` reads the graph input with a weight
and a bias that its ``materialize`` steps ``take`` (axis 0) from the same backbone tensors. The
plan gathers the union of those kept rows once and writes one onnxruntime graph
(:mod:`onnx_build`): a ``Gemm`` computes the union product once, transposed ([units, N]); each
mode takes its units' rows (a row ``Gather``: along axis 1 onnxruntime copies element by
element, which cost more than the ``Gemm``) and runs the rest of its graph on that layout
(:mod:`transposed`) on its own materialized initializers. Supported ops: ``Gemm``,
``MatMul``, ``Add``, ``Mul``, ``Greater``, ``Cast`` (to float), ``Relu``, ``ThresholdedRelu``
(the fp32 lowering's gate: a first layer whose rows are scaled by ``1/t`` is the union product
times the mode's row scale); any other graph (and the standalone layout, int8, another first
layer) runs through its own session instead.

Exactness: the union product and the transposed layout round float32 sums differently from the
mode's own graph (~1e-6). Where a value lands within :data:`GATE_TOL` of a nonzero ``Greater``
threshold (of ``alpha`` for a ``ThresholdedRelu``, in units of its rows' scale), that
difference could flip a gate, so the graph itself counts, per mode and row, the gate units
inside that band (:func:`_near_check`, one extra output of [modes, N] counts), and the rows
with a nonzero count are recomputed by that mode's own session: the result stays within 1e-5
of ``run``.
"""

from __future__ import annotations

import struct
import threading

import numpy as np

from taugate.bundle.files import read_verified
from taugate.bundle.onnx_wire import parse
from taugate.bundle.safetensors import read_safetensors
from taugate.bundle.schema import scale_pairs
from taugate.runtime.onnx_build import model_bytes
from taugate.runtime.providers import create_session
from taugate.runtime.transposed import transposed_rest

GATE_TOL = 1e-6  # rows with a gate input this close to its threshold are rerun by the session
_OPS = {"Gemm", "MatMul", "Add", "Mul", "Greater", "Cast", "Relu", "ThresholdedRelu"}
ZERO_SCALE = 2.0 ** 40  # a lowered t == 0 unit (exporting/thresholded.py): flips move it < 1e-12
_PLANS_KEPT = 8
_lock = threading.Lock()


def _attrs(node: dict, buf) -> dict:
    """Int and float attributes (the wire reader keeps a float as its offset in ``buf``)."""
    out = {}
    for a in node.get("attribute", ()):
        if "f" in a:
            out[a.get("name", "")] = struct.unpack_from("<f", buf, a["f"])[0]
        else:
            out[a.get("name", "")] = a.get("i", 0)
    return out


def _indices(arr: np.ndarray, n: int) -> np.ndarray:
    if arr.dtype == np.uint8:  # a packed bit mask (materialize.py)
        return np.flatnonzero(np.unpackbits(arr, count=n))
    return arr.astype(np.intp)


class SharedPlan:
    """One onnxruntime graph for the modes that share the first layer: ``Gemm`` over the union
    of their kept units, transposed ([units, N]); then per mode a ``Gather`` of its units' rows
    and the rest of its graph on that layout (:mod:`transposed`; names prefixed by the mode's
    index). Its outputs: every mode's logits ([modes x classes, N], put in [N, classes] order
    by numpy), then the near-tie counts (:func:`_near_check`). Modes that cannot share run
    through their sessions."""

    def __init__(self, rt, weight, bias, found: dict, alone: list, opsets):
        self.alone, self.names = alone, list(found)
        if not found:
            return
        # the union product transposed ([units, N]): each mode then gathers whole rows (a
        # Gather along axis 1 copies element by element: 16 of them cost more than the Gemm)
        nodes = [("Gemm", ["w_union", "x", "b_union"], "h", {"transB": 1})]
        inits = {"w_union": weight, "b_union": bias.reshape(-1, 1)}
        outputs, self.checked = [], []  # checked: the modes (indices) with a gate to check
        # the near-tie check: each mode's gates' units to check, counted in the graph
        checks = []
        for k, (keep, union, rest, first, output, rscale, weights) in \
                enumerate(found.values()):
            p = f"m{k}/"
            inits[p + "pos"] = np.searchsorted(union, keep).astype(np.int64)
            nodes.append(("Gather", ["h", p + "pos"], p + "zt", {"axis": 0}))
            if rscale.get(first) is None:
                nodes.append(("Identity", [p + "zt"], p + first, {}))
            else:  # rows scaled by 1/t: the union product times the scale
                inits[p + "rscale"] = rscale[first].reshape(-1, 1)
                nodes.append(("Mul", [p + "zt", p + "rscale"], p + first, {}))
            rest_nodes, rest_inits = transposed_rest(rest, weights, p)
            nodes.extend(rest_nodes)
            inits.update(rest_inits)
            gates = []
            for op, ins, _, at in rest:
                gate = _gate(op, ins, at, weights, rscale)
                if gate is not None:
                    gates.append((ins[0], *gate))
            if gates:
                self.checked.append(k)
                checks.append([(p + name, units, centre, tol)
                               for name, units, centre, tol in gates])
            outputs.append(p + output)
        # every mode's logits ([classes, N] each) in one output, put back in [N, classes]
        # order by numpy: one node and one copy instead of a Transpose and an output per mode
        nodes.append(("Concat", outputs, "logits", {"axis": 0}))
        outputs = ["logits"]
        if checks:
            _near_check(checks, nodes, inits)
            outputs.append("near")
        data = model_bytes(nodes, {"x": weight.shape[1]}, outputs, inits, opsets)
        self.session, _ = create_session(data, rt._plan, rt._config, "run_all (shared layer)")

    def run(self, rt, batch: np.ndarray) -> dict:
        from taugate.runtime.mixed import run_session

        out = {name: run_session(rt, name, batch) for name in self.alone}
        if not self.names:
            return out
        results = self.session.run(None, {"x": batch.reshape(batch.shape[0], -1)})
        n, k = batch.shape[0], len(self.names)
        logits = np.ascontiguousarray(results[0].reshape(k, -1, n).transpose(0, 2, 1))
        if self.checked:
            # [checked modes, N]: how many gate units lie near their threshold
            near = results[1].reshape(len(self.checked), n) > 0
            if near.any():
                for j, rows in zip(self.checked, near):
                    ix = np.flatnonzero(rows)
                    if len(ix):
                        logits[j][ix] = run_session(rt, self.names[j],
                                                    np.ascontiguousarray(batch[ix]))
        out.update(zip(self.names, logits))
        return out


def _near_check(checks: list, nodes: list, inits: dict) -> None:
    """Append the near-tie check of every mode to ``nodes``: output ``near`` ([modes, 1, N])
    counts each row's gate units within tolerance of their threshold. One check for all modes:
    each mode's checked units are gathered (padded to one length ``L`` by repeating its last
    unit, which changes no count from zero to nonzero), concatenated, compared with the band's
    bounds (``Less``, ``Greater``, ``And``, ``Cast``) and summed by one batched ``MatMul``
    ([1, L] @ [modes, L, N]). In onnxruntime the same ops per gate made the whole graph ~5%
    slower, and ``ReduceMin``/``ReduceMax`` along axis 0 cost several times a ``MatMul``."""
    length = max(sum(len(u) for _, u, _, _ in gates) for gates in checks)
    pieces, centres, tols = [], [], []
    for m, gates in enumerate(checks):
        pad = length - sum(len(u) for _, u, _, _ in gates)
        for g, (value, units, centre, tol) in enumerate(gates):
            if g == len(gates) - 1 and pad:
                units = np.concatenate([units, np.repeat(units[-1:], pad)])
                tol = np.concatenate([tol, np.repeat(tol[-1:], pad, axis=0)])
            name = f"near/{m}/{g}"
            inits[name + "/units"] = units
            nodes.append(("Gather", [value, name + "/units"], name, {"axis": 0}))
            pieces.append(name)
            centres.append(np.broadcast_to(centre, (len(units), 1)))
            tols.append(tol)
    centre = np.concatenate(centres).astype(np.float64)
    tol = np.concatenate(tols).astype(np.float64)
    # centre - tol < v < centre + tol, bounds rounded outwards to float32
    inits["near/lo"] = np.nextafter((centre - tol).astype(np.float32), np.float32(-np.inf))
    inits["near/hi"] = np.nextafter((centre + tol).astype(np.float32), np.float32(np.inf))
    inits["near/shape"] = np.array([len(checks), length, -1], np.int64)
    inits["near/ones"] = np.ones((1, length), np.float32)
    nodes += [("Concat", pieces, "near/v", {"axis": 0}),
              ("Less", ["near/v", "near/hi"], "near/below", {}),
              ("Greater", ["near/v", "near/lo"], "near/above", {}),
              ("And", ["near/below", "near/above"], "near/hit", {}),
              ("Cast", ["near/hit"], "near/f", {"to": 1}),
              ("Reshape", ["near/f", "near/shape"], "near/f3", {}),
              ("MatMul", ["near/ones", "near/f3"], "near", {})]


def _gate(op: str, ins: list, at: dict, weights: dict, rscale: dict):
    """(the units to check, their centre and tolerance as columns) of a gate whose input may
    land near a nonzero threshold, else None. A gate at threshold 0 that flips moves its unit
    by at most GATE_TOL: only units of nonzero thresholds are checked (inputs: [units, N])."""
    if op == "Greater":
        t = weights.get(ins[1])
        if t is None or t.ndim != 1:
            return None
        units = np.flatnonzero(t)
        centre, tol = t[units].astype(np.float32), np.full(len(units), GATE_TOL, np.float32)
    elif op == "ThresholdedRelu" and rscale.get(ins[0]) is not None:
        r = rscale[ins[0]]
        units = np.flatnonzero(r != ZERO_SCALE)
        centre = np.array(at.get("alpha", 1.0), np.float32)  # a scalar: a cheaper broadcast
        tol = (GATE_TOL * r[units]).astype(np.float32)
    else:
        return None
    if not len(units):
        return None
    return units.astype(np.int64), centre.reshape(-1, 1) if centre.ndim else centre, \
        tol.reshape(-1, 1)


def _first_layer(rt, name: str):
    """(weight tensor, bias tensor, kept indices, nodes after the first Gemm, first output,
    graph output) of a mode that can share the first layer, else None."""
    entry = rt._served(name)
    if rt.precision != "fp32" or entry.materialize is None or rt.manifest.backbone is None:
        return None
    buf = memoryview(read_verified(rt.bundle_dir, entry))
    model = parse(buf, "ModelProto")
    opsets = [(o.get("domain", ""), o.get("version", 0)) for o in model.get("opset_import", ())]
    graph = model.get("graph", {})
    nodes = [(n.get("op_type"), n.get("input", []), n.get("output", []), _attrs(n, buf), n)
             for n in graph.get("node", ())]
    inputs = [v.get("name") for v in graph.get("input", ())]
    outputs = [v.get("name") for v in graph.get("output", ())]
    if not nodes or len(outputs) < 1 or any(n[4].get("domain", "") not in ("", "ai.onnx")
                                            or n[0] not in _OPS for n in nodes):
        return None
    op, ins, outs, at, _ = nodes[0]
    if (op != "Gemm" or len(ins) != 3 or ins[0] != inputs[0] or at.get("transA", 0)
            or not at.get("transB", 0) or at.get("alpha", 1.0) != 1.0
            or at.get("beta", 1.0) != 1.0 or any(n[1] and n[1][0] == inputs[0]
                                                  for n in nodes[1:])):
        return None
    steps = {s.name: s for s in entry.materialize}
    w, b = steps.get(ins[1]), steps.get(ins[2])
    if w is None or b is None or w.source != "backbone" or b.source != "backbone":
        return None
    if getattr(w, "lowrank", None) is not None:  # its rows are not the backbone's: own session
        return None
    if w.add or b.add or len(w.shape) != 2 or w.scale != b.scale or \
            any(axis != 0 for axis, _ in scale_pairs(w.scale)) or len(scale_pairs(w.scale)) > 1:
        return None
    if [t for t in w.take if t[0] != 0] or [t[1] for t in w.take] != [t[1] for t in b.take]:
        return None
    backbone = rt._files._backbone
    full = backbone[w.tensor].shape[0]
    mode = read_safetensors(read_verified(rt.bundle_dir, entry.weights),
                            entry.weights.file)[0] if entry.weights is not None else {}
    keep = _indices(mode[w.take[0][1]], full) if w.take else np.arange(full)
    rest = [(o, i, out[0], a) for o, i, out, a, _ in nodes[1:]]
    # each Gemm output whose rows are scaled by 1/t -> that scale (the gates' units)
    rscale = {}
    for op, ins, out, _, _ in nodes:
        step = steps.get(ins[1]) if op == "Gemm" and len(ins) > 1 else None
        rows = [v for axis, v in scale_pairs(step.scale if step else None) if axis == 0]
        if rows:
            rscale[out[0]] = np.asarray(mode[rows[0]], np.float32)
    return w.tensor, b.tensor, keep, rest, outs[0], outputs[0], opsets, rscale


def build_plan(rt, names: tuple) -> SharedPlan:
    found, alone, first = {}, [], None
    for name in names:
        rt._sessions.get(name) or rt._load(name)  # the mode's own session (rows near a gate)
        info = _first_layer(rt, name)
        weights = rt._files.initializers(rt._served(name)) if info is not None else None
        if info is not None and transposed_rest(info[3], weights, "") is None:
            info = None
        if info is None or (first is not None and info[:2] != first[:2]):
            alone.append(name)
        else:
            first = first or info
            found[name] = (*info, weights)
    if len(found) < 2:  # nothing to share
        return SharedPlan(rt, None, None, {}, list(names), [])
    w_name, b_name, opsets = first[0], first[1], first[6]
    union = np.unique(np.concatenate([f[2] for f in found.values()]))
    backbone = rt._files._backbone
    weight = np.ascontiguousarray(backbone[w_name][union], dtype=np.float32)
    bias = np.ascontiguousarray(backbone[b_name][union], dtype=np.float32)
    plans = {name: (keep, union, rest, first_out, output, rscale, weights)
             for name, (_, _, keep, rest, first_out, output, _, rscale, weights)
             in found.items()}
    return SharedPlan(rt, weight, bias, plans, alone, opsets)


def plan_for(rt, names: tuple) -> SharedPlan:
    """The cached plan of ``names`` on ``rt`` (built on first use; the last few are kept)."""
    cache = rt.__dict__.setdefault("_shared_plans", {})
    plan = cache.get(names)
    if plan is None:
        with _lock:
            plan = cache.get(names) or build_plan(rt, names)
            cache[names] = plan
            while len(cache) > _PLANS_KEPT:
                cache.pop(next(iter(cache)))
    return plan

