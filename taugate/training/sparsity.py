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
from dataclasses import replace

import torch

from taugate.training.backbone import MLP
from taugate.training.loop import TrainConfig, train
from taugate.training.recipes import RETUNE_MAX_GRAD_NORM


def unit_costs(model: MLP) -> list[torch.Tensor]:
    """Per hidden layer, each unit's MAC cost relative to the mean hidden unit (mean = 1)."""
    dims = (model.config.input_dim, *model.config.hidden, model.config.num_classes)
    raw = [float(dims[i] + dims[i + 2]) for i in range(len(model.config.hidden))]
    total_units = sum(model.config.hidden)
    mean = sum(c * w for c, w in zip(raw, model.config.hidden)) / total_units
    return [torch.full((w,), c / mean) for c, w in zip(raw, model.config.hidden)]


@torch.no_grad()
def prox_l1_(param: torch.Tensor, step: torch.Tensor | float) -> None:
    """Soft-threshold ``param`` in place: ``sign(p) * max(|p| - step, 0)`` (exact zeros)."""
    param.copy_(torch.sign(param) * torch.clamp(param.abs() - step, min=0))


def gain_prox_step(model: MLP, lr: float, strength: float, costs: list[torch.Tensor]) -> None:
    """One proximal L1 step on every hidden layer's ``gain`` (see the module docstring)."""
    for act, cost in zip(model.acts, costs):
        gain = getattr(act, "gain", None)
        if isinstance(gain, torch.nn.Parameter):
            prox_l1_(gain, (lr * strength) * cost.to(gain.device, gain.dtype))


def zero_gain_counts(model: MLP) -> list[int]:
    """Units per hidden layer whose gain is exactly zero (what pruning will remove for sure)."""
    return [int((getattr(a, "gain", torch.ones(1)) == 0).sum()) for a in model.acts]


@contextmanager
def frozen_zero_units(model: MLP):
    """Within the block, gradients of gains that are exactly zero now are masked to zero, so
    with a fresh optimizer those units stay removed while the others are retuned."""
    hooks = []
    for act in model.acts:
        gain = getattr(act, "gain", None)
        if isinstance(gain, torch.nn.Parameter):
            alive = (gain.detach() != 0).to(gain.dtype)
            hooks.append(gain.register_hook(lambda g, m=alive: g * m))
    try:
        yield model
    finally:
        for h in hooks:
            h.remove()


def kept_macs(model: MLP) -> int:
    """MACs of ``model`` once its zero-gain units are removed (what export/prune.py keeps)."""
    kept = [int((getattr(a, "gain", torch.ones(a.width)) != 0).sum()) for a in model.acts]
    dims = (model.config.input_dim, *kept, model.config.num_classes)
    return sum(a * b for a, b in zip(dims, dims[1:]))


def dense_macs(model: MLP) -> int:
    dims = (model.config.input_dim, *model.config.hidden, model.config.num_classes)
    return sum(a * b for a, b in zip(dims, dims[1:]))


