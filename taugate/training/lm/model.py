"""A byte-level decoder in the LLaMA layout: RMSNorm, rotary attention, SwiGLU FFN.

Written in plain torch (no ``transformers``) so that its training forward traces with
``torch.fx``: each block's FFN is ``down(act(gate(x)) * up(x))`` with ``act`` an ``nn.SiLU``
module, which training/traced.py finds as a gated FFN site, so a mode gates the
intermediate units like any other family's. :meth:`TinyLlama.step` is the cached decode
(a prompt with no cache, then one token at a time) that generation and export use.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

Past = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [B, heads, P, head_dim]


@dataclass(frozen=True)
class LMConfig:
    """Sizes of the decoder. ``vocab`` 256: one token per byte."""

    vocab: int = 256
    dim: int = 256
    layers: int = 4
    heads: int = 4
    ffn: int = 1024
    context: int = 256
    rope_theta: float = 10000.0
    eps: float = 1e-5

    def __post_init__(self):
        if self.dim % self.heads or (self.dim // self.heads) % 2:
            raise ValueError(f"dim {self.dim} must split into {self.heads} heads of even size")

    def to_json(self) -> dict:
        return asdict(self)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def _positions(table: torch.Tensor, start, length) -> torch.Tensor:
    return table[start:start + length]


# a leaf for torch.fx: the slice bounds are traced values, the table a plain buffer
torch.fx.wrap("_positions")


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.heads, self.head_dim = cfg.heads, cfg.dim // cfg.heads
        self.q = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.k = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.v = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.o = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[0], x.shape[1]
        return x.view(b, t, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x, cos, sin, past=None):
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        if past is not None:
            k = torch.cat((past[0], k), dim=2)
            v = torch.cat((past[1], v), dim=2)
        # a prompt attends causally; one new token after a cache attends to all of it
        causal = past is None or x.shape[1] > 1
        if past is not None and x.shape[1] > 1:
            raise ValueError("step() takes one token at a time after the prompt")
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        y = y.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        return self.o(y), (k, v)


class FeedForward(nn.Module):
    """SwiGLU: ``down(silu(gate(x)) * up(x))``; the gated units are ``gate``'s outputs."""

    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.gate = nn.Linear(cfg.dim, cfg.ffn, bias=False)
        self.up = nn.Linear(cfg.dim, cfg.ffn, bias=False)
        self.act = nn.SiLU()
        self.down = nn.Linear(cfg.ffn, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.gate(x)) * self.up(x))


class Block(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.eps)
        self.attn = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.eps)
        self.ffn = FeedForward(cfg)

    def forward(self, x, cos, sin, past=None):
        a, present = self.attn(self.attn_norm(x), cos, sin, past)
        x = x + a
        return x + self.ffn(self.ffn_norm(x)), present


class TinyLlama(nn.Module):
    """The decoder. ``forward(ids)`` -> logits ``[B, T, vocab]`` (training; fx-traceable)."""

    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab, cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = RMSNorm(cfg.dim, cfg.eps)
        self.head = nn.Linear(cfg.dim, cfg.vocab, bias=False)
        half = cfg.dim // cfg.heads // 2
        inv = cfg.rope_theta ** (-torch.arange(half, dtype=torch.float32) / half)
        angles = torch.outer(torch.arange(cfg.context, dtype=torch.float32), inv)
        angles = torch.cat((angles, angles), dim=-1)  # [context, head_dim]
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def example_input(self) -> torch.Tensor:
        return torch.zeros(2, 8, dtype=torch.long)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        cos, sin = _positions(self.cos, 0, t), _positions(self.sin, 0, t)
        x = self.embed(ids)
        for block in self.blocks:
            x, _ = block(x, cos, sin)
        return self.head(self.norm(x))

    def step(self, ids: torch.Tensor, past: Past | None = None) -> tuple[torch.Tensor, Past]:
        """Cached decode: the prompt ``ids [B, T]`` with ``past=None``, then one token
        ``[B, 1]`` per call with the returned cache. Returns the last position's logits
        ``[B, vocab]`` and the cache grown by the new positions."""
        start = 0 if past is None else past[0][0].shape[2]
        t = ids.shape[1]
        if start + t > self.cfg.context:
            raise ValueError(f"{start + t} positions exceed the model's context "
                             f"({self.cfg.context})")
        cos, sin = _positions(self.cos, start, t), _positions(self.sin, start, t)
        x = self.embed(ids)
        presents: Past = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, cos, sin, None if past is None else past[i])
            presents.append(kv)
        return self.head(self.norm(x[:, -1])), presents
