"""BatchNorm folded before export: the foundation every graph of the bundle is built from.

A site ``Linear -> BatchNorm1d -> act`` (or ``Conv2d -> BatchNorm2d -> act``) is gated on the
normalized pre-activation, so its units can be removed only once the (eval-mode) BatchNorm is
part of the producer. The adapted model folded it when training (training/rewrite.py); export
folds the foundation the same way, with the same arithmetic, so the dense graph, the compacted
modes and the shared backbone's tensors are all of the folded form (exact in eval mode).
"""

from __future__ import annotations

import copy

from torch import nn

from taugate.spec import GatedSpec
from taugate.training.rewrite import fold_norms


def folded_foundation(foundation: nn.Module, specs: list[GatedSpec]) -> nn.Module:
    """``foundation`` itself when no target has a norm, else a folded deep copy. A mode's
    override of a folded BatchNorm's tensors is refused (it would be lost)."""
    pairs = {(t.producer, t.norm) for s in specs for t in s.targets if t.norm is not None}
    if not pairs:
        return foundation
    norms = {norm for _, norm in pairs}
    for spec in specs:
        bad = sorted(k for k in spec.overrides if k.rpartition(".")[0] in norms)
        if bad:
            raise ValueError(f"overrides {bad}: tensors of a BatchNorm that export folds into "
                             f"its Linear; adapt the Linear instead")
    return fold_norms(copy.deepcopy(foundation).eval(), sorted(pairs))
