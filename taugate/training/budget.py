"""How long an adapter trains, and the warnings when that was not enough.

The paper's protocol is one epoch at batch 256: about 215 optimizer steps on MNIST's 55,000
training rows, but 2 on a 500-row mode, which leaves the mode where the frozen model had it.
Adaptation therefore runs at least :data:`ADAPT_MIN_STEPS` optimizer steps (more epochs on
small data; unchanged on MNIST's sizes), and :func:`adaptation_notes` says when a mode still
took few steps or gained nothing over the frozen model, naming the flags that change it.
"""

from __future__ import annotations

from dataclasses import dataclass

ADAPT_MIN_STEPS = 200  # <= 215 = one epoch of MNIST's training split: the paper's runs keep 1 epoch
FEW_STEPS = 100  # fewer optimizer steps than this rarely moves tau/gamma far from their start
NO_GAIN = 0.005  # within half a point of the frozen model: the adapter changed nothing useful
# how each front end names the settings a note points at
CLI_FLAGS = {"length": "--adapt-min-steps or --adapt-epochs", "lr": "--adapt-lr"}
PYTHON_FLAGS = {"length": "adapt_min_steps= or adapt_epochs=", "lr": "adapt_lr="}


@dataclass(frozen=True)
class AdaptOutcome:
    """What one adaptation did: optimizer steps, and test accuracy frozen vs adapted."""

    steps: int
    frozen: float
    adapted: float
    seen_in_pretraining: bool = False  # the foundation was pretrained on this mode here


def adaptation_notes(mode: str, outcome: AdaptOutcome, flags: dict | None = None) -> list[str]:
    """Warnings for one adapted mode, naming the settings in ``flags`` (:data:`CLI_FLAGS`
    or :data:`PYTHON_FLAGS`): too few optimizer steps, or test accuracy no better than the
    frozen model's (not for a mode the foundation was pretrained on, where a mode's gain is
    compute rather than accuracy, unless it got worse)."""
    flags = flags or CLI_FLAGS
    steps, frozen, adapted = outcome.steps, outcome.frozen, outcome.adapted
    notes = []
    if steps < FEW_STEPS:
        notes.append(f"{mode}: the adapter took only {steps} optimizer steps; train it longer "
                     f"with {flags['length']}")
    if adapted != adapted or frozen != frozen:  # no test rows: nothing to compare
        return notes
    worse = adapted < frozen - NO_GAIN
    if worse or (not outcome.seen_in_pretraining and adapted < frozen + NO_GAIN):
        what = "below" if worse else "no better than"
        notes.append(f"{mode}: test accuracy {adapted:.4f} after {steps} optimizer steps is "
                     f"{what} the frozen model's {frozen:.4f}; train longer with "
                     f"{flags['length']}, or raise {flags['lr']}")
    return notes
