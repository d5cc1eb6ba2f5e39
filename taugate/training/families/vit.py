"""A small ViT-style classifier whose FFN blocks TauGate can gate (family ``vit``).

Dosovitskiy et al. 2021 ("An Image is Worth 16x16 Words"), shrunk for MNIST the way
nanoGPT shrinks GPT: 7x7 patches (16 tokens + a class token), pre-norm blocks
``x + attn(norm1(x))`` then ``x + ffn(norm2(x))`` with ``ffn = fc1 -> ReLU|GELU -> fc2``
(module paths ``blocks.<i>.ffn.fc1`` / ``.act`` / ``.fc2``: the sites TauGate targets), a final
LayerNorm and a linear head on the class token. Defaults follow /work/shared/MEASURED.md: dim 64,
4 heads, depth 4, FFN 256 (3.54 M MACs per image, 63 % of them in the FFNs).

The input is a flat ``[N, C*H*W]`` or ``[N, C, H, W]`` batch of raw pixels; normalization is
part of the model. Attention is written out (no fused kernel) so it exports with any ONNX
exporter and torch >= 2.4.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from taugate.training.families.base import Family


@dataclass
class ViTConfig:
    channels: int = 1  # input image channels
    height: int = 28
    width: int = 28
    patch: int = 7  # square patches; height and width must be multiples of it
    dim: int = 64  # token width
    heads: int = 4  # attention heads (dim must be a multiple)
    depth: int = 4  # transformer blocks
    ffn: int = 256  # FFN hidden units per block (the gated units)
    activation: str = "relu"  # "relu" | "gelu": the FFN's elementwise op
    num_classes: int = 10
    input_mean: float = 0.1307  # normalization applied inside the model
    input_std: float = 0.3081

    def __post_init__(self) -> None:
        for name in ("channels", "height", "width", "patch", "dim", "heads", "depth", "ffn"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.height % self.patch or self.width % self.patch:
            raise ValueError(f"patch: expected a divisor of height {self.height} and width "
                             f"{self.width}, got {self.patch}")
        if self.dim % self.heads:
            raise ValueError(f"heads: expected a divisor of dim {self.dim}, got {self.heads}")
        if self.activation not in ("relu", "gelu"):
            raise ValueError(f"activation: expected 'relu' or 'gelu', got {self.activation!r}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes: expected >= 2, got {self.num_classes}")
        if self.input_std <= 0:
            raise ValueError(f"input_std: expected > 0, got {self.input_std}")

    @property
    def tokens(self) -> int:
        return (self.height // self.patch) * (self.width // self.patch) + 1

    def to_dict(self) -> dict:
        return asdict(self)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, d = x.shape[1], x.shape[2]
        qkv = self.qkv(x).reshape(-1, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = torch.softmax((q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim)), dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(-1, n, d))


class FFN(nn.Module):
    def __init__(self, dim: int, hidden: int, activation: str):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.ReLU() if activation == "relu" else nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, config: ViTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.dim)
        self.attn = Attention(config.dim, config.heads)
        self.norm2 = nn.LayerNorm(config.dim)
        self.ffn = FFN(config.dim, config.ffn, config.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class ViT(nn.Module):
    """Raw pixels -> logits through patch embedding, ``depth`` pre-norm blocks and a head."""

    def __init__(self, config: ViTConfig | None = None):
        super().__init__()
        self.config = c = config or ViTConfig()
        self.patch_embed = nn.Linear(c.channels * c.patch * c.patch, c.dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim))
        self.pos_embed = nn.Parameter(torch.randn(1, c.tokens, c.dim) * 0.02)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.num_classes)
        self.register_buffer("input_mean", torch.tensor(c.input_mean))
        self.register_buffer("input_std", torch.tensor(c.input_std))

    def example_input(self, batch: int = 2) -> torch.Tensor:
        c = self.config
        return torch.zeros(batch, c.channels * c.height * c.width)

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C*H*W]`` or ``[N, C, H, W]`` -> ``[N, tokens - 1, C*p*p]``."""
        c, p = self.config, self.config.patch
        gh, gw = c.height // p, c.width // p
        x = x.reshape(-1, c.channels, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(-1, gh * gw, c.channels * p * p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.input_mean) / self.input_std
        tokens = self.patch_embed(self.patches(x))
        # Broadcast the class token by arithmetic, not expand(): TorchScript's ONNX exporter turns
        # expand(batch, ...) into ConstantOfShape, which the runtime's allowlist refuses (an
        # attacker-sized allocation). x*0 + c equals c for every finite input.
        cls = self.cls_token + tokens[:, :1, :] * 0
        h = torch.cat([cls, tokens], dim=1) + self.pos_embed
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h)[:, 0])

    def attention_macs(self) -> int:
        """MACs per image of the attention matmuls (q k^T and att v), which no Linear counts."""
        c = self.config
        return 2 * c.depth * c.tokens * c.tokens * c.dim


class ViTFamily(Family):
    """The small ViT; pretrained with Adam (SGD at the mlp's rate does not train it)."""

    name = "vit"
    Config = ViTConfig
    Model = ViT
    optimizer, lr = "adam", 1e-3

    def fit_to_data(self, fc, facts):
        shape = facts.shape
        if len(shape) not in (2, 3):
            raise ValueError(f"--family vit: expected image inputs [C, H, W] or [H, W] per sample, "
                             f"got {list(shape)}; use --family mlp for flat features")
        c, h, w = (1, *shape) if len(shape) == 2 else shape
        fc = super().fit_to_data(fc, facts)
        return replace(fc, family_config={**fc.family_config, "channels": c, "height": h,
                                          "width": w})
