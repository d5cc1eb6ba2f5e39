"""TauOnly: a learned per-unit threshold on each hidden ReLU, gains fixed at 1 (paper ablation).

arXiv 2602.11726, Table 2: ``h = relu(z) * sigmoid(s * (z - tau))`` while training, hardened to
``z * 1[z > max(tau, 0)]``; 128 + 128 = 256 parameters. Built from TauGate's activation with
``learn_gain=False``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from taugate.training.backbone import MLP
from taugate.training.methods.base import AdaptationMethod
from taugate.training.methods.taugate import TauGateActivation, TauGateConfig


@dataclass
class TauOnlyConfig:
    sharpness: float = 10.0  # s: the same soft gate as TauGate's
    tau_init: float = 0.0  # initial thresholds
    activity_lambda: float = 0.0  # lambda on the mean gate value, as TauGate's (0: none)

    def __post_init__(self) -> None:
        if self.sharpness <= 0:
            raise ValueError(f"sharpness: expected > 0, got {self.sharpness}")
        if self.activity_lambda < 0:
            raise ValueError(f"activity_lambda: expected >= 0, got {self.activity_lambda}")


class TauOnly(AdaptationMethod):
    """Per-unit thresholds only."""

    name = "tau_only"
    Config = TauOnlyConfig

    def inject(self, model: MLP) -> None:
        act = TauGateConfig(sharpness=self.config.sharpness, tau_init=self.config.tau_init,
                            learn_gain=False)
        model.acts = nn.ModuleList(TauGateActivation(a.width, act) for a in model.acts)

    def penalty(self, model: MLP) -> torch.Tensor | None:
        gates = model.gates() if self.config.activity_lambda > 0 else []
        if not gates:
            return None
        return self.config.activity_lambda * torch.stack([g.mean() for g in gates]).mean()
