"""BitFit: train only the biases of the frozen network (Ben Zaken et al., 2022).

arXiv 2602.11726, Table 1: 266 parameters on 784-128-128-10 (128 + 128 + 10). Each bias of every
``nn.Linear`` is replaced by a fresh Parameter holding a copy of the foundation's, so the weights
the copy shares its values with are never the ones that train. Hardening: the tuned biases are
the overrides (plain ReLU graph).
"""

from __future__ import annotations

import numpy as np
from torch import nn

from taugate.training.methods.base import AdaptationMethod, as_numpy


def linear_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every ``nn.Linear`` of ``model`` by path, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]


class BitFit(AdaptationMethod):
    """Bias-only fine-tuning of every linear layer."""

    name = "bitfit"
    label = "BitFit (bias-only)"

    def inject(self, model: nn.Module) -> None:
        for path, linear in linear_modules(model):
            if linear.bias is None:
                raise ValueError(f"bitfit: expected every linear layer to have a bias; "
                                 f"{path!r} has none")
            linear.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=True)

    def overrides(self, model: nn.Module) -> dict[str, np.ndarray]:
        return {f"{path}.bias": as_numpy(m.bias) for path, m in linear_modules(model)}
