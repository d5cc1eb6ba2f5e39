"""TauOnly: a learned per-unit threshold on each target's activation, gains fixed at 1.

arXiv 2602.11726, Table 2: ``h = relu(z) * sigmoid(s * (z - tau))`` while training, hardened to
``z * 1[z > max(tau, 0)]``; 128 + 128 = 256 parameters. Built from TauGate's activation with
``learn_gain=False``.
"""

from __future__ import annotations

from dataclasses import dataclass

from taugate.training.methods.taugate import TauGate, TauGateConfig


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


class TauOnly(TauGate):
    """Per-unit thresholds only."""

    name = "tau_only"
    label = "TauOnly"
    table = "ablation"
    Config = TauOnlyConfig

    def activation_config(self) -> TauGateConfig:
        c = self.config
        return TauGateConfig(sharpness=c.sharpness, tau_init=c.tau_init,
                             activity_lambda=c.activity_lambda, learn_gain=False)

    def retune_config(self):
        return None  # no gains to sparsify, so nothing to retune
