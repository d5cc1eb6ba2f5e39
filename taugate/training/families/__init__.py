"""Model families, one registry: the paper's ``mlp`` (default), a small ``vit``, and ``user``
(the user's own model from ``--model FILE.py:FACTORY``, already trained: not pretrained here)
and ``hf`` (a Hugging Face ``save_pretrained`` folder, ``--hf DIR``).

Each family is a :class:`Family` (families/base.py); every family is adapted the same way,
through its target sites (training/targets.py).
"""

from __future__ import annotations

from torch import nn

from taugate.training.families.base import Family
from taugate.training.families.hf import HFFamily
from taugate.training.families.mlp import MLPFamily
from taugate.training.families.user import UserFamily
from taugate.training.families.vit import ViTFamily

FAMILIES: dict[str, Family] = {
    "mlp": MLPFamily(),
    "vit": ViTFamily(),
    "user": UserFamily(),
    "hf": HFFamily(),
}
USER = "user"


def get_family(name: str) -> Family:
    """The family called ``name``; an unknown name lists the valid ones."""
    if name not in FAMILIES:
        raise ValueError(f"--family: {name!r} is not a model family; valid: {', '.join(FAMILIES)} "
                         f"(user: --model FILE.py:FACTORY)")
    return FAMILIES[name]


def pretrainable() -> list[str]:
    """The families taugate can pretrain as a foundation (``--family`` choices)."""
    return [name for name, fam in FAMILIES.items() if fam.pretrainable]


def family_of(model: nn.Module) -> Family:
    """The family ``model`` belongs to (``user`` for any module no built-in family owns)."""
    for fam in FAMILIES.values():
        if fam.owns(model):
            return fam
    return FAMILIES[USER]


__all__ = ["FAMILIES", "USER", "Family", "family_of", "get_family", "pretrainable"]
