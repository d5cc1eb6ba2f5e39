"""The gated units of an adapted model: which sites it has, their gate modules, hard/soft.

A method wraps a frozen copy of a foundation and records the :class:`~taugate.training.targets.
Targets` it adapted on the copy (``model.taugate_targets``); everything downstream (the sparsity
steps, hardening into a GatedSpec, the experiment's gate statistics) reads them from here
instead of poking at a concrete model class.
"""

from __future__ import annotations

import torch
from torch import nn

from taugate.training.targets import Site, Targets, get_module, resolve_targets

ATTR = "taugate_targets"


def default_targets(model: nn.Module, patterns=None) -> Targets:
    """The targets of a built-in family (which knows an example input); user models pass
    their own (``resolve_targets(model, example, patterns)``)."""
    example = getattr(model, "example_input", None)
    if example is None:
        raise ValueError(
            f"{type(model).__name__}: no example input to find targets with; pass targets="
            f"taugate.training.targets.resolve_targets(model, example_batch, patterns)")
    return resolve_targets(model, example(), patterns)


def attach(model: nn.Module, targets: Targets) -> None:
    setattr(model, ATTR, targets)


def targets_of(model: nn.Module) -> Targets:
    """The targets a method attached to ``model`` (a bare built-in family: all its sites)."""
    targets = getattr(model, ATTR, None)
    if targets is None and getattr(model, "example_input", None) is not None:
        return default_targets(model)
    if targets is None:
        raise ValueError(f"{type(model).__name__}: not wrapped by an adaptation method "
                         f"(no {ATTR}); call method.wrap(foundation) first")
    return targets


def gate_modules(model: nn.Module) -> list[tuple[Site, nn.Module]]:
    """Each site with the module now at its activation path, in forward order."""
    return [(s, get_module(model, s.act)) for s in targets_of(model).sites]


def set_hard(model: nn.Module, hard: bool) -> nn.Module:
    """Switch every gated activation of ``model`` between its smooth and its hard form."""
    from taugate.training.families.mlp import UnitActivation

    for m in model.modules():
        if isinstance(m, UnitActivation):
            m.hard = hard
    return model


def gates(model: nn.Module) -> list[torch.Tensor]:
    """Gate values recorded by the last forward pass, one tensor per gated site."""
    from taugate.training.families.mlp import UnitActivation

    return [m.last_gate for m in model.modules()
            if isinstance(m, UnitActivation) and m.last_gate is not None]


def clear_gates(model: nn.Module) -> None:
    """Drop recorded gates (graph outputs, which deepcopy refuses; stale ones must not count)."""
    from taugate.training.families.mlp import UnitActivation

    for m in model.modules():
        if isinstance(m, UnitActivation):
            m.last_gate = None
