"""Unit-level sparsity per mode: cost-weighted proximal L1 on the per-unit gains.

A hidden unit can leave a mode's graph only when it never contributes for that mode. The
paper's activity penalty (arXiv 2602.11726, Eq. 5: lambda * mean gate) makes gates sparse *per
input*, but every unit still fires on some input, so nothing can be removed. Network slimming
(Liu et al. 2017, "Learning Efficient Convolutional Networks through Network Slimming") instead
puts an L1 penalty on a per-unit scale; applied as a proximal step after each SGD step

    gamma_j <- sign(gamma_j) * max(|gamma_j| - lr * lambda * cost_j, 0)

it drives a unit's gain to *exactly* zero. The gain is folded into the next layer's columns at
export, so a zero-gain unit has an all-zero outgoing column and export/prune.py removes it.

``cost_j`` is what unit j costs in multiply-accumulates (its row in W_l and its column in
W_{l+1}: ``in_l + out_{l+1}``), divided by the mean over all hidden units, so lambda means the
same thing for any backbone and a layer-1 unit of the paper's backbone (784 + 128 MACs) is
pushed ~6.6x harder than a layer-2 unit (128 + 10).

L1 also shrinks the gains it keeps; :func:`retune` then retrains tau and gamma without it,
with the zeroed units frozen at zero (prune, then retune), which recovers ~1.5 points of
accuracy at the same sparsity (docs/speedup.md).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from torch import nn

from taugate.training.gating import clear_gates, gate_modules, targets_of
from taugate.training.loop import TrainConfig, train
from taugate.training.recipes import RETUNE_MAX_GRAD_NORM


@dataclass
class SparsityConfig:
    """Unit-level sparsity: a cost-weighted proximal L1 step on the gains (off by default)."""

    unit_l1: float = 0.0  # proximal L1 on gains, weighted by unit MAC cost (0: off = the paper)
    gain_lr_scale: float = 1.0  # the gains' learning rate = lr * this (gradient and prox step)

    FLAT: ClassVar[dict] = {"unit_l1": ("sparsity", "unit_l1"),
                            "gain_lr_scale": ("sparsity", "gain_lr_scale")}

    def __post_init__(self) -> None:
        if self.unit_l1 < 0:
            raise ValueError(f"unit_l1: expected >= 0, got {self.unit_l1}")
        if self.gain_lr_scale <= 0:
            raise ValueError(f"gain_lr_scale: expected > 0, got {self.gain_lr_scale}")


@dataclass
class RetuneConfig:
    """Prune, then retune: retrain tau/gamma without L1, zeroed units frozen (off by default)."""

    epochs: int = 0  # retune epochs after the sparse phase (0: no retune)
    target_mac_ratio: float = 0.0  # > 0: before retuning, zero the least important units until
    #   dense MACs / kept MACs >= this (0: keep what L1 left)
    round_units: int = 1  # with target_mac_ratio: round the first site's kept count down to this
    lr_scale: float = 1.0  # retune lr = adaptation lr * this
    schedule: str = "constant"  # or "cosine": lr decays to 0 over the retune epochs
    distill: str = "none"  # retune with distillation from "taugate" (plain TauGate adapted for
    #   1 epoch on the same frozen weights) or "foundation" (the dense frozen model)
    distill_temperature: float = 4.0  # KD temperature T
    distill_alpha: float = 0.5  # loss = (1 - a) CE + a T^2 KL(teacher || student)

    FLAT: ClassVar[dict] = {
        "retune_epochs": ("retune", "epochs"),
        "target_mac_ratio": ("retune", "target_mac_ratio"),
        "round_units": ("retune", "round_units"),
        "retune_lr_scale": ("retune", "lr_scale"),
        "retune_schedule": ("retune", "schedule"),
        "distill": ("retune", "distill"),
        "distill_temperature": ("retune", "distill_temperature"),
        "distill_alpha": ("retune", "distill_alpha"),
    }

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"retune_epochs: expected >= 0, got {self.epochs}")
        if self.target_mac_ratio < 0 or (0 < self.target_mac_ratio < 1):
            raise ValueError(f"target_mac_ratio: expected 0 (off) or >= 1, got {self.target_mac_ratio}")
        if self.round_units < 1:
            raise ValueError(f"round_units: expected >= 1, got {self.round_units}")
        if self.lr_scale <= 0:
            raise ValueError(f"retune_lr_scale: expected > 0, got {self.lr_scale}")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"retune_schedule: expected 'constant' or 'cosine', got "
                             f"{self.schedule!r}")
        if self.distill not in ("none", "taugate", "foundation"):
            raise ValueError(f"distill: expected 'none', 'taugate' or 'foundation', got "
                             f"{self.distill!r}")
        if self.distill_temperature <= 0:
            raise ValueError(f"distill_temperature: expected > 0, got {self.distill_temperature}")
        if not 0 <= self.distill_alpha <= 1:
            raise ValueError(f"distill_alpha: expected in [0, 1], got {self.distill_alpha}")


def unit_costs(model: nn.Module) -> list[torch.Tensor]:
    """Per gated site, each unit's MAC cost relative to the mean gated unit (mean = 1): the
    producer's fan-in plus the consumer's fan-out, times the rows per sample (targets.py)."""
    return targets_of(model).unit_costs()


@torch.no_grad()
def prox_l1_(param: torch.Tensor, step: torch.Tensor | float) -> None:
    """Soft-threshold ``param`` in place: ``sign(p) * max(|p| - step, 0)`` (exact zeros)."""
    param.copy_(torch.sign(param) * torch.clamp(param.abs() - step, min=0))


def gain_prox_step(model: nn.Module, lr: float, strength: float,
                   costs: list[torch.Tensor] | None = None) -> None:
    """One proximal L1 step on every gated site's ``gain`` (see the module docstring)."""
    costs = unit_costs(model) if costs is None else costs
    for (_, act), cost in zip(gate_modules(model), costs):
        gain = getattr(act, "gain", None)
        if isinstance(gain, torch.nn.Parameter):
            prox_l1_(gain, (lr * strength) * cost.to(gain.device, gain.dtype))


