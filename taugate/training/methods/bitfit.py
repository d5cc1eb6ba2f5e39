"""BitFit: train only the biases of the frozen network (Ben Zaken et al., 2022).

arXiv 2602.11726, Table 1: 266 parameters on 784-128-128-10 (128 + 128 + 10). Each bias is
replaced by a fresh Parameter holding a copy of the foundation's, so the weights the copy shares
its values with are never the ones that train. Hardening is the base form: the tuned biases are
the layers' biases (plain ReLU graph).
"""

from __future__ import annotations

from torch import nn

from taugate.training.backbone import MLP
from taugate.training.methods.base import AdaptationMethod


class BitFit(AdaptationMethod):
    """Bias-only fine-tuning of every linear layer."""

    name = "bitfit"

    def inject(self, model: MLP) -> None:
        for linear in model.linears:
            if linear.bias is None:
                raise ValueError("bitfit: expected every linear layer to have a bias, got none")
            linear.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=True)
