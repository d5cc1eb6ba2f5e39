"""Frozen: no adaptation at all; the foundation as it is (the paper's baseline, 0 parameters)."""

from __future__ import annotations

from taugate.training.backbone import MLP
from taugate.training.methods.base import AdaptationMethod


class Frozen(AdaptationMethod):
    name = "frozen"

    def inject(self, model: MLP) -> None:
        pass
