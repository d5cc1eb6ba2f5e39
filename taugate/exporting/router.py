"""Fit a bundle's router from its modes' calibration splits, and build its ONNX graph.

The router (docs/bundle-format.md, "The router") answers two questions about a row from the
input alone: which mode it belongs to, and whether it belongs to any. Both read one narrow
linear projection of the flat input (``components`` columns, 16 by default): reading the input
once through it is most of a small router's cost (onnxruntime's CPU Gemm computes 16 columns at
a time, so fewer would cost the same), so the projection is learned for the task instead of
taken from the inputs' principal components (which start it).

* ``mode_scores``: a one-hidden-layer MLP over the projection names the mode; projection and
  MLP are trained together (minibatch Adam, cross-entropy on the true mode);
* ``distance``: the squared Mahalanobis distance of the projection from the known rows' mean
  (whitened on the known rows' covariance), divided by its mean on known rows; a row whose
  distance exceeds the threshold (a percentile of held-out known rows) is "unknown".

The whitening is folded into the projection, so the graph is six nodes of allowlisted operators
(Gemm, Relu, Mul, MatMul) and passes taugate/bundle/graph_check.py like every other bundle file.
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

    components: int = 16  # columns of the learned projection of the input (its main cost)
    hidden: int = 64  # units of the MLP's hidden layer
    steps: int = 600  # minibatch Adam steps (however many rows there are)
    batch: int = 512
    squares: bool | None = None  # project the squared inputs too (None: for <= 256 features)
    lr: float = 0.003
    percentile: float = 99.0  # of held-out known rows: the unknown threshold
    holdout: float = 0.2  # share of calibration rows kept out of fitting, to set the threshold
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("components", "hidden", "steps", "batch"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"router {name}: expected an integer >= 1, got {v!r}")
        if not 0 < self.percentile <= 100:
            raise ValueError(f"router percentile: expected a number in (0, 100], got "
                             f"{self.percentile!r}")
        if not 0 < self.holdout < 1:
            raise ValueError(f"router holdout: expected a share in (0, 1), got {self.holdout!r}")
        if not self.lr > 0:
            raise ValueError(f"router lr: expected a number > 0, got {self.lr!r}")


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


def _pca_start(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Whitened principal components [F, k] and bias [k]: where the projection starts."""
    mu = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mu, full_matrices=False)
    sd = np.maximum(s[:k] / np.sqrt(max(1, len(x) - 1)), 1e-6 * max(float(s[0]), 1e-12))
    proj = vt[:k].T / sd
    return proj, -(mu @ proj)


def _train(x: np.ndarray, y: np.ndarray, classes: int, cfg: RouterConfig) -> list:
    """Projection and MLP trained together: proj [F, k], proj_b, then the MLP's w1 [h, k],
    b1, w2 [K, h], b2 (torch's layout)."""
    k = min(cfg.components, x.shape[1])
    proj, proj_b = _pca_start(x, k)
    torch.manual_seed(cfg.seed)
    lin = torch.nn.Linear(x.shape[1], k)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(proj.T.astype(np.float32)))
        lin.bias.copy_(torch.from_numpy(proj_b.astype(np.float32)))
    net = torch.nn.Sequential(lin, torch.nn.Linear(k, cfg.hidden), torch.nn.ReLU(),
                              torch.nn.Linear(cfg.hidden, classes))
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    xt, yt = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)
    order = torch.Generator().manual_seed(cfg.seed)
    step = 0
    while step < cfg.steps:
        for ix in torch.randperm(len(xt), generator=order).split(cfg.batch):
            if step == cfg.steps:
                break
            step += 1
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[ix]), yt[ix]).backward()
            opt.step()
    proj, proj_b, w1, b1, w2, b2 = (p.detach().numpy().astype(np.float64)
                                    for p in net.parameters())
    return [proj.T, proj_b, w1, b1, w2, b2]


