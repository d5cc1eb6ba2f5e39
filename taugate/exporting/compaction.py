"""One mode of any torch model: hard-gate, measure firing, choose kept units, compact, guard.

The one compaction of the exporter (docs/bundle-v2.md section 1), for every family:

- firing rates on the calibration split (per sample; per position for token models);
- keep masks: a unit is kept when it fires on more than ``PruneConfig.below`` of the
  calibration inputs and its gain is not exactly 0; each target keeps at least one unit, and
  ``round_to`` adds back the most active pruned units up to a multiple (exporting/prune.py);
- compaction in torch (exporting/compact.py), then the pruning guard: the compacted model
  against the unpruned hard-gated model on the test split (:class:`PruningGuardError`).

With ``below == 0`` compaction is exact on the calibration split, and that is checked
(identical predictions), so an exporter bug cannot pass as pruning.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from taugate.exporting.compact import KeptUnits, Surgery, compact, firing_rates, hard_gated
from taugate.exporting.prune import PruneConfig, PruningGuardError, round_up
from taugate.spec import GatedSpec
from taugate.summaries import top1


class ParityError(AssertionError):
    """An exported or compacted model does not compute what the torch model computes (an
    exporter bug)."""


def logits(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """``model(x)`` in batches, without gradients."""
    with torch.no_grad():
        return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def accuracy_of(out: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of logits ``out`` (nan on an empty split)."""
    return top1(out, y) if len(y) else float("nan")


def keep_masks(spec: GatedSpec, rates: list[np.ndarray], config: PruneConfig) -> list[np.ndarray]:
    """Kept units per target: rate above ``config.below`` and gain not exactly 0; at least one
    unit per target (its most active: every graph stays valid); rounded up to
    ``config.round_to`` with the most active pruned units."""
    masks = []
    for target, rate in zip(spec.targets, rates):
        useful = target.gain != 0
        keep = (rate > config.below) & useful
        if not keep.any():
            keep[int(np.argmax(rate))] = True
        masks.append(round_up(keep, rate, useful, config.round_to))
    return masks


@dataclass
class CompactedMode(KeptUnits):
    """A mode compacted in torch and what was measured on the way."""

    name: str
    hard: nn.Module  # hard-gated, every unit kept
    small: nn.Module  # compacted
    plan: dict[str, Surgery]
    masks: list[np.ndarray]
    rates: list[np.ndarray]  # calibration firing rate of every unit, per target
    calibration_accuracy: float  # compacted
    test_accuracy: float  # compacted, on the mode's own test split
    unpruned_test_accuracy: float  # hard-gated before pruning, same rows
    dense_test_accuracy: float  # the dense frozen foundation, same rows
    test_firing_rates: list[np.ndarray] = field(default_factory=list)  # unpruned, test split

    @property
    def units(self) -> str:
        """``"76/128 119/128"``: kept / total per target."""
        return " ".join(f"{k}/{t}" for k, t in zip(self.units_kept, self.units_total))

    @property
    def kept_indices(self) -> list[list[int]]:
        return [np.flatnonzero(m).tolist() for m in self.masks]


def compact_mode(name: str, foundation: nn.Module, spec: GatedSpec, calibration: tuple,
                 test: tuple, prune: PruneConfig | None = None) -> CompactedMode:
    """Compact one mode of ``foundation`` (eval, cpu) described by ``spec``; ``calibration`` and
    ``test`` are (x, y) tensors. Raises :class:`PruningGuardError` when pruning costs more
    than ``prune.max_accuracy_drop`` test accuracy against the unpruned hard-gated model."""
    prune = prune or PruneConfig()
    (cal_x, cal_y), (test_x, test_y) = calibration, test
    hard = hard_gated(foundation, spec)
    rates = firing_rates(hard, spec, cal_x)
    masks = keep_masks(spec, rates, prune)
    small, plan = compact(foundation, spec, masks)
    small_cal = logits(small, cal_x)
    if prune.below == 0:
        hard_cal = logits(hard, cal_x)
        if not torch.equal(hard_cal.argmax(1), small_cal.argmax(1)):
            raise ParityError(f"{name}: the compacted model's calibration predictions differ "
                              f"from the hard-gated model's (max abs logit diff "
                              f"{float((hard_cal - small_cal).abs().max()):.3g})")
    test_acc = accuracy_of(logits(small, test_x), test_y)
    unpruned = accuracy_of(logits(hard, test_x), test_y)
    # a tiny epsilon: equal accuracies computed on the same rows must never trip the guard
    if unpruned - test_acc > prune.max_accuracy_drop + 1e-12:
        raise PruningGuardError(unpruned, test_acc, prune.max_accuracy_drop, prune.below,
                                "test", mode=name)
    return CompactedMode(
        name, hard, small, plan, masks, rates,
        calibration_accuracy=accuracy_of(small_cal, cal_y),
        test_accuracy=test_acc, unpruned_test_accuracy=unpruned,
        dense_test_accuracy=accuracy_of(logits(foundation, test_x), test_y),
        test_firing_rates=firing_rates(hard, spec, test_x) if len(test_x) else [])
