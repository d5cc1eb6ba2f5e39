"""One mode's hardened model -> calibration firing rates -> pruned, compacted model + report.

Pure numpy: the calibration and test arrays come in, a :class:`PrunedMode` comes out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from taugate.export.hardened import HardenedModel
from taugate.export.prune import PruneConfig, compact, firing_rates, keep_masks, kept_indices


@dataclass
class PrunedMode:
    """A mode's compacted model and the facts measured while pruning it."""

    model: HardenedModel  # compacted
    unpruned: HardenedModel  # hardened, every unit kept
    masks: list[np.ndarray]
    rates: list[np.ndarray]  # calibration firing rate of every unit, per hidden layer
    calibration_accuracy: float  # compacted model
    test_accuracy: float  # compacted model, on the mode's own held-out test set
    unpruned_test_accuracy: float  # hard-gated model before pruning, same test set

    @property
    def kept_indices(self) -> list[list[int]]:
        return kept_indices(self.masks)


def accuracy(model: HardenedModel, x: np.ndarray, y: np.ndarray, batch_size: int = 8192) -> float:
    """Top-1 accuracy of a hardened model (numpy forward)."""
    hits = 0
    for i in range(0, len(x), batch_size):
        hits += int((model.forward(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
    return hits / max(len(x), 1)


def prune_mode(
    model: HardenedModel,
    calibration: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    config: PruneConfig | None = None,
) -> PrunedMode:
    """Prune the units of ``model`` that (almost) never fire on the calibration set."""
    config = config or PruneConfig()
    cal_x, cal_y = calibration
    test_x, test_y = test
    rates = firing_rates(model, cal_x)
    masks = keep_masks(model, rates, config)
    small = compact(model, masks)
    return PrunedMode(
        model=small,
        unpruned=model,
        masks=masks,
        rates=rates,
        calibration_accuracy=accuracy(small, cal_x, cal_y),
        test_accuracy=accuracy(small, test_x, test_y),
        unpruned_test_accuracy=accuracy(model, test_x, test_y),
    )
