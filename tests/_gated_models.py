"""Tiny torch models + hand-made GatedSpecs for the compaction / bundle v2 tests."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from taugate.spec import GatedSpec, GatedUnits


def odd_mlp(n_in: int = 13, seed: int = 0) -> nn.Sequential:
    """A 3-layer nn.Sequential on a non-784 input, with arbitrary module names."""
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict([
        ("stem", nn.Linear(n_in, 24)), ("act_a", nn.ReLU()),
        ("middle", nn.Linear(24, 16)), ("act_b", nn.ReLU()),
        ("readout", nn.Linear(16, 5)),
    ])).eval()


class FFN(nn.Module):
    def __init__(self, dim: int, hidden: int, act: str):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.act = nn.GELU() if act == "gelu" else nn.ReLU()

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, hidden: int, act: str):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.ffn = FFN(dim, hidden, act)

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.ffn(self.norm2(x))


class TinyTransformer(nn.Module):
    """Tokens [N, 6, 8] -> 2 pre-norm blocks (attention + fc1 -> act -> fc2) -> 4 logits."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.blocks = nn.Sequential(Block(8, 32, "gelu"), Block(8, 32, "relu"))
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.blocks(x).mean(1))


def random_spec(targets, seed: int, mode: str = "m") -> GatedSpec:
    """Thresholds (a third exactly 0) and gains (a few exactly 0) for ``targets``:
    [(producer, consumer, activation, units)]."""
    rng = np.random.default_rng(seed)
    units = []
    for producer, consumer, act, n in targets:
        t = (rng.random(n) * 0.6).astype(np.float32)
        t[rng.random(n) < 0.33] = 0
        if act == "gelu":
            t -= np.float32(0.2)
        g = (0.5 + rng.random(n)).astype(np.float32)
        g[rng.random(n) < 0.1] = 0
        units.append(GatedUnits(producer, consumer, act, t, g))
    return GatedSpec(tuple(units), meta={"mode": mode})


MLP_TARGETS = [("stem", "middle", "relu", 24), ("middle", "readout", "relu", 16)]
VIT_TARGETS = [("blocks.0.ffn.fc1", "blocks.0.ffn.fc2", "gelu", 32),
               ("blocks.1.ffn.fc1", "blocks.1.ffn.fc2", "relu", 32)]
