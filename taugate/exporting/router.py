"""Fit a bundle's router from its modes' calibration splits (its graphs: router_graph.py).

The router (docs/bundle-format.md, "The router") answers two questions about a row from the
input alone: which mode it belongs to, and whether it belongs to any. Both read one narrow
linear projection of the flat input (``components`` columns, 16 by default): reading the input
once through it is most of a router's work (onnxruntime's CPU Gemm computes 16 columns at a
time, so fewer would cost the same).

* the mode: either a one-hidden-layer MLP over the projection (the projection learned with it,
  minibatch Adam, cross-entropy on the true mode, from the inputs' principal components), or,
  cheaper, mode scores linear in the input (and its squares) as extra columns of the projection
  (``hidden=0``; its components are learned the same way). ``hidden=None`` (the default)
  fits both and keeps the linear one unless the MLP routes clearly more held-out rows right;
* ``distance``: the squared Mahalanobis distance of the components from the known rows' mean
  (whitened on the known rows' covariance), divided by its mean on known rows; a row whose
  distance exceeds the threshold (a percentile of held-out known rows) is "unknown".

The whitening is folded into the projection, so the graph is a handful of allowlisted operators
and passes taugate/bundle/graph_check.py like every other bundle file.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import onnx
import torch

from taugate.exporting.router_graph import linear_router_graph, router_graph

MLP_HIDDEN = 64  # the MLP's hidden units when ``hidden`` is None
LINEAR_SLACK = 0.005  # hidden=None keeps the linear router unless the MLP routes this much more


@dataclass
class RouterConfig:
    """How a router is fitted."""

    components: int = 16  # columns of the learned projection of the input (its main cost)
    hidden: int | None = None  # MLP hidden units; 0: linear scores; None: the better (above)
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
            least = 0 if name == "hidden" else 1
            if (v is None and name == "hidden") or (
                    isinstance(v, int) and not isinstance(v, bool) and v >= least):
                continue
            extra = " (0: linear scores) or None (the better of both)" if least == 0 else ""
            raise ValueError(f"router {name}: expected an integer >= {least}{extra}, got {v!r}")
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


def _adam(net, x: np.ndarray, y: np.ndarray, cfg: RouterConfig) -> None:
    """Minibatch Adam on cross-entropy of ``net(x)`` against the true modes ``y``."""
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


def _train(x: np.ndarray, y: np.ndarray, classes: int, cfg: RouterConfig, hidden: int) -> list:
    """Projection and MLP trained together: proj [F, k], proj_b, then the MLP's w1 [h, k],
    b1, w2 [K, h], b2 (torch's layout)."""
    k = min(cfg.components, x.shape[1])
    proj, proj_b = _pca_start(x, k)
    torch.manual_seed(cfg.seed)
    lin = torch.nn.Linear(x.shape[1], k)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(proj.T.astype(np.float32)))
        lin.bias.copy_(torch.from_numpy(proj_b.astype(np.float32)))
    net = torch.nn.Sequential(lin, torch.nn.Linear(k, hidden), torch.nn.ReLU(),
                              torch.nn.Linear(hidden, classes))
    _adam(net, x, y, cfg)
    proj, proj_b, w1, b1, w2, b2 = (p.detach().numpy().astype(np.float64)
                                    for p in net.parameters())
    return [proj.T, proj_b, w1, b1, w2, b2]


def _train_linear(x: np.ndarray, y: np.ndarray, classes: int, cfg: RouterConfig):
    """Mode scores linear in ``x``: W [F, K], b [K] (trained on standardized inputs, folded)."""
    mu, sd = x.mean(axis=0), x.std(axis=0) + 1e-6
    torch.manual_seed(cfg.seed)
    lin = torch.nn.Linear(x.shape[1], classes)
    _adam(lin, (x - mu) / sd, y, cfg)
    w = lin.weight.detach().numpy().astype(np.float64).T / sd[:, None]
    return w, lin.bias.detach().numpy().astype(np.float64) - mu @ w


