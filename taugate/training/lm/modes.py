"""Per-domain TauGate modes on a TinyLlama's FFN units, with the sparse recipe.

One mode per domain, trained on that domain's training bytes with next-byte cross-entropy;
only the per-unit thresholds and gains (methods/taugate.py) and a low-rank correction of
the FFN inputs (below) learn, the foundation stays frozen. Two phases, as the sparse recipe (training/recipes.py):

1. sparse: Adam on tau and gamma, with the cost-weighted proximal L1 step on the gains after
   every step (training/sparsity.py), so the units the domain needs least shrink;
2. prune and retune, in ``prune_stages`` geometric steps towards ``target_mac_ratio``
   (dense / kept FFN MACs): each stage zeroes the least important units (:func:`ffn_importance`:
   what a unit feeds ``down``, gate x up, times its ``down`` column's norm), then retrains tau
   and gamma without L1 (cosine lr; optionally distilled from the dense foundation) with the
   zeroed units frozen at zero.

Thresholds and gains can only silence and rescale the frozen units; with two thirds of them
gone the kept ones must also read the residual stream differently. ``correction_rank`` gives
each mode a low-rank correction of every layer's ``gate`` and ``up`` (training/corrections.py,
trained in both phases), merged into the mode's compacted weights at export, so it costs no
decode MACs (docs/lm.md, "What was tried").

The result is served hard-gated (``1[z > tau]``), as export runs it: :func:`hard_gated`.
Units whose gain is zero are removed at export, so a mode keeps ``3 * dim * kept`` FFN MACs
per token per layer (training/lm/measure.py).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from taugate.training.adapters import foundation_sha256, load_adapter, save_adapter
from taugate.training.corrections import CORRECTION_SCALE, check_correction
from taugate.training.gating import clear_gates, gate_modules, set_hard
from taugate.training.lm.corpus import fingerprint
from taugate.training.lm.measure import ffn_mac_ratio, kept_units, perplexity  # noqa: F401
from taugate.training.lm.pretrain import sample_windows
from taugate.training.loop import Progress
from taugate.training.methods.taugate import TauGate, TauGateConfig
from taugate.training.sparsity import (
    RetuneConfig,
    SparsityConfig,
    cosine,
    frozen_zero_units,
)
from taugate.training.targets import get_module


@dataclass(frozen=True)
class ModeConfig:
    """How one domain's mode is trained (steps of ``batch_size`` windows of ``seq_len``)."""

    sparse_steps: int = 60
    retune_steps: int = 240
    batch_size: int = 8
    seq_len: int = 256
    lr: float = 5e-3
    unit_l1: float = 1.0  # proximal L1 strength on the gains (x lr x relative unit cost)
    tau_init: float = -4.0  # SiLU is ~0 below -4: the gate starts open on what matters
    sharpness: float = 10.0
    target_mac_ratio: float = 3.0  # dense / kept FFN MACs after pruning (0: what L1 left)
    retune_lr_scale: float = 2.0  # the retune runs at lr x this (measured: 2 beat 1)
    importance_windows: int = 16  # windows that rank the units for pruning
    prune_stages: int = 4  # prune in this many steps towards the target, retuning after each
    distill: float = 0.5  # retune loss = (1 - a) CE + a KL(dense foundation || mode)
    correction_rank: int = 8  # per-mode low-rank correction of every gate and up (0: off)
    seed: int = 0

    def __post_init__(self):
        for name in ("sparse_steps", "batch_size", "seq_len", "importance_windows",
                     "prune_stages"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.retune_steps < 0:
            raise ValueError(f"retune_steps: expected >= 0, got {self.retune_steps}")
        if not 0 <= self.distill <= 1:
            raise ValueError(f"distill: expected in [0, 1], got {self.distill}")
        check_correction(self.correction_rank, CORRECTION_SCALE)
        if self.target_mac_ratio < 0 or 0 < self.target_mac_ratio < 1:
            raise ValueError(f"target_mac_ratio: expected 0 (off) or >= 1, got "
                             f"{self.target_mac_ratio}")

    def method(self) -> TauGate:
        """The TauGate method with this recipe's options."""
        return TauGate(TauGateConfig(
            sharpness=self.sharpness, tau_init=self.tau_init,
            correction_rank=self.correction_rank, correction_sites="ffn",
            sparsity=SparsityConfig(unit_l1=self.unit_l1),
            retune=RetuneConfig(epochs=1 if self.retune_steps else 0,
                                target_mac_ratio=self.target_mac_ratio,
                                lr_scale=self.retune_lr_scale, schedule="cosine")))


def _phase(model: nn.Module, method: TauGate, tokens: np.ndarray, config: ModeConfig,
           steps: int, lr: float, seed: int, sparse: bool, label: str, progress: bool,
           teacher: nn.Module | None = None) -> float:
    params = list(method.trainable(model).values())
    opt = torch.optim.Adam(params, lr=lr)
    bar = Progress(label, steps, enabled=progress)
    model.train()
    total = 0.0
    for step in range(steps):
        step_lr = lr if sparse else lr * cosine(step, steps)
        for group in opt.param_groups:
            group["lr"] = step_lr
        batch = sample_windows({"mode": tokens}, {"mode": 1.0}, seed, step, config.seq_len,
                               config.batch_size)
        logits = model(batch[:, :-1])
        flat = logits.reshape(-1, logits.shape[-1])
        loss = F.cross_entropy(flat, batch[:, 1:].reshape(-1))
        if teacher is not None and config.distill > 0:
            with torch.no_grad():
                soft = F.softmax(teacher(batch[:, :-1]).reshape(flat.shape), dim=-1)
            kd = F.kl_div(F.log_softmax(flat, dim=-1), soft, reduction="batchmean")
            loss = (1 - config.distill) * loss + config.distill * kd
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sparse:
            method.after_step(model, step_lr)
        total += loss.item()
        bar.update(loss=total / (step + 1))
    clear_gates(model)
    model.eval()
    return total / max(steps, 1)


@torch.no_grad()
def ffn_importance(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Per FFN unit: mean |what it feeds ``down``| (``gain * act(gate) * up``, the gate's and
    the up projection's product) x the norm of its ``down`` column, over the windows ``x``."""
    sites = gate_modules(model)
    sums = [torch.zeros(site.units) for site, _ in sites]
    handles = []
    for i, (site, _) in enumerate(sites):
        def hook(mod, args, i=i, units=site.units):
            sums[i] += args[0].detach().abs().reshape(-1, units).sum(0).float().cpu()
        handles.append(get_module(model, site.consumer).register_forward_pre_hook(hook))
    model.eval()
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    clear_gates(model)
    return [s / x.numel() * get_module(model, site.consumer).weight.detach().float().cpu()
            .norm(dim=0) for (site, _), s in zip(sites, sums)]


@torch.no_grad()
def prune_ffn_to_ratio(model: nn.Module, x: torch.Tensor, ratio: float) -> list[int]:
    """Zero the gains of the least important FFN units of ``model`` (:func:`ffn_importance`
    on the windows ``x``; every unit of a TinyLlama costs ``3 * dim`` MACs, so importance
    alone ranks them) until dense / kept FFN MACs >= ``ratio``; each layer keeps at least one
    unit. Units already at zero stay removed. Returns kept per layer."""
    sites = gate_modules(model)
    scores = ffn_importance(model, x)
    total = sum(site.units for site, _ in sites)
    budget = max(int(total // ratio), len(sites))
    flat = torch.cat([torch.where(act.gain != 0, s.to(act.gain.device), -1.0)
                      for (_, act), s in zip(sites, scores)])
    keep = torch.zeros(total, dtype=torch.bool)
    for i, (site, _) in enumerate(sites):  # the best unit of every layer first
        offset = sum(s.units for s, _ in sites[:i])
        keep[offset + int(flat[offset:offset + site.units].argmax())] = True
    order = torch.argsort(flat, descending=True)
    rest = [int(j) for j in order if not keep[j] and flat[j] >= 0]
    keep[rest[: max(budget - int(keep.sum()), 0)]] = True
    kept, offset = [], 0
    for site, act in sites:
        mask = keep[offset:offset + site.units].to(act.gain.dtype)
        act.gain.mul_(mask)
        kept.append(int((act.gain != 0).sum()))
        offset += site.units
    return kept


def hard_gated(model: nn.Module) -> nn.Module:
    """``model`` (an adapted TinyLlama) with its gates hardened to ``1[z > tau]``, in eval
    mode: what export compacts and what the ONNX graphs must match."""
    clear_gates(model)
    return set_hard(model, True).eval()


def train_mode(foundation: nn.Module, tokens: np.ndarray, config: ModeConfig,
               label: str = "mode", progress: bool = True) -> tuple[TauGate, nn.Module, dict]:
    """Adapt a frozen copy of ``foundation`` to ``tokens`` (one domain's training bytes).
    Returns the method, the hard-gated adapted model and what happened (losses, kept units)."""
    torch.manual_seed(config.seed)
    method = config.method()
    model = method.wrap(foundation)
    sparse_loss = _phase(model, method, tokens, config, config.sparse_steps, config.lr,
                         config.seed, True, f"{label} sparse", progress)
    after_l1 = kept_units(model)
    x = sample_windows({"mode": tokens}, {"mode": 1.0}, config.seed + 1, 0, config.seq_len,
                       config.importance_windows)[:, :-1]
    stages = config.prune_stages if config.target_mac_ratio > 0 else 1
    retune_loss = None
    for stage in range(1, stages + 1):
        # geometric steps towards the target: each retune repairs a smaller cut
        if config.target_mac_ratio > 0:
            prune_ffn_to_ratio(model, x, config.target_mac_ratio ** (stage / stages))
        steps = config.retune_steps * stage // stages - config.retune_steps * (stage - 1) // stages
        if steps:
            with frozen_zero_units(model):
                retune_loss = _phase(model, method, tokens, config, steps,
                                     config.lr * config.retune_lr_scale,
                                     config.seed + 1 + stage, False,
                                     f"{label} retune {stage}/{stages}", progress,
                                     foundation if config.distill > 0 else None)
    info = {"sparse_loss": sparse_loss, "retune_loss": retune_loss,
            "kept_after_l1": after_l1, "kept": kept_units(model),
            "ffn_mac_ratio": ffn_mac_ratio(model)}
    return method, hard_gated(model), info


def save_mode(path: str | Path, method: TauGate, model: nn.Module, foundation_sha: str,
              domain: str, config: ModeConfig, info: dict, data: str | None = None) -> Path:
    """The mode as a taugate adapter (safetensors + JSON, checked against the foundation's
    sha256 on load); the mode config and training summary ride in its JSON."""
    clear_gates(model)
    return save_adapter(path, method, model, foundation_sha, {"name": domain, "domain": domain},
                        extra={"mode_config": asdict(config), "training": info, "data": data})


def load_mode(path: str | Path, foundation: nn.Module, foundation_sha: str | None = None
              ) -> tuple[TauGate, nn.Module, dict]:
    """A saved mode, hard-gated, on ``foundation`` (refused if it is not the one it was
    trained on)."""
    adapter = load_adapter(path, foundation, foundation_sha)
    return adapter.method, hard_gated(adapter.model), adapter.meta


def train_modes(foundation: nn.Module, domains: dict[str, np.ndarray], config: ModeConfig,
                out: str | Path, progress: bool = True) -> dict[str, tuple[nn.Module, dict]]:
    """One mode per domain (``domains``: name -> training bytes), saved as
    ``out/<name>.safetensors`` + ``.json``; a mode already saved there for this foundation
    and this config is loaded instead of retrained. Returns name -> (hard-gated model, info)."""
    out = Path(out)
    sha = foundation_sha256(foundation)
    result = {}
    for name, tokens in domains.items():
        path = out / name
        meta_path = out / f"{name}.json"
        if meta_path.exists():
            meta = json.loads(meta_path.read_text("utf-8"))
            if (meta.get("foundation_sha256") == sha and meta.get("mode_config") == asdict(config)
                    and meta.get("data") == fingerprint(tokens)):
                _, model, meta = load_mode(path, foundation, sha)
                result[name] = (model, meta.get("training", {}))
                continue
        method, model, info = train_mode(foundation, tokens, config, name, progress)
        save_mode(path, method, model, sha, name, config, info, fingerprint(tokens))
        result[name] = (model, info)
    return result
