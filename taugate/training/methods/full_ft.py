"""Full fine-tuning: every weight and bias of a copy of the foundation is trained.

The paper's upper reference (arXiv 2602.11726, Table 1: 118,282 parameters on 784-128-128-10).
``wrap`` deep-copies the foundation, so the foundation object itself stays untouched; hardening
returns the tuned weights as overrides (a dense graph).
"""

from __future__ import annotations

import numpy as np
from torch import nn

from taugate.training.methods.base import AdaptationMethod, as_numpy


class FullFT(AdaptationMethod):
    """Train every parameter (buffers, e.g. input normalization, stay fixed)."""

    name = "full_ft"
    label = "Full FT"

    def inject(self, model: nn.Module) -> None:
        for p in model.parameters():
            p.requires_grad_(True)

    def overrides(self, model: nn.Module) -> dict[str, np.ndarray]:
        return {n: as_numpy(p) for n, p in model.named_parameters()}
