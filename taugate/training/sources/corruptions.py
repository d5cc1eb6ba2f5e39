"""MNIST corruptions: the second built-in mode family (modes that are not rotations).

In the spirit of MNIST-C (Mu & Gilmer 2019): each name is one fixed, seeded transformation of
the pixels, applied once in memory:

``noise<sigma>``  additive Gaussian noise with std ``sigma`` (e.g. ``noise0.3``), clipped to [0, 1]
``blur`` / ``blur<sigma>``  Gaussian blur, 5x5 kernel, std ``sigma`` (default 1.0)
``invert``        ``1 - x`` (white digits become black on white)

Facts record the source, the corruption and its parameter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

_NAME = re.compile(r"^(noise|blur|invert)(\d+(?:\.\d+)?)?$")
KINDS = ("noise<sigma>", "blur", "blur<sigma>", "invert")


@dataclass(frozen=True)
class Corruption:
    name: str
    kind: str  # "noise" | "blur" | "invert"
    level: float | None  # noise/blur std; None for invert

    @classmethod
    def parse(cls, name: str) -> Corruption:
        m = _NAME.match(name)
        kind, level = (m.group(1), m.group(2)) if m else (None, None)
        if m is None or (kind == "invert" and level) or (kind == "noise" and not level):
            raise ValueError(
                f"mode {name!r}: expected an MNIST mode 'rot<degrees>' (e.g. rot0, rot45, rot-30) "
                f"or a corruption {', '.join(KINDS)} (e.g. noise0.3, blur, invert)")
        value = float(level) if level else (1.0 if kind == "blur" else None)
        if value is not None and not value > 0:
            raise ValueError(f"mode {name!r}: the {kind} level must be > 0")
        return cls(name, kind, value)

    @property
    def facts(self) -> dict:
        facts = {"source": "mnist-corruption", "corruption": self.kind}
        if self.level is not None:
            facts["sigma"] = self.level
        return facts

    def apply(self, images: torch.Tensor, seed: int) -> torch.Tensor:
        """uint8 images [N, 28, 28] -> float32 [N, 784] in [0, 1] (seeded where random)."""
        x = images.to(torch.float32).div_(255.0)
        if self.kind == "noise":
            g = torch.Generator().manual_seed(seed)
            x = x + self.level * torch.randn(x.shape, generator=g)
        elif self.kind == "blur":
            from torchvision.transforms.functional import gaussian_blur

            x = gaussian_blur(x.unsqueeze(1), [5, 5], [self.level, self.level]).squeeze(1)
        elif self.kind == "invert":
            x = 1.0 - x
        return x.reshape(x.shape[0], -1).clamp_(0.0, 1.0).contiguous()
