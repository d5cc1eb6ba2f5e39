"""The extension point: an adaptation method wraps a frozen model, names its trainable
parameters, and hardens the trained model for export.

Methods work on *targets* (training/targets.py): the sites ``producer Linear -> activation ->
consumer Linear`` of any torch model, found by module path. Two hardened forms exist
(docs/bundle-v2.md, section 1): :meth:`AdaptationMethod.harden_spec` (any model: a
``GatedSpec`` of thresholds, gains and the state-dict entries the method changed) and
:meth:`AdaptationMethod.harden` (the paper's chain MLP: per-layer ``HardenedModel``).

Adding a method = one file here + one entry in ``METHODS`` (methods/__init__.py) + one row in
the methods test table; the experiment's tables and figure pick it up from the registry.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from taugate.spec import GatedSpec, GatedUnits, HardenedModel
from taugate.training.gating import attach, default_targets, targets_of
from taugate.training.methods.options import build_config
from taugate.training.targets import Targets


@dataclasses.dataclass
class NoConfig:
    """A method without options."""


class AdaptationMethod:
    """Base class: subclasses set ``name`` and ``Config`` and implement :meth:`inject`."""

    name: ClassVar[str] = "base"
    label: ClassVar[str] = ""  # row label in tables and figures (str.format over the config)
    table: ClassVar[str] = "main"  # the experiment table it is a row of: "main" | "ablation"
    Config: ClassVar[type] = NoConfig

    def __init__(self, config=None):
        if config is None or isinstance(config, dict):
            config = build_config(self.Config, config, f"method {self.name!r}")
        if not isinstance(config, self.Config):
            raise TypeError(
                f"{self.name}: expected a {self.Config.__name__} config, got {type(config).__name__}"
            )
        self.config = config

    def config_dict(self) -> dict:
        return dataclasses.asdict(self.config)

    def display_label(self) -> str:
        """The method's row label, e.g. ``LoRA (r=8)``."""
        return (self.label or self.name).format(**self.config_dict())

    def wrap(self, foundation: nn.Module, targets: Targets | None = None) -> nn.Module:
        """A deep copy of ``foundation`` with every weight frozen and this method injected at
        ``targets`` (default: every site of a built-in family, training/targets.py)."""
        from taugate.training.rewrite import gateable

        targets = targets if targets is not None else default_targets(foundation)
        model = copy.deepcopy(foundation)
        for p in model.parameters():
            p.requires_grad_(False)
        model = gateable(model, targets.sites)  # BatchNorm folded, F.* calls as modules
        attach(model, targets)
        self.inject(model)
        return model

    def inject(self, model: nn.Module) -> None:
        """Add this method's parameters to ``model`` in place (they require grad)."""
        raise NotImplementedError

    def trainable(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """The parameters this method trains, by their name in ``model``."""
        return {n: p for n, p in model.named_parameters() if p.requires_grad}

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        """A term added to the loss after each forward pass (None: none)."""
        return None

    def after_step(self, model: nn.Module, lr: float) -> None:
        """Called after each optimizer step (e.g. a proximal update); default: nothing."""

    def retune_config(self):
        """The retune options (sparsity.RetuneConfig) when the method retunes, else None."""
        return

    def harden(self, model: nn.Module, meta: dict | None = None) -> HardenedModel:
        """The plain per-layer form (merged weights, thresholds, gains folded) of a family that
        has one (the paper's MLP); TypeError for any other."""
        from taugate.training.families import family_of

        return family_of(model).harden(model, {"method": self.name, **(meta or {})})

    # -- the GatedSpec (any model) -----------------------------------------------------------
    def gated_units(self, model: nn.Module) -> list[GatedUnits]:
        """Per site, the hard gate's threshold and the gain (default: no gate, gain 1, on ReLU
        sites only, where ``relu(z) = z * 1[z > 0]`` is exact; GELU sites stay ungated)."""
        return [GatedUnits(s.producer, s.consumer, s.activation, np.zeros(s.units, np.float32),
                           np.ones(s.units, np.float32), None if s.functional else s.act,
                           s.up, s.norm)
                for s in targets_of(model).sites if s.activation == "relu"]

    def overrides(self, model: nn.Module) -> dict[str, np.ndarray]:
        """Foundation state-dict entries this method changed, as whole tensors (default: none)."""
        return {}

    def factors(self, model: nn.Module) -> dict:
        """Overrides that are the backbone tensor plus a low-rank product, as their factors
        (``spec.LowRankFactors``; a shared bundle stores those instead; default: none)."""
        return {}

    @torch.no_grad()
    def harden_spec(self, model: nn.Module, meta: dict | None = None) -> GatedSpec:
        """The method-agnostic form export compacts (docs/bundle-v2.md, section 1)."""
        return GatedSpec(targets=tuple(self.gated_units(model)), overrides=self.overrides(model),
                         meta={"method": self.name, **(meta or {})},
                         factors=self.factors(model))


def as_numpy(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().float().cpu().numpy(), np.float32)