def _gains(model: nn.Module) -> list[torch.Tensor | None]:
    return [getattr(act, "gain", None) for _, act in gate_modules(model)]


def zero_gain_counts(model: nn.Module) -> list[int]:
    """Units per gated site whose gain is exactly zero (what pruning will remove for sure)."""
    return [0 if g is None else int((g == 0).sum()) for g in _gains(model)]


@contextmanager
def frozen_zero_units(model: nn.Module):
    """Within the block, gradients of gains that are exactly zero now are masked to zero, so
    with a fresh optimizer those units stay removed while the others are retuned."""
    hooks = []
    for gain in _gains(model):
        if isinstance(gain, torch.nn.Parameter):
            alive = (gain.detach() != 0).to(gain.dtype)
            hooks.append(gain.register_hook(lambda g, m=alive: g * m))
    try:
        yield model
    finally:
        for h in hooks:
            h.remove()


def _kept(model: nn.Module, alive: list[torch.Tensor] | None = None) -> dict[str, int]:
    """Kept units per producer: nonzero gains (or the ``alive`` masks given)."""
    out = {}
    for k, (site, act) in enumerate(gate_modules(model)):
        if alive is not None:
            out[site.producer] = int(alive[k].sum())
        else:
            gain = getattr(act, "gain", None)
            out[site.producer] = site.units if gain is None else int((gain != 0).sum())
    return out


def kept_macs(model: nn.Module) -> int:
    """MACs of ``model`` once its zero-gain units are removed (what export/prune.py keeps)."""
    return targets_of(model).macs(_kept(model))


def dense_macs(model: nn.Module) -> int:
    return targets_of(model).macs()


