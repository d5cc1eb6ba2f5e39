"""What a model family is: :class:`Family`, whose methods answer every family question (how to
build, fit to data, save, load and harden a model of it), so no caller asks which family it has.
"""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar

from torch import nn

if TYPE_CHECKING:
    from taugate.spec import HardenedModel
    from taugate.training.backbone import FoundationConfig
    from taugate.training.sources.base import DataFacts


class Family:
    """A model family. Built-in families set ``Config`` (a dataclass) and ``Model`` (an
    ``nn.Module`` class built from it) and can be pretrained as a foundation."""

    name: ClassVar[str] = ""
    Config: ClassVar[type | None] = None
    Model: ClassVar[type | None] = None
    optimizer: ClassVar[str] = "sgd"  # foundation pretraining defaults (the CLI's, when not given)
    lr: ClassVar[float] = 0.05
    pretrainable: ClassVar[bool] = True

    def __repr__(self) -> str:
        return f"<family {self.name}>"

    def config(self, values: dict | None):
        """The family's config from a dict; an unknown key names the valid ones."""
        values = dict(values or {})
        valid = [f.name for f in dataclasses.fields(self.Config)]
        unknown = [k for k in values if k not in valid]
        if unknown:
            raise ValueError(f"{self.name} config: unknown key(s) {', '.join(map(repr, unknown))}; "
                             f"valid: {', '.join(valid)}")
        return self.Config(**values)

    def foundation_config(self, fc: FoundationConfig):
        """The family's config within a foundation's pretraining config."""
        return self.config(fc.family_config)

    def build(self, config=None) -> nn.Module:
        """A fresh (untrained) model from ``config`` (the family's config or a dict)."""
        if isinstance(config, dict) or config is None:
            config = self.config(config)
        return self.Model(config)

    def owns(self, model: nn.Module) -> bool:
        """Whether ``model`` (or its adapted copy) is of this family."""
        return self.Model is not None and type(model) is self.Model

    def fit_to_data(self, fc: FoundationConfig, facts: DataFacts) -> FoundationConfig:
        """``fc`` with input size, classes and normalization taken from the data."""
        cfg = {**fc.family_config, "num_classes": facts.classes, "input_mean": facts.mean,
               "input_std": facts.std}
        return replace(fc, family_config=cfg)

    def foundation_meta(self, model: nn.Module, factory: str | None = None) -> dict:
        """What a foundation's JSON records to rebuild ``model``'s modules."""
        return {"family": self.name, "family_config": model.config.to_dict()}

    def load(self, meta: dict) -> nn.Module:
        """The (untrained) modules a foundation's JSON describes."""
        return self.build(meta.get("family_config") or {})

    def harden(self, model: nn.Module, meta: dict) -> HardenedModel:
        """The plain per-layer form (a chain of Linear + threshold layers), where one exists."""
        raise TypeError(f"harden: the per-layer form exists for the mlp family only, got "
                        f"{type(model).__name__} ({self.name}); use harden_spec(model)")

    def for_export(self, model: nn.Module):
        """(``model`` in the form export lowers, a function mapping a mode's whole-tensor
        overrides to that form). Default: as it is. A family folds here what costs time at
        inference but not in training (the mlp family: its input normalization into the first
        layer), so every graph of the bundle, dense included, is built from the folded form."""
        return model, lambda overrides: overrides

    @property
    def per_layer(self) -> bool:
        """Whether :meth:`harden` gives the per-layer form for this family."""
        return type(self).harden is not Family.harden
