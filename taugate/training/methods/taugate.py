"""TauGate: learn a per-unit threshold tau and gain gamma on a frozen network.

arXiv 2602.11726, Eq. (2)-(5): for a hidden pre-activation z,
    gate  g = sigmoid(s * (z - tau))                 (soft, training)
    out   h = gamma * relu(z) * g
    loss  = CE + lambda * mean(g)                    (optional activity penalty, Eq. 5)
At inference the gate is hardened to 1[z > tau], so h = gamma * z * 1[z > max(tau, 0)]:
threshold t = max(tau, 0) and gamma folded into the next layer (export/hardened.py).

Beyond the paper (off by default): ``unit_l1`` adds a cost-weighted proximal L1 step on the
gains after each SGD step (training/sparsity.py), which zeroes whole units per mode so the
exporter can remove them; ``gain_lr_scale`` gives the gains a larger learning rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from taugate.training.backbone import MLP, UnitActivation
from taugate.training.methods.base import AdaptationMethod
from taugate.training.sparsity import gain_prox_step, unit_costs


@dataclass
class TauGateConfig:
    sharpness: float = 10.0  # s in Eq. 3: how close the sigmoid gate is to a step
    tau_init: float = 0.0  # initial thresholds
    gain_init: float = 1.0  # initial gains
    activity_lambda: float = 0.0  # lambda in Eq. 5, on the mean gate value (paper's sparsity)
    learn_tau: bool = True  # False: tau stays at tau_init (GainOnly-like)
    learn_gain: bool = True  # False: gamma stays at gain_init (TauOnly-like)
    gated: bool = True  # False: no gate at all, h = gamma * relu(z) (GainOnly)
    unit_l1: float = 0.0  # proximal L1 on gains, weighted by unit MAC cost (0: off = the paper)
    gain_lr_scale: float = 1.0  # the gains' learning rate = lr * this (gradient and prox step)
    retune_epochs: int = 0  # then retrain tau/gamma without L1, zeroed units frozen (sparsity.py)
    # retune options (training/sparsity.py: retune; all off by default)
    target_mac_ratio: float = 0.0  # > 0: before retuning, zero the least important units until
    #   dense MACs / kept MACs >= this (0: keep what L1 left)
    round_units: int = 1  # with target_mac_ratio: round layer 1's kept count down to a multiple
    retune_lr_scale: float = 1.0  # retune lr = adaptation lr * this
    retune_schedule: str = "constant"  # or "cosine": lr decays to 0 over the retune epochs
    distill: str = "none"  # retune with distillation from "taugate" (plain TauGate adapted for
    #   1 epoch on the same frozen weights) or "foundation" (the dense frozen model)
    distill_temperature: float = 4.0  # KD temperature T
    distill_alpha: float = 0.5  # loss = (1 - a) CE + a T^2 KL(teacher || student)

    def __post_init__(self) -> None:
        if self.sharpness <= 0:
            raise ValueError(f"sharpness: expected > 0, got {self.sharpness}")
        if self.activity_lambda < 0:
            raise ValueError(f"activity_lambda: expected >= 0, got {self.activity_lambda}")
        if not (self.learn_tau or self.learn_gain):
            raise ValueError("learn_tau/learn_gain: at least one must be True")
        if self.unit_l1 < 0:
            raise ValueError(f"unit_l1: expected >= 0, got {self.unit_l1}")
        if self.unit_l1 > 0 and not self.learn_gain:
            raise ValueError("unit_l1: acts on the learned gains; it needs learn_gain=True")
        if self.retune_epochs < 0:
            raise ValueError(f"retune_epochs: expected >= 0, got {self.retune_epochs}")
        if self.target_mac_ratio < 0 or (0 < self.target_mac_ratio < 1):
            raise ValueError(f"target_mac_ratio: expected 0 (off) or >= 1, got {self.target_mac_ratio}")
        if self.round_units < 1:
            raise ValueError(f"round_units: expected >= 1, got {self.round_units}")
        if self.retune_lr_scale <= 0:
            raise ValueError(f"retune_lr_scale: expected > 0, got {self.retune_lr_scale}")
        if self.retune_schedule not in ("constant", "cosine"):
            raise ValueError(f"retune_schedule: expected 'constant' or 'cosine', got "
                             f"{self.retune_schedule!r}")
        if self.distill not in ("none", "taugate", "foundation"):
            raise ValueError(f"distill: expected 'none', 'taugate' or 'foundation', got "
                             f"{self.distill!r}")
        if self.distill_temperature <= 0:
            raise ValueError(f"distill_temperature: expected > 0, got {self.distill_temperature}")
        if not 0 <= self.distill_alpha <= 1:
            raise ValueError(f"distill_alpha: expected in [0, 1], got {self.distill_alpha}")
        if self.gain_lr_scale <= 0:
            raise ValueError(f"gain_lr_scale: expected > 0, got {self.gain_lr_scale}")


class TauGateActivation(UnitActivation):
    """``gamma * relu(z) * gate(z - tau)``, soft (sigmoid) or hard (step)."""

    def __init__(self, width: int, config: TauGateConfig):
        super().__init__(width)
        self.sharpness = config.sharpness
        self.gated = config.gated
        self.gain_lr_scale = float(getattr(config, "gain_lr_scale", 1.0))
        tau = torch.full((width,), float(config.tau_init))
        gain = torch.full((width,), float(config.gain_init))
        if config.learn_tau and config.gated:
            self.tau = nn.Parameter(tau)
        else:
            self.register_buffer("tau", tau)
        if config.learn_gain:
            self.gain = nn.Parameter(gain)
        else:
            self.register_buffer("gain", gain)

    def gate(self, z: torch.Tensor) -> torch.Tensor:
        if self.hard:
            return (z > self.tau).to(z.dtype)
        return torch.sigmoid(self.sharpness * (z - self.tau))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = torch.relu(z)
        if self.gated:
            g = self.gate(z)
            self.last_gate = g
            h = h * g
        gain = self.gain
        if self.gain_lr_scale != 1.0 and gain.requires_grad:
            # same value, gradient scaled: SGD(+momentum) then moves the gains at lr * scale
            gain = gain + (self.gain_lr_scale - 1.0) * (gain - gain.detach())
        return gain * h

    @torch.no_grad()
    def hardened(self) -> tuple[np.ndarray, np.ndarray]:
        tau = self.tau.detach().float().cpu()
        t = tau.clamp(min=0) if self.gated else torch.zeros_like(tau)
        return t.numpy().astype(np.float32), self.gain.detach().float().cpu().numpy()


class TauGate(AdaptationMethod):
    """Threshold + gain per hidden unit (2 x 128 + 2 x 128 = 512 parameters on the paper's
    backbone)."""

    name = "taugate"
    Config = TauGateConfig

    def inject(self, model: MLP) -> None:
        model.acts = nn.ModuleList(
            TauGateActivation(act.width, self.config) for act in model.acts
        )

    def penalty(self, model: MLP) -> torch.Tensor | None:
        if self.config.activity_lambda == 0:
            return None
        gates = model.gates()
        if not gates:
            return None
        return self.config.activity_lambda * torch.stack([g.mean() for g in gates]).mean()

    def after_step(self, model: MLP, lr: float) -> None:
        strength = float(getattr(self.config, "unit_l1", 0.0))
        if strength > 0:
            scale = float(getattr(self.config, "gain_lr_scale", 1.0))
            gain_prox_step(model, lr * scale, strength, unit_costs(model))
