"""Adaptation methods: one file each, registered here by name (the extension point)."""

from __future__ import annotations

from taugate.training.methods.base import AdaptationMethod
from taugate.training.methods.bitfit import BitFit
from taugate.training.methods.frozen import Frozen
from taugate.training.methods.full_ft import FullFT
from taugate.training.methods.gain_only import GainOnly
from taugate.training.methods.lora import LoRA
from taugate.training.methods.tau_only import TauOnly
from taugate.training.methods.taugate import TauGate

#: In table order: the paper's Table 1 rows, then its Table 2 ablations (``table``). A method
#: added here appears in `taugate reproduce`'s tables and figure with no other list to edit.
METHODS: dict[str, type[AdaptationMethod]] = {
    "frozen": Frozen,
    "bitfit": BitFit,
    "taugate": TauGate,
    "lora": LoRA,
    "full_ft": FullFT,
    "gain_only": GainOnly,
    "tau_only": TauOnly,
}


def get_method(name: str, config=None) -> AdaptationMethod:
    """An instance of the method called ``name`` (with a config object or dict)."""
    if name not in METHODS:
        raise ValueError(f"method {name!r}: expected one of {', '.join(sorted(METHODS))}")
    return METHODS[name](config)


__all__ = ["METHODS", "AdaptationMethod", "get_method"]
