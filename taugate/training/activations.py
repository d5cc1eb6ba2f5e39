"""The unit-wise activations a site may have, as modules or as functional calls.

An activation *kind* is a string a GatedSpec and a saved adapter record: ``relu``, ``gelu``
(exact), ``gelu_tanh``, ``silu``, ``mish``, ``leaky_relu:<slope>``. Every one has
``act(0) == 0``, which is what makes the exported hard gate exact: gating the producer's output,
``act(z * 1[z > t]) == act(z) * 1[z > t]``. Only ReLU is also zero *below* zero; for the others
the gate removes ``act(z)`` for ``z <= t`` too (a small negative output for SiLU, GELU and
Mish, ``slope * z`` for LeakyReLU): see docs/byom.md, "Activations that are not zero below 0".
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import nn

#: kind -> the module that computes it (leaky_relu takes its slope from the kind string)
_MODULES = {"relu": nn.ReLU, "silu": nn.SiLU, "mish": nn.Mish,
            "gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU(approximate="tanh")}

#: functional calls torch.fx records (call_function targets) -> kind
_FUNCTIONS = {F.relu: "relu", torch.relu: "relu", F.silu: "silu", F.mish: "mish",
              F.gelu: "gelu", F.leaky_relu: "leaky_relu"}
#: tensor methods (call_method targets) -> kind
_METHODS = {"relu": "relu"}

#: elementwise multiplication in a traced graph (the gated FFN's act(gate(x)) * up(x))
MUL = (operator.mul, torch.mul)


def valid(kind: str) -> bool:
    """Whether ``kind`` names a supported activation."""
    if kind in _MODULES:
        return True
    name, _, slope = kind.partition(":")
    try:
        return name == "leaky_relu" and float(slope) >= 0
    except ValueError:
        return False


def kind_of_module(module: nn.Module) -> str | None:
    """The kind of an activation module, or None for a module that is not one. A module may
    name its own kind with a ``site_kind`` attribute (the gated ones of training/methods/)."""
    own = getattr(module, "site_kind", None)
    if isinstance(own, str) and valid(own):
        return own
    if isinstance(module, nn.GELU):
        return "gelu" if module.approximate == "none" else "gelu_tanh"
    if isinstance(module, nn.LeakyReLU):
        return f"leaky_relu:{float(module.negative_slope)!r}"
    for kind, cls in (("relu", nn.ReLU), ("silu", nn.SiLU), ("mish", nn.Mish)):
        if isinstance(module, cls):
            return kind
    return None


def kind_of_call(op: str, target, args: tuple, kwargs: dict) -> str | None:
    """The kind of a traced functional call (``op``: torch.fx's ``call_function`` or
    ``call_method``), or None. ``inplace=True`` is fine: the gate replaces the call."""
    kind = _FUNCTIONS.get(target) if op == "call_function" else \
        _METHODS.get(target) if op == "call_method" else None
    if kind == "gelu":
        approx = kwargs.get("approximate", args[1] if len(args) > 1 else "none")
        return {"none": "gelu", "tanh": "gelu_tanh"}.get(approx) if isinstance(approx, str) \
            else None
    if kind == "leaky_relu":
        slope = kwargs.get("negative_slope", args[1] if len(args) > 1 else 0.01)
        return f"leaky_relu:{float(slope)!r}" if isinstance(slope, (int, float)) else None
    return kind


def module_for(kind: str) -> nn.Module:
    """A fresh module computing ``kind`` (ValueError naming the valid kinds otherwise)."""
    if not valid(kind):
        raise ValueError(f"activation: expected one of {', '.join(sorted(_MODULES))} or "
                         f"leaky_relu:<slope>, got {kind!r}")
    if kind.startswith("leaky_relu"):
        return nn.LeakyReLU(float(kind.partition(":")[2]))
    return _MODULES[kind]()


def apply(kind: str, z: torch.Tensor) -> torch.Tensor:
    """``act(z)`` for ``kind`` (bit for bit what the model's own module or call computes)."""
    if kind == "relu":
        return torch.relu(z)
    if kind == "gelu":
        return F.gelu(z)
    if kind == "gelu_tanh":
        return F.gelu(z, approximate="tanh")
    if kind == "silu":
        return F.silu(z)
    if kind == "mish":
        return F.mish(z)
    if valid(kind) and kind.startswith("leaky_relu"):
        return F.leaky_relu(z, float(kind.partition(":")[2]))
    raise ValueError(f"activation: unsupported kind {kind!r}")
