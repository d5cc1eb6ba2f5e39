"""``run_mixed`` as one stacked graph: every mode's rows in one batched ``MatMul`` per layer.

Where every mode's fp32 graph has the same operators (:mod:`stacked`), the rows are gathered
into ``[M, R, features]`` by an index ``[M, R]`` (``R``: the most rows of one mode in the
batch; a mode's padding rows repeat one of the batch's rows and are dropped), each layer runs
once for all modes on the stacked padded weights ``[M, k_in, k_out]``, and the logits
``[M * R, classes]`` are put back in row order by one ``Gather``: ~5 operators per layer for
the batch (``W @ a^T`` and its transposes, the bias, the gate) instead of ~2 per layer and mode.
Rows near a gate threshold (output ``near``) are rerun by their mode's own session. The padding
rows cost compute: a batch is stacked only while the padded rows are at most
:data:`MAX_PADDING` times its rows, else (and for ``"dense"`` rows, int8, graphs that do not
stack) ``run_mixed`` uses the branch graph (:mod:`mixed_graph`) or groups rows per mode.

Used only with ``run_mixed(..., stacked=True)``: on onnxruntime's CPU provider it measured
slower than the branch graph, whose ``Gemm``s are fused with their bias and gate on weights
prepacked at load (docs/runtime.md, "Stacked graphs").
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from taugate.runtime.mixed_graph import MAX_BYTES, MAX_MODES, _graph
from taugate.runtime.onnx_build import model_bytes
from taugate.runtime.providers import create_session, needs_run_lock
from taugate.runtime.shared_layer import mode_tensors, row_scales
from taugate.runtime.stacked import near_nodes, stack_nodes, stacked_bytes

log = logging.getLogger("taugate.runtime")

MAX_PADDING = 1.0  # padded rows allowed per row of the batch (docs/measured/mixed-w1024.json)
_lock = threading.Lock()


class StackedMixed:
    """The stacked graph of every mode of a runtime and its session; ``nbytes``: the padded
    stacked weights it was built from (onnxruntime holds its own copy), ``runs``: batches it
    answered."""

    def __init__(self, rt, names: list, nodes, inits, outputs, opsets):
        self.names = names
        self.index = {name: k for k, name in enumerate(names)}
        self.nbytes = stacked_bytes(inits)
        self.runs = 0
        external = {k: v for k, v in inits.items() if v.dtype == np.float32 and v.ndim >= 2
                    and v.flags.c_contiguous}
        data = model_bytes(nodes, {"x": rt.manifest.input.features}, outputs,
                           {k: v for k, v in inits.items() if k not in external}, opsets,
                           int_inputs=[("idx", 2), "inv"], external=external)
        self.session, _ = create_session(data, rt._plan, rt._config, "run_mixed (stacked)",
                                         external)
        self._lock = threading.Lock() if needs_run_lock(self.session.get_providers()) else None
        self.checked = len(outputs) > 1

    def serves(self, present: list, counts: np.ndarray, n: int) -> bool:
        """Whether a batch of the modes ``present`` with ``counts`` rows each runs stacked:
        every mode in this graph, and at most ``MAX_PADDING`` padded rows per row."""
        return all(name in self.index for name in present) and \
            len(self.names) * int(counts.max()) - n <= MAX_PADDING * n

    def run(self, rt, batch: np.ndarray, present: list, bounds: list, order: np.ndarray):
        """Logits [N, classes] in row order (``present``, ``bounds``, ``order`` as for
        :meth:`mixed_graph.MixedGraph.run`)."""
        from taugate.runtime.mixed import run_session

        n = batch.shape[0]
        starts = [0, *bounds[:-1]]
        r = max(e - s for s, e in zip(starts, bounds))
        idx = np.zeros((len(self.names), r), np.int64)  # padding rows read row 0: dropped
        inv = np.empty(n, np.int64)
        ks = []
        for name, s, e in zip(present, starts, bounds):
            k = self.index[name]
            idx[k, :e - s] = order[s:e]
            inv[order[s:e]] = np.arange(k * r, k * r + e - s)
            ks.append(k)
        feed = {"x": batch.reshape(n, -1), "idx": idx, "inv": inv}
        if self._lock is None:
            results = self.session.run(None, feed)
        else:
            with self._lock:
                results = self.session.run(None, feed)
        out = results[0]
        self.runs += 1
        if self.checked:
            near = results[1].reshape(len(self.names), r) > 0
            for name, k, s, e in zip(present, ks, starts, bounds):
                rows = idx[k, :e - s][near[k, :e - s]]
                if len(rows):
                    if not out.flags.writeable:
                        out = out.copy()
                    out[rows] = run_session(rt, name, np.ascontiguousarray(batch[rows]))
        return out


def _build(rt) -> StackedMixed | None:
    names = rt.modes
    if rt.precision != "fp32" or rt.manifest.backbone is None or \
            not 2 <= len(names) <= MAX_MODES or \
            (rt._max_sessions is not None and rt._max_sessions < len(names)):
        return None
    parts, scales = [], []
    for name in names:
        part = _graph(rt, name)
        if part is None or (parts and part[1:4] != parts[0][1:4]):
            return None
        entry = rt._served(name)
        parts.append(part)
        scales.append(row_scales(entry, mode_tensors(rt, entry), part[0]))
    features = rt.manifest.input.features
    first, output = parts[0][1], parts[0][2]
    built = stack_nodes([p[0] for p in parts], [p[4] for p in parts], scales, first,
                        [features] * len(parts), transposed=False)
    if built is None:
        return None
    rest, inits, gates = built
    classes = rt._classes
    nodes = [("Gather", ["x", "idx"], "s/" + first, {"axis": 0}), *rest,
             ("Reshape", ["s/" + output, "flat_shape"], "flat", {}),
             ("Gather", ["flat", "inv"], "logits", {"axis": 0})]
    inits["flat_shape"] = np.array([-1, classes], np.int64)
    outputs = ["logits"]
    if near_nodes(gates, False, nodes, inits):
        outputs.append("near")
    if stacked_bytes(inits) > MAX_BYTES:
        return None
    return StackedMixed(rt, names, nodes, inits, outputs, parts[0][3])


def stacked_mixed(rt) -> StackedMixed | None:
    """The runtime's stacked graph of all its modes (built on first use), or None where the
    bundle does not allow one (see the module docstring)."""
    manifest = rt._manifest
    cached = rt.__dict__.get("_stacked_mixed")
    if cached is not None and cached[0] is manifest:
        return cached[1]
    with _lock:
        cached = rt.__dict__.get("_stacked_mixed")
        if cached is not None and cached[0] is manifest:
            return cached[1]
        try:
            graph = _build(rt)
        except Exception as exc:  # the branch graph serves every batch just the same
            log.warning("run_mixed: no stacked graph for this bundle (%s)", exc)
            graph = None
        rt.__dict__["_stacked_mixed"] = (manifest, graph)
        return graph
