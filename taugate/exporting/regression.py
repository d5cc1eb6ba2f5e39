"""No silent regression: a mode is exported only if it is not worse than the dense frozen model.

The pruning guard (specialize.py) compares a mode with its own unpruned hard-gated model, so a
mode whose training collapsed (every unit zeroed: accuracy 0.097) passed it. This rule compares
each mode with the model the user started from, the dense frozen foundation, on the mode's own
test set: a mode below it by more than ``max_drop`` is refused unless the caller allows it, and
then it comes with a warning. Pure: numbers in, an error or a warning out.
"""

from __future__ import annotations

from dataclasses import dataclass


class WorseThanDenseError(ValueError):
    """A mode's test accuracy is below the dense frozen model's by more than allowed."""


@dataclass(frozen=True)
class DenseComparison:
    """One mode's accuracy beside the dense frozen model's on the same test set."""

    mode: str
    accuracy: float  # the exported (hard-gated, compacted) mode
    dense_accuracy: float  # the dense frozen foundation, same test images

    @property
    def drop(self) -> float:
        return self.dense_accuracy - self.accuracy

    def message(self, max_drop: float) -> str:
        return (f"mode {self.mode}: test accuracy {self.accuracy:.4f} is below the dense frozen "
                f"model's {self.dense_accuracy:.4f} on the same test set by {self.drop:.4f} "
                f"(> --max-accuracy-drop {max_drop:g})")


def check_not_worse(comparisons: list[DenseComparison], max_drop: float,
                    allow_worse: bool = False) -> list[str]:
    """Raise :class:`WorseThanDenseError` naming every mode worse than dense by more than
    ``max_drop``; with ``allow_worse`` return those as warnings instead."""
    if max_drop < 0:
        raise ValueError(f"max_drop: expected >= 0, got {max_drop}")
    # a tiny epsilon: equal accuracies on the same rows must never trip the rule
    worse = [c.message(max_drop) for c in comparisons if c.drop > max_drop + 1e-12]
    if worse and not allow_worse:
        raise WorseThanDenseError(
            "refused: " + "; ".join(worse) + ". Retrain the mode (e.g. without --sparse, or a "
            "smaller --unit-l1), raise --max-accuracy-drop, or pass --allow-worse to export it "
            "anyway")
    return [w + "; exported anyway (--allow-worse)" for w in worse]
