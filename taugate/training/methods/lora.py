"""LoRA: a trainable low-rank update ``W + (alpha / r) * B @ A`` on each frozen linear layer.

Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models" (arXiv 2106.09685), with PEFT's
initialisation (huggingface/peft ``tuners/lora/layer.py``): A ~ kaiming-uniform(a=sqrt(5)),
B = 0, so training starts from the foundation exactly. The paper under reproduction
(arXiv 2602.11726, Table 1) uses r = 8 on all three linear layers of 784-128-128-10:
8 * (784 + 128) + 8 * (128 + 128) + 8 * (128 + 10) = 10,448 parameters. ``harden`` merges
the update into the weight (PEFT's *merge*), so the exported graph is a plain dense MLP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from taugate.training.methods.base import AdaptationMethod, as_numpy
from taugate.training.methods.bitfit import linear_modules
from taugate.training.targets import set_module


@dataclass
class LoRAConfig:
    rank: int = 8  # r: the rank of the update B @ A
    alpha: float = 8.0  # scaling = alpha / rank (PEFT's default alpha = r: scaling 1)
    layers: tuple[int, ...] | None = None  # indices of the linear layers (module order) to
    #   adapt; None = all

    def __post_init__(self) -> None:
        if int(self.rank) != self.rank or self.rank < 1:
            raise ValueError(f"rank: expected an integer >= 1, got {self.rank}")
        self.rank = int(self.rank)
        if not self.alpha > 0:
            raise ValueError(f"alpha: expected > 0, got {self.alpha}")
        if self.layers is not None:
            self.layers = tuple(int(i) for i in self.layers)
            if not self.layers or any(i < 0 for i in self.layers):
                raise ValueError(f"layers: expected None or indices >= 0, got {self.layers}")


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus ``scaling * B @ A``; ``merged_weight_bias`` folds them."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.rank, self.scaling = rank, alpha / rank
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # two thin matmuls instead of materialising the merged weight every step
        return self.base(x) + (x @ self.lora_A.t() @ self.lora_B.t()) * self.scaling

    def merged_weight_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W + scaling * B @ A, b)``: what ``backbone.linear_weight_bias`` hardens."""
        return self.base.weight + self.scaling * (self.lora_B @ self.lora_A), self.base.bias


def _image_side(in_features: int, pool: int, path: str) -> int:
    side = math.isqrt(in_features)
    if side * side != in_features or side % pool:
        raise ValueError(f"correction_pool: pools a square single-channel image input; the "
                         f"corrected layer {path!r} reads {in_features} inputs, expected side^2 "
                         f"with side divisible by {pool} (set correction_pool 1)")
    return side


class PooledCorrection(LoRALinear):
    """``W + scaling * B @ A' @ P``: a LoRA-form correction whose A' reads the flattened
    ``side x side`` input average-pooled over ``pool x pool`` patches (P: fixed, not stored;
    training/corrections.py's ``pool``)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, pool: int, path: str = "?"):
        super().__init__(base, rank, alpha)
        self.pool, self.side = pool, _image_side(base.in_features, pool, path)
        cells = (self.side // pool) ** 2
        if rank > cells:
            raise ValueError(f"correction_rank: expected at most {cells} with correction_pool "
                             f"{pool} ({cells} pooled inputs of {path!r}), got {rank}")
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, cells, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        img = x.reshape(-1, 1, self.side, self.side)
        cells = nn.functional.avg_pool2d(img, self.pool).reshape(*x.shape[:-1], -1)
        return self.base(x) + (cells @ self.lora_A.t() @ self.lora_B.t()) * self.scaling

    def full_a(self) -> torch.Tensor:
        """``A' @ P`` ([rank, side^2]): each cell's weight spread over its patch / pool^2."""
        c, k = self.side // self.pool, self.pool
        a = self.lora_A.reshape(self.rank, c, c).repeat_interleave(k, 1).repeat_interleave(k, 2)
        return a.reshape(self.rank, -1) / (k * k)

    def merged_weight_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.base.weight + self.scaling * (self.lora_B @ self.full_a()), self.base.bias


class LoRA(AdaptationMethod):
    """Low-rank updates on the frozen linear layers (default: r = 8 on all of them)."""

    name = "lora"
    label = "LoRA (r={rank})"
    Config = LoRAConfig

    def config_dict(self) -> dict:
        d = super().config_dict()
        if d["layers"] is not None:
            d["layers"] = list(d["layers"])
        return d

    def inject(self, model: nn.Module) -> None:
        linears = linear_modules(model)
        n = len(linears)
        chosen = range(n) if self.config.layers is None else self.config.layers
        for i in chosen:
            if i >= n:
                raise ValueError(
                    f"lora layers: index {i} out of range; the model has linear layers 0..{n - 1}"
                )
            path, linear = linears[i]
            set_module(model, path, LoRALinear(linear, self.config.rank, self.config.alpha))

    def overrides(self, model: nn.Module) -> dict[str, np.ndarray]:
        """The merged weights ``W + scaling * B @ A`` under the foundation's names."""
        return {f"{path}.weight": as_numpy(m.merged_weight_bias()[0])
                for path, m in model.named_modules() if isinstance(m, LoRALinear)}
