"""What the language-model walk-through measures in torch: perplexity, FFN MACs, greedy text."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def windows(tokens: np.ndarray, length: int, max_tokens: int | None = None) -> torch.Tensor:
    """Non-overlapping ``[N, length + 1]`` windows of ``tokens`` (the last byte of one window
    is the first of the next), at most ``max_tokens`` predicted bytes in all."""
    tokens = np.asarray(tokens, dtype=np.uint8)
    if max_tokens is not None:
        tokens = tokens[: int(max_tokens) + 1]
    n = (tokens.size - 1) // length
    if n < 1:
        raise ValueError(f"{tokens.size} tokens: expected more than {length} to make a window")
    idx = np.arange(n)[:, None] * length + np.arange(length + 1)[None, :]
    return torch.from_numpy(tokens[idx].astype(np.int64))


@torch.no_grad()
def mean_nll(model: nn.Module, tokens: np.ndarray, context: int | None = None,
             max_tokens: int | None = None, batch_size: int = 16) -> float:
    """Mean next-byte negative log-likelihood (nats) of ``model`` over ``tokens``."""
    context = context or model.cfg.context
    data = windows(tokens, context, max_tokens)
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(data), batch_size):
        w = data[i : i + batch_size]
        logits = model(w[:, :-1])
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1),
                                       reduction="sum"))
        count += w[:, 1:].numel()
    return total / count


def perplexity(model: nn.Module, tokens: np.ndarray, context: int | None = None,
               max_tokens: int | None = None, batch_size: int = 16) -> float:
    """Per-byte perplexity ``exp(mean NLL)`` of ``model`` (a TinyLlama, adapted or not) on
    ``tokens`` (uint8), in non-overlapping windows of ``context`` bytes (default: the
    model's), over at most ``max_tokens`` predicted bytes."""
    return math.exp(mean_nll(model, tokens, context, max_tokens, batch_size))


def ffn_macs(dim: int, kept: list[int]) -> int:
    """FFN MACs per token of a SwiGLU model keeping ``kept[l]`` units in layer ``l``
    (gate, up and down: ``3 * dim`` per unit)."""
    return int(sum(3 * dim * k for k in kept))


def kept_units(model: nn.Module) -> list[int]:
    """Per FFN of an adapted TinyLlama, the units export keeps (gain nonzero)."""
    from taugate.training.gating import gate_modules

    return [site.units if getattr(act, "gain", None) is None else int((act.gain != 0).sum())
            for site, act in gate_modules(model)]


def ffn_mac_ratio(model: nn.Module) -> float:
    """Dense FFN MACs / kept FFN MACs of an adapted TinyLlama (>= 1)."""
    from taugate.training.gating import gate_modules

    dense = [site.units for site, _ in gate_modules(model)]
    kept = kept_units(model)
    dim = model.cfg.dim
    return ffn_macs(dim, dense) / max(ffn_macs(dim, kept), 1)


def decode_macs(cfg, kept: list[int] | None = None, past: int | None = None) -> dict:
    """Per-token MACs of batch-1 cached decode by part: ``ffn``, ``attention`` (projections
    plus scores and values over ``past`` positions, default half the context) and ``head``."""
    past = cfg.context // 2 if past is None else past
    kept = kept if kept is not None else [cfg.ffn] * cfg.layers
    attn = cfg.layers * (4 * cfg.dim * cfg.dim + 2 * past * cfg.dim)
    return {"ffn": ffn_macs(cfg.dim, kept), "attention": attn, "head": cfg.dim * cfg.vocab}


@torch.no_grad()
def greedy(model: nn.Module, prompt: bytes, new_tokens: int) -> list[int]:
    """Greedy continuation (token ids) of ``prompt`` with the model's cached ``step``."""
    model.eval()
    ids = torch.tensor([list(prompt)], dtype=torch.long)
    logits, past = model.step(ids)
    out = []
    for _ in range(new_tokens):
        nxt = int(logits[0].argmax())
        out.append(nxt)
        logits, past = model.step(torch.tensor([[nxt]]), past)
    return out
