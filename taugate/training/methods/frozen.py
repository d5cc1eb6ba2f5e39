"""Frozen: no adaptation at all; the foundation as it is (the paper's baseline, 0 parameters)."""

from __future__ import annotations

from torch import nn

from taugate.training.methods.base import AdaptationMethod


class Frozen(AdaptationMethod):
    name = "frozen"
    label = "Frozen"

    def inject(self, model: nn.Module) -> None:
        pass
