"""Fit a bundle's router from its modes' calibration splits, and build its ONNX graph.

The router (docs/bundle-format.md, "The router") answers two questions about a row from the
input alone: which mode it belongs to, and whether it belongs to any. Both share one linear
projection of the flat input onto the known modes' principal components (fitted on every
mode's calibration rows together):

* ``mode_scores``: a one-hidden-layer MLP over the whitened components names the mode;
* ``distance``: the squared Mahalanobis distance in those components (more of them than the
  classifier reads), divided by its mean on known rows; a row whose distance exceeds the
  threshold (a percentile of held-out known rows) is "unknown".

Only allowlisted operators (Gemm, Relu, Mul, MatMul), so the graph passes
taugate/bundle/graph_check.py like every other bundle file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from taugate.bundle.schema import RouterSpec


@dataclass
class RouterConfig:
    """How a router is fitted."""

    components: int = 24  # principal components the mode classifier reads
    distance_components: int = 48  # principal components of the unknown-input distance
    hidden: int = 32  # units of the MLP's hidden layer
    epochs: int = 300  # full-batch Adam steps
    lr: float = 0.01
    percentile: float = 95.0  # of held-out known rows: the unknown threshold
    holdout: float = 0.2  # share of calibration rows kept out of fitting, to set the threshold
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("components", "distance_components", "hidden", "epochs"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"router {name}: expected an integer >= 1, got {v!r}")
        if not 0 < self.percentile <= 100:
            raise ValueError(f"router percentile: expected a number in (0, 100], got "
                             f"{self.percentile!r}")
        if not 0 < self.holdout < 1:
            raise ValueError(f"router holdout: expected a share in (0, 1), got {self.holdout!r}")


@dataclass
class FittedRouter:
    """A fitted router: its graph and the manifest fields that go with it."""

    proto: onnx.ModelProto
    modes: list
    threshold: float
    percentile: float
    facts: dict = field(default_factory=dict)
    holdout_distance: np.ndarray | None = None  # distances of held-out known rows (curves)

    def manifest_entry(self, file: str, sha256: str) -> dict:
        return {"file": file, "sha256": sha256, "modes": list(self.modes),
                "threshold": self.threshold, "percentile": self.percentile,
                "facts": dict(self.facts)}


def _split(n: int, share: float, rng) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(n)
    cut = max(1, int(round(n * share)))
    return order[cut:], order[:cut]


def _pca(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """mean [F], components [F, k] and their variances [k] (float64)."""
    mu = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mu, full_matrices=False)
    var = s[:k] ** 2 / max(1, len(x) - 1)
    keep = var > 1e-12 * max(var.max(), 1e-30)  # a constant direction would divide by 0
    return mu, vt[:k][keep].T, var[keep]


def _fit_mlp(z: np.ndarray, y: np.ndarray, classes: int, cfg: RouterConfig):
    torch.manual_seed(cfg.seed)
    net = torch.nn.Sequential(torch.nn.Linear(z.shape[1], cfg.hidden), torch.nn.ReLU(),
                              torch.nn.Linear(cfg.hidden, classes))
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    zt, yt = torch.from_numpy(z.astype(np.float32)), torch.from_numpy(y)
    for _ in range(cfg.epochs):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(zt), yt).backward()
        opt.step()
    return [p.detach().numpy().astype(np.float32) for p in net.parameters()]


def fit_router(data: dict, cfg: RouterConfig | None = None) -> FittedRouter:
    """Fit a router on ``data`` (mode name -> calibration inputs, array [N, ...]), in the
    bundle's mode order."""
    cfg = cfg or RouterConfig()
    modes = list(data)
    if len(modes) < 1:
        raise ValueError("router: expected calibration rows of at least one mode, got none")
    xs = [np.asarray(data[m], np.float64).reshape(len(data[m]), -1) for m in modes]
    small = [m for m, x in zip(modes, xs) if len(x) < 4]
    if small:
        raise ValueError(f"router: modes {small} have fewer than 4 calibration rows")
    x = np.concatenate(xs)
    y = np.concatenate([np.full(len(v), i, np.int64) for i, v in enumerate(xs)])
    fit, held = _split(len(x), cfg.holdout, np.random.default_rng(cfg.seed))
    mu, comps, var = _pca(x[fit], min(cfg.distance_components, x.shape[1], len(fit) - 1))
    white = ((x - mu) @ comps) / np.sqrt(var)
    k = min(cfg.components, white.shape[1])
    w1, b1, w2, b2 = _fit_mlp(white[fit, :k], y[fit], len(modes), cfg)
    scale = 1.0 / max(float((white[fit] ** 2).sum(axis=1).mean()), 1e-12)
    proto = router_graph(mu, comps, var, scale, (w1, b1, w2, b2))
    held_distance = scale * (white[held] ** 2).sum(axis=1)
    threshold = float(np.percentile(held_distance, cfg.percentile))
    logits = np.maximum(white[held, :k] @ w1.T + b1, 0) @ w2.T + b2
    accuracy = float((logits.argmax(axis=1) == y[held]).mean())
    facts = {"components": int(k), "distance_components": int(comps.shape[1]),
             "hidden": cfg.hidden, "rows": int(len(x)), "holdout_rows": int(len(held)),
             "holdout_accuracy": round(accuracy, 4)}
    return FittedRouter(proto, modes, threshold, float(cfg.percentile), facts, held_distance)


def router_graph(mu, comps, var, scale: float, mlp) -> onnx.ModelProto:
    """The router's ONNX graph: ``features`` [batch, F] -> ``mode_scores`` [batch, K] and
    ``distance`` [batch, 1] (names: :class:`RouterSpec`). Six nodes: onnxruntime's cost per
    node, not the arithmetic, dominates a graph this small."""
    w1, b1, w2, b2 = mlp
    f, d = comps.shape
    proj = comps / np.sqrt(var)  # [F, d]: centring and whitening folded into one Gemm
    w1_full = np.zeros((d, w1.shape[0]), np.float32)
    w1_full[: w1.shape[1]] = w1.T  # the MLP reads the first components only
    inits = {"proj": proj, "proj_b": -(mu @ proj), "w1": w1_full, "b1": b1, "w2": w2.T,
             "b2": b2, "sq_w": np.full((d, 1), scale)}
    n = helper.make_node
    nodes = [
        n("Gemm", [RouterSpec.INPUT, "proj", "proj_b"], ["white"]),
        n("Gemm", ["white", "w1", "b1"], ["h_lin"]), n("Relu", ["h_lin"], ["h"]),
        n("Gemm", ["h", "w2", "b2"], [RouterSpec.SCORES]),
        # distance: squared Mahalanobis distance in the known modes' principal components,
        # divided by its mean on known rows
        n("Mul", ["white", "white"], ["white2"]),
        n("MatMul", ["white2", "sq_w"], [RouterSpec.DISTANCE]),
    ]
    graph = helper.make_graph(
        nodes, "taugate_router",
        [helper.make_tensor_value_info(RouterSpec.INPUT, TensorProto.FLOAT, ["batch", f])],
        [helper.make_tensor_value_info(RouterSpec.SCORES, TensorProto.FLOAT,
                                       ["batch", w2.shape[0]]),
         helper.make_tensor_value_info(RouterSpec.DISTANCE, TensorProto.FLOAT, ["batch", 1])],
        [numpy_helper.from_array(np.ascontiguousarray(v, np.float32), k)
         for k, v in inits.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="taugate")
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    return proto
