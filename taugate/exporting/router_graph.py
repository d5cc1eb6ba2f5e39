"""The router's ONNX graphs (docs/bundle-format.md, "The router"): ``features`` [batch, F] ->
``best_mode`` int64 [batch] and ``distance`` [batch, 1] (names: :class:`RouterSpec`).

Fixed per-call costs dominate a router this small (each node and each output costs about a
microsecond in onnxruntime, and a copy of the input as much as a ``Gemm`` over it), so the mode
is chosen inside the graph (``ArgMax``, the first highest score on ties, as numpy's argmax) and
the squares of the input enter through a second ``Gemm`` accumulated onto the first rather than
a ``Concat`` copy. Two shapes:

* :func:`router_graph`: a one-hidden-layer MLP over the whitened projection scores the modes;
* :func:`linear_router_graph`: the mode scores are extra columns of the projection itself
  (linear in the input and its squares), so no MLP runs: onnxruntime's CPU ``Gemm`` computes
  16 columns at a time, so up to 16 components and scores together cost one pass.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from taugate.bundle.schema import RouterSpec


def _project(proj: np.ndarray, proj_b: np.ndarray, squares: bool, out: str):
    """Nodes and initializers of ``out = [x, x*x] @ proj + proj_b`` (or ``x @ proj + proj_b``)."""
    f = proj.shape[0] // 2 if squares else proj.shape[0]
    inits = {"proj": proj[:f], "proj_b": proj_b}
    n = helper.make_node
    if not squares:
        return [n("Gemm", [RouterSpec.INPUT, "proj", "proj_b"], [out])], inits, f
    inits["proj_sq"] = proj[f:]  # a shift in spread, not in mean, shows in the squares
    return [n("Mul", [RouterSpec.INPUT, RouterSpec.INPUT], ["squares"]),
            n("Gemm", [RouterSpec.INPUT, "proj", "proj_b"], ["projected_x"]),
            n("Gemm", ["squares", "proj_sq", "projected_x"], [out])], inits, f


def _model(nodes: list, inits: dict, features: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "taugate_router",
        [helper.make_tensor_value_info(RouterSpec.INPUT, TensorProto.FLOAT,
                                       ["batch", features])],
        [helper.make_tensor_value_info(RouterSpec.BEST, TensorProto.INT64, ["batch"]),
         helper.make_tensor_value_info(RouterSpec.DISTANCE, TensorProto.FLOAT, ["batch", 1])],
        [numpy_helper.from_array(np.ascontiguousarray(v, v.dtype if v.dtype == np.int64
                                                      else np.float32), k)
         for k, v in inits.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="taugate")
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    return proto


def _choose_and_measure(scores: str, white: str, sq_w: np.ndarray) -> tuple[list, dict]:
    """``best_mode`` from ``scores``; ``distance``: the squared Mahalanobis distance of the
    whitened projection from the known rows' mean, divided by its mean on known rows (``sq_w``:
    that scale per column, 0 for columns that are not components)."""
    n = helper.make_node
    return [n("ArgMax", [scores], [RouterSpec.BEST], axis=1, keepdims=0, select_last_index=0),
            n("Mul", [white, white], ["white2"]),
            n("MatMul", ["white2", "sq_w"], [RouterSpec.DISTANCE])], {"sq_w": sq_w}


def router_graph(projection, mlp, scale: float, squares: bool = False) -> onnx.ModelProto:
    """``projection``: (W [F, k], b [k]) to the whitened components, or W [2F, k] over the
    inputs and their squares (``squares``); ``mlp``: (w1 [k, h], b1, w2 [h, K], b2) over them."""
    proj, proj_b = projection
    w1, b1, w2, b2 = mlp
    nodes, inits, f = _project(proj, proj_b, squares, "white")
    n = helper.make_node
    nodes += [n("Gemm", ["white", "w1", "b1"], ["h_lin"]), n("Relu", ["h_lin"], ["h"]),
              n("Gemm", ["h", "w2", "b2"], ["scores"])]
    inits.update({"w1": w1, "b1": b1, "w2": w2, "b2": b2})
    tail, more = _choose_and_measure("scores", "white", np.full((proj.shape[1], 1), scale))
    return _model(nodes + tail, {**inits, **more}, f)


def linear_router_graph(projection, components: int, scale: float, squares: bool = False
                        ) -> onnx.ModelProto:
    """``projection``: (W [F or 2F, k + K], b [k + K]): its first ``components`` (k) columns are
    the whitened components, the other K the mode scores."""
    proj, proj_b = projection
    k, total = components, proj.shape[1]
    nodes, inits, f = _project(proj, proj_b, squares, "projected")
    nodes.append(helper.make_node("Slice", ["projected", "score_from", "score_to", "score_axis"],
                                  ["scores"]))
    inits.update({"score_from": np.array([k], np.int64), "score_to": np.array([total], np.int64),
                  "score_axis": np.array([1], np.int64)})
    sq_w = np.zeros((total, 1))
    sq_w[:k] = scale
    tail, more = _choose_and_measure("scores", "projected", sq_w)
    return _model(nodes + tail, {**inits, **more}, f)
