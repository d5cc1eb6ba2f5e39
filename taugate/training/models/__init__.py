"""Model families: the paper's ``mlp`` (default), a small ``vit``, and the user's own model.

A built-in family is a config dataclass plus a module class, registered in ``FAMILIES``; taugate
can pretrain it as a foundation. A ``user`` model comes from ``--model FILE.py:FACTORY`` (and
``--weights``), already trained (models/user.py). Every family is adapted the same way: through
its target sites (training/targets.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch import nn

from taugate.training.backbone import MLP, BackboneConfig
from taugate.training.models.vit import ViT, ViTConfig


@dataclass(frozen=True)
class Family:
    name: str
    Config: type  # the family's config dataclass
    Model: type  # nn.Module class built from it
    optimizer: str  # foundation pretraining defaults (the CLI's, when not given)
    lr: float


FAMILIES: dict[str, Family] = {
    "mlp": Family("mlp", BackboneConfig, MLP, optimizer="sgd", lr=0.05),
    "vit": Family("vit", ViTConfig, ViT, optimizer="adam", lr=1e-3),
}
USER = "user"  # a model from --model FILE.py:FACTORY


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"--family: {name!r} is not a model family; valid: "
                         f"{', '.join(FAMILIES)} (or --model FILE.py:FACTORY for your own)")
    return FAMILIES[name]


def family_config(name: str, values: dict | None):
    """The family's config from a dict; an unknown key names the valid ones."""
    fam = get_family(name)
    values = dict(values or {})
    valid = [f.name for f in dataclasses.fields(fam.Config)]
    unknown = [k for k in values if k not in valid]
    if unknown:
        raise ValueError(f"{name} config: unknown key(s) {', '.join(map(repr, unknown))}; "
                         f"valid: {', '.join(valid)}")
    return fam.Config(**values)


def build(name: str, config) -> nn.Module:
    """A fresh (untrained) model of family ``name``."""
    fam = get_family(name)
    if isinstance(config, dict) or config is None:
        config = family_config(name, config)
    return fam.Model(config)


def family_of(model: nn.Module) -> str:
    """``"mlp"``, ``"vit"``, or ``"user"`` for any other module."""
    for name, fam in FAMILIES.items():
        if type(model) is fam.Model:
            return name
    return USER


__all__ = ["FAMILIES", "USER", "Family", "ViT", "ViTConfig", "build", "family_config",
           "family_of", "get_family"]
