"""One mode's hardened model -> calibration firing rates -> pruned, compacted model + report.

Pure numpy: the calibration and test arrays come in, a :class:`PrunedMode` comes out.

The calibration split decides what is pruned; the accuracy guard compares the pruned model with
the unpruned hard-gated model on a *held-out* split that played no part in that decision: by
default the mode's test split (the pipeline passes it), or any split given as ``guard``. The
guard is a refuse/accept check, not a search, so it does not tune anything on the test split;
a user who iterates ``--prune-below`` against it should pass a separate ``guard`` split.
With ``below=0`` the pruned model is exact on the calibration split, but a unit that never fires
there could still fire on held-out data, so the guard is checked there too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from taugate.exporting.prune import (
    PruneConfig,
    PruningGuardError,
    compact,
    firing_rates,
    keep_masks,
    kept_indices,
)
from taugate.spec import HardenedModel
from taugate.summaries import top1


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
    guard_split: str = "test"  # where the accuracy guard compared pruned vs unpruned
    guard_accuracy: float | None = None  # pruned, on the guard split
    unpruned_guard_accuracy: float | None = None  # unpruned, on the guard split

    @property
    def accuracy_drop(self) -> float:
        """Held-out accuracy lost to pruning (unpruned - pruned, on the guard split)."""
        return float(self.unpruned_guard_accuracy - self.guard_accuracy)

    @property
    def kept_indices(self) -> list[list[int]]:
        return kept_indices(self.masks)


def accuracy(model: HardenedModel, x: np.ndarray, y: np.ndarray, batch_size: int = 8192) -> float:
    """Top-1 accuracy of a hardened model (numpy forward)."""
    if len(x) == 0:
        return 0.0
    return top1(np.concatenate([model.forward(x[i : i + batch_size])
                                for i in range(0, len(x), batch_size)]), y)


def prune_mode(
    model: HardenedModel,
    calibration: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    config: PruneConfig | None = None,
    guard: tuple[np.ndarray, np.ndarray] | None = None,
    guard_name: str = "held-out",
) -> PrunedMode:
    """Prune the units of ``model`` that fire on at most ``config.below`` of the calibration
    set (or have zero gain), and refuse (:class:`PruningGuardError`) when that costs more than
    ``config.max_accuracy_drop`` accuracy on ``guard`` (default: the ``test`` split)."""
    config = config or PruneConfig()
    cal_x, cal_y = calibration
    test_x, test_y = test
    rates = firing_rates(model, cal_x)
    masks = keep_masks(model, rates, config)
    small = compact(model, masks)
    test_acc, unpruned_test_acc = accuracy(small, test_x, test_y), accuracy(model, test_x, test_y)
    if guard is None:
        guard_name, guard_acc, unpruned_guard_acc = "test", test_acc, unpruned_test_acc
    else:
        guard_acc, unpruned_guard_acc = accuracy(small, *guard), accuracy(model, *guard)
    # a tiny epsilon: equal accuracies computed on the same rows must never trip the guard
    if unpruned_guard_acc - guard_acc > config.max_accuracy_drop + 1e-12:
        raise PruningGuardError(unpruned_guard_acc, guard_acc, config.max_accuracy_drop,
                                config.below, guard_name)
    return PrunedMode(
        model=small,
        unpruned=model,
        masks=masks,
        rates=rates,
        calibration_accuracy=accuracy(small, cal_x, cal_y),
        test_accuracy=test_acc,
        unpruned_test_accuracy=unpruned_test_acc,
        guard_split=guard_name,
        guard_accuracy=guard_acc,
        unpruned_guard_accuracy=unpruned_guard_acc,
    )
