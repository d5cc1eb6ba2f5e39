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

from contextlib import contextmanager

import torch

from taugate.training.backbone import MLP
from taugate.training.loop import TrainConfig, train


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


def retune(method, model: MLP, split, config: TrainConfig, device="cpu", progress: bool = True,
           label: str = "retune") -> list[float]:
    """Retrain ``method``'s parameters on ``split`` with the L1 step off and zero-gain units
    frozen at zero: undoes the L1 shrinkage of the kept gains (prune, then retune)."""
    params = list(method.trainable(model).values())
    model.to(device)
    with frozen_zero_units(model):
        # no after_step: the proximal step would keep shrinking the kept gains
        history = train(model, params, split, config, device=device, penalty=method.penalty,
                        label=label, progress=progress)
    return history