def _whitening(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [k] and L [k, k] with ``(f - mean) @ L`` of identity covariance on ``f``."""
    m = f.mean(axis=0)
    cov = np.atleast_2d(np.cov(f - m, rowvar=False))
    cov += np.eye(len(cov)) * 1e-6 * max(float(np.trace(cov)) / len(cov), 1e-12)
    return m, np.linalg.cholesky(np.linalg.inv(cov))


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
    features = x.shape[1]
    squares = features <= 256 if cfg.squares is None else bool(cfg.squares)
    if squares:  # a shift in spread, not in mean, shows in the squares
        x = np.concatenate([x, x * x], axis=1)
    y = np.concatenate([np.full(len(v), i, np.int64) for i, v in enumerate(xs)])
    fit, held = _split(len(x), cfg.holdout, np.random.default_rng(cfg.seed))
    proj, proj_b, w1, b1, w2, b2 = _train(x[fit], y[fit], len(modes), cfg)
    m, white = _whitening(x[fit] @ proj + proj_b)
    # fold the whitening into the projection; the MLP reads the unwhitened projection back
    pz, pz_b = proj @ white, (proj_b - m) @ white
    unwhite = np.linalg.inv(white)
    w1z, b1z = unwhite @ w1.T, m @ w1.T + b1
    z = x @ pz + pz_b
    scale = 1.0 / max(float((z[fit] ** 2).sum(axis=1).mean()), 1e-12)
    proto = router_graph((pz, pz_b), (w1z, b1z, w2.T, b2), scale, squares)
    held_distance = scale * (z[held] ** 2).sum(axis=1)
    threshold = float(np.percentile(held_distance, cfg.percentile))
    logits = np.maximum(z[held] @ w1z + b1z, 0) @ w2.T + b2
    accuracy = float((logits.argmax(axis=1) == y[held]).mean())
    facts = {"components": int(pz.shape[1]), "hidden": cfg.hidden, "squares": squares,
             "rows": int(len(x)),
             "holdout_rows": int(len(held)), "holdout_accuracy": round(accuracy, 4),
             "multiply_adds_per_row": int(pz.size + w1z.size + w2.size + pz.shape[1])}
    return FittedRouter(proto, modes, threshold, float(cfg.percentile), facts, held_distance)


def router_graph(projection, mlp, scale: float, squares: bool = False) -> onnx.ModelProto:
    """The router's ONNX graph: ``features`` [batch, F] -> ``best_mode`` int64 [batch] (the index
    of the highest mode score, ``ArgMax``) and ``distance`` [batch, 1] (names: :class:`RouterSpec`).
    ``projection``: (W [F, k], b [k]) to the whitened components, or W [2F, k] over the inputs
    and their squares (``squares``); ``mlp``: (w1 [k, h], b1, w2 [h, K], b2) over them.

    Fixed per-call costs dominate a router this small (each node and each output costs ~1 us in
    onnxruntime), so the mode is chosen inside the graph and the squares enter through a second
    ``Gemm`` (accumulated onto the first) rather than a ``Concat`` copy of the input."""
    proj, proj_b = projection
    w1, b1, w2, b2 = mlp
    d = proj.shape[1]
    f = proj.shape[0] // 2 if squares else proj.shape[0]
    inits = {"proj": proj[:f], "proj_b": proj_b, "w1": w1, "b1": b1, "w2": w2, "b2": b2,
             "sq_w": np.full((d, 1), scale)}
    n = helper.make_node
    nodes = [n("Gemm", [RouterSpec.INPUT, "proj", "proj_b"], ["white"])]
    if squares:  # a shift in spread, not in mean, shows in the squares
        inits["proj_sq"] = proj[f:]
        nodes = [n("Mul", [RouterSpec.INPUT, RouterSpec.INPUT], ["squares"]),
                 n("Gemm", [RouterSpec.INPUT, "proj", "proj_b"], ["white_x"]),
                 n("Gemm", ["squares", "proj_sq", "white_x"], ["white"])]
    nodes += [
        n("Gemm", ["white", "w1", "b1"], ["h_lin"]), n("Relu", ["h_lin"], ["h"]),
        n("Gemm", ["h", "w2", "b2"], ["scores"]),
        # the first highest score on ties, as numpy's argmax
        n("ArgMax", ["scores"], [RouterSpec.BEST], axis=1, keepdims=0, select_last_index=0),
        # distance: squared Mahalanobis distance of the projection from the known rows' mean,
        # divided by its mean on known rows
        n("Mul", ["white", "white"], ["white2"]),
        n("MatMul", ["white2", "sq_w"], [RouterSpec.DISTANCE]),
    ]
    graph = helper.make_graph(
        nodes, "taugate_router",
        [helper.make_tensor_value_info(RouterSpec.INPUT, TensorProto.FLOAT, ["batch", f])],
        [helper.make_tensor_value_info(RouterSpec.BEST, TensorProto.INT64, ["batch"]),
         helper.make_tensor_value_info(RouterSpec.DISTANCE, TensorProto.FLOAT, ["batch", 1])],
        [numpy_helper.from_array(np.ascontiguousarray(v, np.float32), k)
         for k, v in inits.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="taugate")
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    return proto
