"""GainOnly: a learned per-unit gain on each target's activation, no gate (the paper's ablation).

arXiv 2602.11726, Table 2: ``h = gamma * relu(z)``, 128 + 128 = 256 parameters. Built from
TauGate's activation with the gate switched off (``gated=False``, ``learn_tau=False``); hardening
folds gamma into the consumer's columns and keeps plain ReLUs (threshold 0). It shares TauGate's
unit-level sparsity (``sparsity``: a proximal L1 step on the gains) and ``retune`` options, so
``taugate train --method gain_only --sparse`` works and zero-gain units are pruned at export.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from taugate.training.methods.taugate import TauGate, TauGateConfig
from taugate.training.sparsity import RetuneConfig, SparsityConfig


@dataclass
class GainOnlyConfig:
    gain_init: float = 1.0  # initial gains (1: start from the foundation exactly)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)  # unit-level L1 (off)
    retune: RetuneConfig = field(default_factory=RetuneConfig)  # prune, then retune (off)

    FLAT: ClassVar[dict] = {**SparsityConfig.FLAT, **RetuneConfig.FLAT}

    def __post_init__(self) -> None:
        if not math.isfinite(self.gain_init):
            raise ValueError(f"gain_init: expected a finite number, got {self.gain_init!r}")

    def activation_config(self) -> TauGateConfig:
        return TauGateConfig(gain_init=self.gain_init, gated=False, learn_tau=False,
                             sparsity=self.sparsity, retune=self.retune)


class GainOnly(TauGate):
    """Per-unit gains only."""

    name = "gain_only"
    label = "GainOnly"
    table = "ablation"
    Config = GainOnlyConfig

    def activation_config(self) -> TauGateConfig:
        return self.config.activation_config()

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        return None  # no gate, so no gate-activity term
