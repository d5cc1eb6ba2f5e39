"""Multiply-accumulates per sample of a torch model: the Linear and Conv2d layers and
attention's two matmuls (what the manifest's ``macs`` and the MAC ratios report)."""

from __future__ import annotations

import torch
from torch import nn

from taugate.exporting.conv import conv_macs


@torch.no_grad()
def linear_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates per sample of the Linear and Conv2d layers plus attention's two
    matmuls: the
    model's own ``attention_macs()`` when it has one (hand-written attention, e.g. the vit
    family), else those of every ``nn.MultiheadAttention`` (with its projections, which it
    applies without calling its Linear); elementwise work, norms and softmax are not counted."""
    own = getattr(model, "attention_macs", None)
    total = [int(own()) if callable(own) else 0]

    def linear(mod, inp, out):
        total[0] += out.numel() // out.shape[0] * mod.in_features

    def attention(mod, inp, out):
        q, k = inp[0], inp[1]
        seq_q, seq_k = (q.shape[1], k.shape[1]) if mod.batch_first else (q.shape[0], k.shape[0])
        e = mod.embed_dim
        # its projections bypass the Linear hooks: q and out over seq_q, k and v over seq_k
        total[0] += 2 * seq_q * seq_k * e + 2 * seq_q * e * e + seq_k * e * (mod.kdim + mod.vdim)

    def conv(mod, inp, out):
        total[0] += conv_macs(mod, out)

    hooks = [m.register_forward_hook(linear) for m in model.modules() if isinstance(m, nn.Linear)]
    hooks += [m.register_forward_hook(conv) for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not callable(own):
        hooks += [m.register_forward_hook(attention) for m in model.modules()
                  if isinstance(m, nn.MultiheadAttention)]
    try:
        model(example[:1])
    finally:
        for h in hooks:
            h.remove()
    return int(total[0])
