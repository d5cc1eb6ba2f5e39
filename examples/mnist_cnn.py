"""A small MNIST CNN to bring to taugate (``--model examples/mnist_cnn.py:build``).

    conv 1->16 (28x28) -> BatchNorm2d -> ReLU -> conv 16->32 (stride 2, 14x14) -> BatchNorm2d
    -> ReLU -> conv 32->32 (stride 2, 7x7) -> ReLU -> global average pool -> Linear 32->10

taugate gates two convolutional sites (``c1 -> bn1 -> relu -> c2`` with 16 channels and
``c2 -> bn2 -> relu -> c3`` with 32), folds both BatchNorms and removes pruned channels from
both convolutions of a site; ``c3`` feeds the pooling, not a conv, so it stays dense. Input: the
MNIST source's flattened pixels ``[N, 784]`` in [0, 1]. Pretrain it with
``python scripts/measure_families.py cnn DIR`` (writes ``DIR/weights.safetensors``), then
``taugate train --model examples/mnist_cnn.py:build --weights DIR/weights.safetensors ...``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MnistCNN(nn.Module):
    """The CNN above; ``forward`` takes ``[N, 784]`` (or ``[N, 1, 28, 28]``) pixels."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.c1 = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.c2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.c3 = nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1)
        self.head = nn.Linear(2 * width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(-1, 1, 28, 28)
        h = F.relu(self.bn1(self.c1(h)))
        h = F.relu(self.bn2(self.c2(h)))
        h = F.relu(self.c3(h))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))


def build() -> nn.Module:
    """The factory taugate calls: the architecture, seeded; weights come from ``--weights``."""
    torch.manual_seed(0)
    return MnistCNN()