def _whitening(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [k] and L [k, k] with ``(f - mean) @ L`` of identity covariance on ``f``."""
    m = f.mean(axis=0)
    cov = np.atleast_2d(np.cov(f - m, rowvar=False))
    cov += np.eye(len(cov)) * 1e-6 * max(float(np.trace(cov)) / len(cov), 1e-12)
    return m, np.linalg.cholesky(np.linalg.inv(cov))


def _scale(z: np.ndarray) -> float:
    return 1.0 / max(float((z ** 2).sum(axis=1).mean()), 1e-12)


def _fit_mlp(x, y, fit, held, classes: int, cfg: RouterConfig, squares: bool, hidden: int):
    proj, proj_b, w1, b1, w2, b2 = _train(x[fit], y[fit], classes, cfg, hidden)
    m, white = _whitening(x[fit] @ proj + proj_b)
    # fold the whitening into the projection; the MLP reads the unwhitened projection back
    pz, pz_b = proj @ white, (proj_b - m) @ white
    w1z, b1z = np.linalg.inv(white) @ w1.T, m @ w1.T + b1
    z = x @ pz + pz_b
    scale = _scale(z[fit])
    logits = np.maximum(z[held] @ w1z + b1z, 0) @ w2.T + b2
    proto = router_graph((pz, pz_b), (w1z, b1z, w2.T, b2), scale, squares)
    facts = {"components": int(pz.shape[1]), "hidden": hidden,
             "multiply_adds_per_row": int(pz.size + w1z.size + w2.size + pz.shape[1])}
    return proto, scale * (z[held] ** 2).sum(axis=1), logits, facts


def _fit_linear(x, y, fit, held, classes: int, cfg: RouterConfig, squares: bool):
    k = max(1, min(cfg.components - classes, x.shape[1]))
    # components learned as the MLP router's are (its MLP then dropped): they tell unseen modes
    # apart better than principal ones (inverted digits: 100% flagged against 78%)
    proj, proj_b, *_ = _train(x[fit], y[fit], classes, replace(cfg, components=k), MLP_HIDDEN)
    m, white = _whitening(x[fit] @ proj + proj_b)
    pz, pz_b = proj @ white, (proj_b - m) @ white
    z = x @ pz + pz_b
    scale = _scale(z[fit])
    ws, bs = _train_linear(x[fit], y[fit], classes, cfg)
    proto = linear_router_graph((np.concatenate([pz, ws], axis=1),
                                 np.concatenate([pz_b, bs])), k, scale, squares)
    facts = {"components": k, "hidden": 0,
             "multiply_adds_per_row": int(pz.size + ws.size + k)}
    return proto, scale * (z[held] ** 2).sum(axis=1), x[held] @ ws + bs, facts


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
    args = (x, y, fit, held, len(modes), cfg, squares)
    fits = []
    if cfg.hidden in (None, 0):
        fits.append(_fit_linear(*args))
    if cfg.hidden != 0:
        fits.append(_fit_mlp(*args, MLP_HIDDEN if cfg.hidden is None else cfg.hidden))
    right = [float((f[2].argmax(axis=1) == y[held]).mean()) for f in fits]
    # the linear router is first and costs less: kept unless the MLP routes clearly better
    pick = 1 if len(fits) == 2 and right[1] > right[0] + LINEAR_SLACK else 0
    proto, held_distance, _, facts = fits[pick]
    threshold = float(np.percentile(held_distance, cfg.percentile))
    facts.update({"squares": squares, "rows": int(len(x)), "holdout_rows": int(len(held)),
                  "holdout_accuracy": round(right[pick], 4)})
    if len(fits) == 2:
        facts["holdout_accuracy_linear_mlp"] = [round(r, 4) for r in right]
    return FittedRouter(proto, modes, threshold, float(cfg.percentile), facts, held_distance)
