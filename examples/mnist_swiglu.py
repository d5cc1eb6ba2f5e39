"""A small MNIST model with a gated feed-forward block (SwiGLU, as in LLaMA's MLP), to bring to
taugate (``--model examples/mnist_swiglu.py:build``).

    e = relu(embed(x))    embed: Linear 784->128
    h = down(silu(gate(e)) * up(e))    gate, up: Linear 128->256, down: Linear 256->128
    logits = head(relu(h))    head: Linear 128->10

taugate gates the 256 intermediate units of the SwiGLU block (the site ``gate``, with ``up``
recorded): a pruned unit removes a row of ``gate`` and of ``up`` and a column of ``down``; and
``down -> relu -> head`` is a second site (128 units). Pretrain it with
``python scripts/measure_families.py swiglu DIR``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MnistSwiGLU(nn.Module):
    """The model above; ``forward`` takes ``[N, 784]`` pixels."""

    def __init__(self, dim: int = 128, hidden: int = 256):
        super().__init__()
        self.embed = nn.Linear(784, dim)
        self.gate, self.up = nn.Linear(dim, hidden, bias=False), nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = F.relu(self.embed(x))
        h = self.down(F.silu(self.gate(e)) * self.up(e))
        return self.head(F.relu(h))


def build() -> nn.Module:
    """The factory taugate calls: the architecture, seeded; weights come from ``--weights``."""
    torch.manual_seed(0)
    return MnistSwiGLU()
