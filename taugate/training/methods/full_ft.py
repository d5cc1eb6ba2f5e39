"""Full fine-tuning: every weight and bias of a copy of the foundation is trained.

The paper's upper reference (arXiv 2602.11726, Table 1: 118,282 parameters on 784-128-128-10).
``wrap`` deep-copies the foundation, so the foundation object itself stays untouched; hardening
returns the tuned weights as they are (a dense graph).
"""

from __future__ import annotations

from taugate.training.backbone import MLP
from taugate.training.methods.base import AdaptationMethod


class FullFT(AdaptationMethod):
    """Train every linear weight and bias (the input normalization buffers stay fixed)."""

    name = "full_ft"

    def inject(self, model: MLP) -> None:
        for p in model.linears.parameters():
            p.requires_grad_(True)
