"""Calibration firing statistics -> keep masks -> compacted layers.

A hidden unit is *always off* for a mode when its hard gate never fires (``z <= t``) on the
mode's calibration set, or when its folded gain is exactly zero (its outgoing column is all
zero). Removing it deletes row j of W_l, b_l[j], t_l[j] and column j of W_{l+1}: exact on the
calibration set (and exact everywhere for zero-gain units).

``PruneConfig.below`` is an explicit tolerance: units firing on at most that fraction of the
calibration set are removed too (no longer exact; export/specialize.py guards the accuracy).
``round_to`` rounds each layer's kept count up to a multiple (adding back the most active
pruned units): onnxruntime's CPU Gemm works in 16-column panels, so 66 units cost as much time
as 80 (docs/speedup.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from taugate.spec import HardenedLayer, HardenedModel


@dataclass
class PruneConfig:
    below: float = 0.0  # prune units whose calibration firing rate is <= this (0: never fires)
    round_to: int = 1  # round each layer's kept units up to a multiple of this (1: no rounding)
    max_accuracy_drop: float = 0.005  # refuse pruning that loses more held-out accuracy

    def __post_init__(self) -> None:
        if not 0.0 <= self.below < 1.0:
            raise ValueError(f"below: expected a firing rate in [0, 1), got {self.below}")
        if int(self.round_to) != self.round_to or self.round_to < 1:
            raise ValueError(f"round_to: expected an integer >= 1, got {self.round_to}")
        self.round_to = int(self.round_to)
        if not 0.0 <= self.max_accuracy_drop <= 1.0:
            raise ValueError(
                f"max_accuracy_drop: expected an accuracy in [0, 1], got {self.max_accuracy_drop}")


class PruningGuardError(ValueError):
    """Pruning lost more held-out accuracy than ``PruneConfig.max_accuracy_drop`` allows."""

    def __init__(self, unpruned: float, pruned: float, limit: float, below: float, split: str,
                 mode: str | None = None):
        self.unpruned, self.pruned, self.limit = unpruned, pruned, limit
        who = f"mode {mode}: " if mode else ""
        super().__init__(
            f"{who}pruning refused: on the {split} split the pruned model's accuracy is "
            f"{pruned:.4f} against {unpruned:.4f} unpruned (hard-gated), a drop of "
            f"{unpruned - pruned:.4f} > the limit max_accuracy_drop={limit:g} "
            f"(prune-below={below:g}); lower --prune-below or raise --max-accuracy-drop"
        )


def firing_rates(model: HardenedModel, x: np.ndarray, batch_size: int = 8192) -> list[np.ndarray]:
    """Per hidden layer, the fraction of rows of ``x`` on which each unit's gate fires."""
    counts = [np.zeros(w, np.int64) for w in model.widths]
    for i in range(0, len(x), batch_size):
        _, hidden = model.forward(x[i : i + batch_size], return_hidden=True)
        for c, h in zip(counts, hidden):
            c += (h != 0).sum(axis=0)
    n = max(len(x), 1)
    return [c / n for c in counts]


def keep_masks(
    model: HardenedModel, rates: list[np.ndarray], config: PruneConfig | None = None
) -> list[np.ndarray]:
    """Boolean keep mask per hidden layer: fires more often than ``config.below`` and has a
    non-zero outgoing column. At least one unit per layer is always kept."""
    config = config or PruneConfig()
    masks = []
    for i, rate in enumerate(rates):
        outgoing = np.any(model.layers[i + 1].weight != 0, axis=0)
        keep = (rate > config.below) & outgoing
        if not keep.any():
            keep[int(np.argmax(rate))] = True
        masks.append(round_up(keep, rate, outgoing, config.round_to))
    return masks


def round_up(keep: np.ndarray, rate: np.ndarray, outgoing: np.ndarray, multiple: int) -> np.ndarray:
    """``keep`` with the most active pruned units (non-zero outgoing column first) added back
    until the count is a multiple of ``multiple`` (or every unit is kept)."""
    target = min(-(-int(keep.sum()) // multiple) * multiple, keep.size)
    missing = target - int(keep.sum())
    if missing <= 0:
        return keep
    keep = keep.copy()
    candidates = np.flatnonzero(~keep)
    # lexsort: last key is primary -> useful units first, then by firing rate
    best = candidates[np.lexsort((-rate[candidates], ~outgoing[candidates]))][:missing]
    keep[best] = True
    return keep


def compact(model: HardenedModel, masks: list[np.ndarray]) -> HardenedModel:
    """Remove the hidden units whose mask is False (rows here, columns in the next layer)."""
    if len(masks) != len(model.hidden):
        raise ValueError(f"masks: expected {len(model.hidden)} (one per hidden layer), got {len(masks)}")
    layers = list(model.layers)
    for i, keep in enumerate(masks):
        idx = np.flatnonzero(keep)
        cur, nxt = layers[i], layers[i + 1]
        layers[i] = HardenedLayer(
            weight=np.ascontiguousarray(cur.weight[idx]),
            bias=np.ascontiguousarray(cur.bias[idx]),
            threshold=np.ascontiguousarray(cur.threshold[idx]),
        )
        layers[i + 1] = HardenedLayer(
            weight=np.ascontiguousarray(nxt.weight[:, idx]),
            bias=nxt.bias,
            threshold=nxt.threshold,
        )
    return HardenedModel(layers=tuple(layers), meta=dict(model.meta))


def kept_indices(masks: list[np.ndarray]) -> list[list[int]]:
    return [np.flatnonzero(m).astype(int).tolist() for m in masks]