@torch.no_grad()
def unit_importance(model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> list[torch.Tensor]:
    """Per gated unit: |gamma_j| * E[h_j / gamma_j] * ||W_consumer[:, j]||, the mean size of
    what the unit sends to its consumer (0 for units already removed)."""
    from taugate.training.families.mlp import linear_weight_bias
    from taugate.training.targets import get_module

    model.eval()
    sites = gate_modules(model)
    sums = [torch.zeros(site.units) for site, _ in sites]
    handles = []
    for i, (site, act) in enumerate(sites):
        def hook(mod, inp, out, i=i, units=site.units, conv=site.conv):
            h = out.detach().abs()
            h = h.transpose(0, 1).reshape(units, -1).T if conv else h.reshape(-1, units)
            sums[i] += h.sum(0).float().cpu()
        handles.append(act.register_forward_hook(hook))
    try:
        for k in range(0, len(x), batch_size):
            model(x[k:k + batch_size].to(next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
    out = []
    for (site, _), s in zip(sites, sums):
        w_next, _ = linear_weight_bias(get_module(model, site.consumer))
        w = w_next.detach().float().cpu()
        norms = w.transpose(0, 1).reshape(site.units, -1).norm(dim=1)  # per input unit (column)
        out.append(s / len(x) * norms)
    return out


@torch.no_grad()
def prune_to_mac_ratio(model: nn.Module, x: torch.Tensor, ratio: float,
                       multiple: int = 1) -> list[int]:
    """Zero the gains of the least important units (:func:`unit_importance` per MAC the unit
    costs now) until ``dense MACs / kept MACs >= ratio``; then, if ``multiple > 1``, round the
    first site's kept count *down* to a multiple of it (ORT's Gemm works in 16-column panels).
    Returns the kept units per site."""
    targets = targets_of(model)
    sites = gate_modules(model)
    target = targets.macs() / ratio
    score = unit_importance(model, x)
    alive = [(a.gain != 0).cpu() for _, a in sites]

    def macs():
        return targets.macs(_kept(model, alive))

    def remove_one(layers):
        best = None
        kept = _kept(model, alive)
        for layer in layers:
            if int(alive[layer].sum()) <= 1:
                continue
            cost = targets.unit_cost(sites[layer][0], kept)  # MACs the unit costs now
            s = score[layer].clone() / cost
            s[~alive[layer]] = float("inf")
            j = int(s.argmin())
            if best is None or float(s[j]) < best[0]:
                best = (float(s[j]), layer, j)
        if best is None:
            return False
        alive[best[1]][best[2]] = False
        return True

    while macs() > target and remove_one(range(len(alive))):
        pass
    if multiple > 1:
        k = int(alive[0].sum())
        while k % multiple and k > multiple and remove_one([0]):
            k = int(alive[0].sum())
    for (_, act), m in zip(sites, alive):
        act.gain.mul_(m.to(act.gain.device, act.gain.dtype))
    return [int(m.sum()) for m in alive]


def _teacher(method, model: nn.Module, split, config: TrainConfig, kind: str, device, progress):
    """The distillation teacher: the dense frozen foundation (``"foundation"``: every gain 1,
    every threshold off) or plain TauGate adapted on ``split`` (``"taugate"``), both built on the
    same frozen weights as ``model``."""
    import copy

    clear_gates(model)  # recorded gates are graph outputs, which deepcopy refuses
    teacher = copy.deepcopy(model)
    acts = [act for _, act in gate_modules(teacher)]
    for act in acts:
        with torch.no_grad():
            if isinstance(getattr(act, "gain", None), torch.Tensor):
                act.gain.fill_(1.0)
            if isinstance(getattr(act, "tau", None), torch.Tensor):
                act.tau.fill_(0.0 if kind == "taugate" else -1e9)
    if kind == "taugate":
        for act in acts:
            act.gain_lr_scale = 1.0
        params = [p for p in teacher.parameters() if p.requires_grad]
        train(teacher, params, split, replace(config, epochs=1), device=device,
              label="teacher", progress=progress)
    elif kind != "foundation":
        raise ValueError(f"distill: expected 'none', 'taugate' or 'foundation', got {kind!r}")
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


def cosine(step: int, steps: int) -> float:
    """Cosine decay from 1 to 0 over ``steps`` (an ``lr_scale`` for loop.train)."""
    return 0.5 * (1 + math.cos(math.pi * step / max(steps, 1)))


def distillation(teacher, temperature: float, alpha: float):
    """``(1 - alpha) * CE + alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T))`` as an
    ``objective`` for loop.train (Hinton et al. 2015)."""
    f = torch.nn.functional

    def objective(logits, xb, yb):
        with torch.no_grad():
            soft = torch.softmax(teacher(xb) / temperature, dim=1)
        kd = f.kl_div(torch.log_softmax(logits / temperature, dim=1), soft,
                      reduction="batchmean") * temperature ** 2
        return (1 - alpha) * f.cross_entropy(logits, yb) + alpha * kd

    return objective


def retune(method, model: nn.Module, split, config: TrainConfig, device="cpu",
           progress: bool = True, label: str = "retune") -> list[float]:
    """Retrain ``method``'s parameters on ``split`` with the L1 step off and zero-gain units
    frozen at zero: undoes the L1 shrinkage of the kept gains (prune, then retune).

    Options: ``method.retune_config()`` (:class:`RetuneConfig`; all off by default):
    ``target_mac_ratio`` (first zero the least important units until the MAC budget is met,
    ``round_units`` rounding the first site down), ``lr_scale``, ``schedule`` and
    distillation (``distill``, ``distill_temperature``, ``distill_alpha``)."""
    rc: RetuneConfig = method.retune_config() or RetuneConfig()
    model.to(device)
    if rc.target_mac_ratio > 0:
        n = min(len(split), 20000)
        prune_to_mac_ratio(model, split.x[:n], float(rc.target_mac_ratio), int(rc.round_units))
    teacher = None
    if rc.distill != "none":  # trained at the adaptation lr, before the retune lr is applied
        teacher = _teacher(method, model, split, config, rc.distill, device, progress)
    config = replace(config, lr=config.lr * float(rc.lr_scale))
    objective = None
    if teacher is not None and rc.distill_alpha > 0:
        objective = distillation(teacher, float(rc.distill_temperature), float(rc.distill_alpha))
    params = list(method.trainable(model).values())
    with frozen_zero_units(model):
        # no after_step: the proximal step would keep shrinking the kept gains
        return train(model, params, split, config, device=device, penalty=method.penalty,
                     label=label, progress=progress, objective=objective,
                     lr_scale=cosine if rc.schedule == "cosine" else None,
                     max_grad_norm=RETUNE_MAX_GRAD_NORM)
