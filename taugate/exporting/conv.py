"""The convolutional side of compaction: output channels are a Conv2d's units.

A gated conv computes ``z * 1[z > t_c]`` with one threshold per output channel ``c`` (every
position of a channel shares it), the same hard gate as :class:`~taugate.exporting.compact.
GatedLinear`. Surgery keeps output channels (weight rows ``[c, :, :, :]`` and bias) of a
producer and input channels (weight columns ``[:, c, :, :]``, times the kept gains) of a
consumer: the shared layout's materialize steps take them along axes 0 and 1 of the 4-D
weight, as for a Linear's 2-D one. A channel is kept when it fires at any position of any
calibration sample (exporting/compact.py counts per channel over every position).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class GatedConv2d(nn.Conv2d):
    """A Conv2d followed by the per-channel hard gate ``z * 1[z > threshold[c]]``
    (``Greater -> Cast -> Mul`` in ONNX). ``counts`` / ``margins``: as GatedLinear's."""

    def __init__(self, like: nn.Conv2d, in_channels: int, out_channels: int,
                 threshold: torch.Tensor, bias: bool):
        super().__init__(in_channels, out_channels, like.kernel_size, like.stride, like.padding,
                         like.dilation, 1, bias, like.padding_mode)
        self.register_buffer("threshold", threshold.detach().clone().float())
        self.counts: torch.Tensor | None = None
        self.margins: list | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = super().forward(x)
        t = self.threshold.view(-1, 1, 1)
        fire = z > t
        if self.counts is not None:
            self.counts += fire.transpose(0, 1).reshape(z.shape[1], -1).sum(1)
        if self.margins is not None:
            gap = (z - t).abs().masked_fill(t.abs() <= 1e-5, np.inf)
            self.margins.append(gap.reshape(z.shape[0], -1).amin(1))
        return z * fire.to(z.dtype)


def rebuilt_conv(old: nn.Conv2d, w: torch.Tensor, b: torch.Tensor | None,
                 threshold: np.ndarray | None) -> nn.Conv2d:
    """A Conv2d of ``old``'s geometry holding ``w`` (``[out, in, kh, kw]``) and ``b``; gated
    per output channel when ``threshold`` is given."""
    if old.groups != 1:
        raise ValueError(f"a Conv2d with groups={old.groups} cannot be pruned by channel "
                         f"(expected groups=1)")
    out_c, in_c = int(w.shape[0]), int(w.shape[1])
    new = (GatedConv2d(old, in_c, out_c, torch.from_numpy(threshold), b is not None)
           if threshold is not None else
           nn.Conv2d(in_c, out_c, old.kernel_size, old.stride, old.padding, old.dilation, 1,
                     b is not None, old.padding_mode))
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
    return new.eval().requires_grad_(False)


def conv_macs(mod: nn.Conv2d, out: torch.Tensor) -> int:
    """Multiply-accumulates of one sample through ``mod`` (``out``: its output batch)."""
    kh, kw = mod.kernel_size
    return out.numel() // out.shape[0] * (mod.in_channels // mod.groups) * kh * kw
