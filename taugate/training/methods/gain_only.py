"""GainOnly: a learned per-unit gain on each hidden ReLU, no gate (the paper's ablation).

arXiv 2602.11726, Table 2: ``h = gamma * relu(z)``, 128 + 128 = 256 parameters. Built from
TauGate's activation with the gate switched off (``gated=False``, ``learn_tau=False``); hardening
folds gamma into the next layer's columns and keeps plain ReLUs (threshold 0). It inherits
TauGate's unit-level sparsity option (``unit_l1``, a proximal L1 step on the gains, with
``retune_epochs``; training/sparsity.py), so zero-gain units are pruned at export.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from taugate.training.backbone import MLP
from taugate.training.methods.taugate import TauGate, TauGateActivation, TauGateConfig


@dataclass
class GainOnlyConfig:
    gain_init: float = 1.0  # initial gains (1: start from the foundation exactly)
    unit_l1: float = 0.0  # cost-weighted proximal L1 on the gains (0: off = the paper)
    gain_lr_scale: float = 1.0  # the gains' learning rate = lr * this
    retune_epochs: int = 0  # after the L1 phase, retrain the kept gains without L1

    def __post_init__(self) -> None:
        if not math.isfinite(self.gain_init):
            raise ValueError(f"gain_init: expected a finite number, got {self.gain_init!r}")
        # the shared fields are validated by TauGateConfig, with the same messages
        self.activation_config()

    def activation_config(self) -> TauGateConfig:
        return TauGateConfig(gain_init=self.gain_init, gated=False, learn_tau=False,
                             unit_l1=self.unit_l1, gain_lr_scale=self.gain_lr_scale,
                             retune_epochs=self.retune_epochs)


class GainOnly(TauGate):
    """Per-unit gains only."""

    name = "gain_only"
    Config = GainOnlyConfig

    def inject(self, model: MLP) -> None:
        act = self.config.activation_config()
        model.acts = nn.ModuleList(TauGateActivation(a.width, act) for a in model.acts)

    def penalty(self, model: MLP) -> torch.Tensor | None:
        return None  # no gate, so no gate-activity term
