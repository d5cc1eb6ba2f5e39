"""The extension point: an adaptation method wraps a frozen backbone, names its trainable
parameters, and hardens the trained model into the plain per-layer form (export/hardened.py).

Adding a method = one file here + one entry in ``METHODS`` (methods/__init__.py) + one row in
the methods test table.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from torch import nn

from taugate.export.hardened import HardenedModel
from taugate.training.backbone import MLP, harden_mlp


@dataclass
class NoConfig:
    """A method without options."""


class AdaptationMethod:
    """Base class: subclasses set ``name`` and ``Config`` and implement :meth:`inject`."""

    name: ClassVar[str] = "base"
    Config: ClassVar[type] = NoConfig

    def __init__(self, config=None):
        if config is None:
            config = self.Config()
        elif isinstance(config, dict):
            config = self.Config(**config)
        if not isinstance(config, self.Config):
            raise TypeError(
                f"{self.name}: expected a {self.Config.__name__} config, got {type(config).__name__}"
            )
        self.config = config

    def config_dict(self) -> dict:
        return asdict(self.config)

    def wrap(self, foundation: MLP) -> MLP:
        """A deep copy of ``foundation`` with every weight frozen and this method injected."""
        model = copy.deepcopy(foundation)
        for p in model.parameters():
            p.requires_grad_(False)
        self.inject(model)
        return model

    def inject(self, model: MLP) -> None:
        """Add this method's parameters to ``model`` in place (they require grad)."""
        raise NotImplementedError

    def trainable(self, model: MLP) -> dict[str, nn.Parameter]:
        """The parameters this method trains, by their name in ``model``."""
        return {n: p for n, p in model.named_parameters() if p.requires_grad}

    def penalty(self, model: MLP) -> torch.Tensor | None:
        """A term added to the loss after each forward pass (None: none)."""
        return None

    def after_step(self, model: MLP, lr: float) -> None:
        """Called after each optimizer step (e.g. a proximal update); default: nothing."""

    def harden(self, model: MLP, meta: dict | None = None) -> HardenedModel:
        """The plain per-layer form: merged weights, thresholds, gains folded forward."""
        return harden_mlp(model, {"method": self.name, **(meta or {})})