@torch.no_grad()
def unit_importance(model: MLP, x: torch.Tensor, batch_size: int = 4096) -> list[torch.Tensor]:
    """Per hidden unit: |gamma_j| * E[h_j / gamma_j] * ||W_{l+1}[:, j]||, the mean size of what
    the unit sends to the next layer (0 for units already removed)."""
    model.eval()
    sums = [torch.zeros(a.width) for a in model.acts]
    handles = []
    for i, act in enumerate(model.acts):
        def hook(mod, inp, out, i=i):
            sums[i] += out.detach().abs().sum(0).float().cpu()
        handles.append(act.register_forward_hook(hook))
    try:
        for k in range(0, len(x), batch_size):
            model(x[k:k + batch_size].to(next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
    from taugate.training.backbone import linear_weight_bias

    out = []
    for i, s in enumerate(sums):
        w_next, _ = linear_weight_bias(model.linears[i + 1])
        out.append(s / len(x) * w_next.detach().float().cpu().norm(dim=0))
    return out


@torch.no_grad()
def prune_to_mac_ratio(model: MLP, x: torch.Tensor, ratio: float, multiple: int = 1) -> list[int]:
    """Zero the gains of the least important units (:func:`unit_importance` per MAC the unit
    costs now) until ``dense MACs / kept MACs >= ratio``; then, if ``multiple > 1``, round the
    first layer's kept count *down* to a multiple of it (ORT's Gemm works in 16-column panels).
    Returns the kept units per layer."""
    target = dense_macs(model) / ratio
    score = unit_importance(model, x)
    alive = [(getattr(a, "gain") != 0).cpu() for a in model.acts]

    def macs():
        dims = (model.config.input_dim, *[int(m.sum()) for m in alive], model.config.num_classes)
        return sum(a * b for a, b in zip(dims, dims[1:]))

    def remove_one(layers):
        best = None
        for l in layers:
            if int(alive[l].sum()) <= 1:
                continue
            dims = (model.config.input_dim, *[int(m.sum()) for m in alive], model.config.num_classes)
            cost = dims[l] + dims[l + 2]  # MACs the unit costs now: its row and its column
            s = score[l].clone() / cost
            s[~alive[l]] = float("inf")
            j = int(s.argmin())
            if best is None or float(s[j]) < best[0]:
                best = (float(s[j]), l, j)
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
    for act, m in zip(model.acts, alive):
        act.gain.mul_(m.to(act.gain.device, act.gain.dtype))
    return [int(m.sum()) for m in alive]


def _teacher(method, model: MLP, split, config: TrainConfig, kind: str, device, progress):
    """The distillation teacher: the dense frozen foundation (``"foundation"``: every gain 1,
    every threshold off) or plain TauGate adapted on ``split`` (``"taugate"``), both built on the
    same frozen weights as ``model``."""
    import copy

    for act in model.acts:  # recorded gates are graph outputs, which deepcopy refuses
        if getattr(act, "last_gate", None) is not None:
            act.last_gate = None
    teacher = copy.deepcopy(model)
    for act in teacher.acts:
        with torch.no_grad():
            if isinstance(getattr(act, "gain", None), torch.Tensor):
                act.gain.fill_(1.0)
            if isinstance(getattr(act, "tau", None), torch.Tensor):
                act.tau.fill_(0.0 if kind == "taugate" else -1e9)
    if kind == "taugate":
        for act in teacher.acts:
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


def retune(method, model: MLP, split, config: TrainConfig, device="cpu", progress: bool = True,
           label: str = "retune") -> list[float]:
    """Retrain ``method``'s parameters on ``split`` with the L1 step off and zero-gain units
    frozen at zero: undoes the L1 shrinkage of the kept gains (prune, then retune).

    Options on ``method.config`` (all off by default; TauGateConfig documents them):
    ``target_mac_ratio`` (first zero the least important units until the MAC budget is met,
    ``round_units`` rounding layer 1 down), ``retune_lr_scale``, ``retune_schedule`` and
    distillation (``distill``, ``distill_temperature``, ``distill_alpha``)."""
    mc = method.config
    opt = lambda name, default: getattr(mc, name, default)  # noqa: E731
    model.to(device)
    ratio = float(opt("target_mac_ratio", 0.0))
    if ratio > 0:
        n = min(len(split), 20000)
        prune_to_mac_ratio(model, split.x[:n], ratio, int(opt("round_units", 1)))
    distill = str(opt("distill", "none"))
    teacher = None
    if distill != "none":  # trained at the adaptation lr, before the retune lr is applied
        teacher = _teacher(method, model, split, config, distill, device, progress)
    config = replace(config, lr=config.lr * float(opt("retune_lr_scale", 1.0)))
    schedule = str(opt("retune_schedule", "constant"))
    objective = None
    alpha = float(opt("distill_alpha", 0.5))
    if teacher is not None and alpha > 0:
        objective = distillation(teacher, float(opt("distill_temperature", 4.0)), alpha)
    params = list(method.trainable(model).values())
    with frozen_zero_units(model):
        # no after_step: the proximal step would keep shrinking the kept gains
        return train(model, params, split, config, device=device, penalty=method.penalty,
                     label=label, progress=progress, objective=objective,
                     lr_scale=cosine if schedule == "cosine" else None,
                     max_grad_norm=RETUNE_MAX_GRAD_NORM)
