"""``run_mixed`` in one onnxruntime call: every mode's graph side by side in one graph.

A mixed batch run as one ``run`` per mode pays each call's fixed cost (the session call, the
input and output copies, Python) once per mode present. On a bundle of at most
:data:`MAX_MODES` modes whose graphs use only the plain MLP operators (``shared_layer._OPS``;
in int8 also ``DynamicQuantizeLinear`` and ``MatMulInteger``), shared-layout fp32 or int8 of
either layout, the runtime writes once (:mod:`onnx_build`) a graph holding every mode's nodes
and weights (names prefixed by the mode's index): mode k's branch starts with a ``Gather`` of
its rows of the input (``idx{k}``, int64 row numbers), and the branches' logits are
concatenated and put back in row order by a last ``Gather`` (``inv``). One ``session.run``
then answers the whole batch. Each branch is the mode's own graph with its own weights on the
same rows in the same order (in int8 its activations quantized over the same rows), so a row's
answer is what ``run`` gives on that mode's rows (the tests hold it to 1e-5).

In fp32 the graph gets the modes' materialized weights through ``add_external_initializers``
(onnxruntime copies them at load; serialized into the graph they would be held twice); an int8 mode's file holds its
weights, which the graph carries byte for byte (:mod:`file_tensors`): a second copy of the
int8 bytes, a quarter of the fp32 ones. The graph is built only when the weights total at most
:data:`MAX_BYTES`, once per runtime (absent modes get no rows), and used when at least half of
its modes are in the batch; otherwise (and when ``max_sessions`` is below the number of
modes) ``run_mixed`` groups rows per mode.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from taugate.bundle.files import read_verified
from taugate.bundle.onnx_wire import parse
from taugate.runtime.file_tensors import graph_span, tensors_without_names
from taugate.runtime.onnx_build import model_bytes
from taugate.runtime.providers import create_session, needs_run_lock
from taugate.runtime.shared_layer import _OPS, _attrs

log = logging.getLogger("taugate.runtime")

MAX_MODES = 32  # modes one fused graph may hold
MAX_BYTES = 64 << 20  # bytes of weights one fused graph may copy
_INT8_OPS = _OPS | {"DynamicQuantizeLinear", "MatMulInteger"}  # the int8 lowering's graphs
_OUTPUTS = {"DynamicQuantizeLinear": 3}  # outputs of the ops that have more than one
_lock = threading.Lock()


def _graph(rt, name: str):
    """(nodes as (op, inputs, outputs, attrs), input name, output name, opsets, weights,
    carried tensors) of a mode whose graph the fused graph can hold, else None. fp32: the
    mode's materialized weights (shared layout); int8: the file's own initializers, carried
    byte for byte (:mod:`file_tensors`)."""
    entry = rt._served(name)
    carried, weights = {}, {}
    buf = memoryview(read_verified(rt.bundle_dir, entry))
    if rt.precision == "fp32" and entry.materialize is not None:
        loaded = rt._sessions.get(name)  # its materialized weights where kept, else built here
        keep = loaded.keep if loaded is not None else None
        weights = keep if keep is not None else rt._files.initializers(entry)
        ops = _OPS
    elif rt.precision == "int8" and entry.materialize is None:
        span = graph_span(buf)
        carried = tensors_without_names(buf, span) if span is not None else None
        ops = _INT8_OPS
    else:
        return None
    if not weights and not carried:
        return None
    model = parse(buf, "ModelProto")
    graph = model.get("graph", {})
    raw = graph.get("node", ())
    if any(n.get("domain", "") not in ("", "ai.onnx") or n.get("op_type") not in ops
           or len(n.get("output", ())) != _OUTPUTS.get(n.get("op_type"), 1) for n in raw):
        return None
    inputs = [v.get("name") for v in graph.get("input", ()) if v.get("name") not in carried]
    outputs = [v.get("name") for v in graph.get("output", ())]
    if len(inputs) != 1 or not outputs:
        return None
    nodes = [(n.get("op_type"), list(n.get("input", [])), list(n["output"]), _attrs(n, buf))
             for n in raw]
    known = {inputs[0], *weights, *carried, *(o for _, _, outs, _ in nodes for o in outs)}
    if any(i and i not in known for _, ins, _, _ in nodes for i in ins):
        return None  # a constant inside the file (not materialized): not carried over here
    opsets = [(o.get("domain", ""), o.get("version", 0)) for o in model.get("opset_import", ())]
    return nodes, inputs[0], outputs[0], opsets, weights, carried


class MixedGraph:
    """The fused graph of ``names`` (see the module docstring) and its session."""

    def __init__(self, rt, names: list, parts: list):
        self.names = names
        self.index = {name: k for k, name in enumerate(names)}
        nodes, inits, outputs, carried = [], {}, [], {}
        for k, (graph_nodes, graph_in, graph_out, _, weights, tensors) in enumerate(parts):
            p = f"m{k}/"
            nodes.append(("Gather", ["x", f"idx{k}"], p + graph_in, {"axis": 0}))
            for op, ins, outs, at in graph_nodes:
                nodes.append((op, [p + i if i else i for i in ins], [p + o for o in outs], at))
                inits.update({p + i: weights[i] for i in ins if i in weights})
            carried.update({p + i: body for i, body in tensors.items()})
            outputs.append(p + graph_out)
        nodes.append(("Concat", outputs, "cat", {"axis": 0}))
        nodes.append(("Gather", ["cat", "inv"], "logits", {"axis": 0}))
        features = rt.manifest.input.features
        # the modes' materialized float32 arrays: copied by onnxruntime at load, not kept here
        external = {k: v for k, v in inits.items() if v.dtype == np.float32
                    and v.flags.c_contiguous}
        data = model_bytes(nodes, {"x": features}, ["logits"],
                           {k: v for k, v in inits.items() if k not in external},
                           parts[0][3], int_inputs=[*(f"idx{k}" for k in range(len(names))),
                                                    "inv"], external=external,
                           carried=carried)
        self.session, _ = create_session(data, rt._plan, rt._config, "run_mixed (one graph)",
                                         external)
        self._lock = threading.Lock() if needs_run_lock(self.session.get_providers()) else None
        self._empty = np.empty(0, np.int64)
        self._feed_names = [f"idx{k}" for k in range(len(names))]

    def run(self, batch: np.ndarray, present: list, bounds: list, order: np.ndarray):
        """Logits [N, classes] in row order, where ``present[j]`` (in this graph's mode order)
        owns the rows ``order[bounds[j - 1]:bounds[j]]``."""
        n = batch.shape[0]
        feed = dict.fromkeys(self._feed_names, self._empty)
        feed["x"] = batch.reshape(n, -1)
        start, names, index = 0, self._feed_names, self.index
        for name, end in zip(present, bounds):
            feed[names[index[name]]] = order[start:end]
            start = end
        inv = np.empty(n, np.int64)  # the branches' rows come out in the order of ``order``
        inv[order] = np.arange(n, dtype=np.int64)
        feed["inv"] = inv
        if self._lock is None:
            return self.session.run(None, feed)[0]
        with self._lock:
            return self.session.run(None, feed)[0]

    def serves(self, present: list) -> bool:
        """Whether this graph answers a batch of the modes ``present`` (in the order their rows
        are sorted): all of them in the graph, in its order, and at least half of its modes."""
        index = [self.index.get(name, -1) for name in present]
        return 2 * len(index) >= len(self.names) and min(index) >= 0 and \
            all(a < b for a, b in zip(index, index[1:]))


def mixed_graph(rt) -> MixedGraph | None:
    """The runtime's fused graph of all its modes (built on first use), or None when the
    bundle does not allow one (see the module docstring)."""
    manifest = rt._manifest
    cached = rt.__dict__.get("_mixed_graph")
    if cached is not None and cached[0] is manifest:
        return cached[1]
    with _lock:
        cached = rt.__dict__.get("_mixed_graph")
        if cached is not None and cached[0] is manifest:
            return cached[1]
        try:
            graph = _build(rt)
        except Exception as exc:  # the grouped path serves every batch just the same
            log.warning("run_mixed: no single graph for this bundle (%s); grouping rows per "
                        "mode", exc)
            graph = None
        rt.__dict__["_mixed_graph"] = (manifest, graph)
        return graph


def _build(rt) -> MixedGraph | None:
    names = rt.modes
    if not 2 <= len(names) <= MAX_MODES or \
            (rt.manifest.backbone is None and rt.precision == "fp32") or \
            (rt._max_sessions is not None and rt._max_sessions < len(names)):
        return None  # too many modes, or the caller bounded how many stay loaded
    parts = []
    for name in names:
        part = _graph(rt, name)
        if part is None or (parts and part[3] != parts[0][3]):
            return None
        parts.append(part)
    if sum(a.nbytes for p in parts for a in p[4].values()) + \
            sum(len(b) for p in parts for b in p[5].values()) > MAX_BYTES:
        return None
    return MixedGraph(rt, names, parts)
