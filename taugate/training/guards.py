"""Divergence guard: stop a training run whose loss is non-finite or exploding, with a hint.

Why: a diverged run would otherwise finish quietly and hand over a broken model (the sparse
recipe's retune on a mode the foundation never saw can reach a mean loss of 2.8e8). The guard
watches the loss of every step: a NaN/inf loss stops at once; a loss whose running mean (an
exponential moving average over ~20 steps, so a single noisy batch cannot trip it) climbs above
``factor`` times the loss the run started from (at least ``factor`` x 1.0, so a run starting
near zero loss is not stopped by ordinary noise) stops too. Healthy SGD never comes near that:
the loss of a run that learns goes down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

HINT = ("try a smaller learning rate (--lr for the foundation; --adapt-lr, --retune-lr-scale or "
        "--gain-lr-scale for an adapter) or a smaller penalty lambda (--unit-l1, "
        "--activity-lambda)")


class TrainingDiverged(RuntimeError):
    """The loss became non-finite or exploded; the message says where and what to change."""


@dataclass
class DivergenceGuard:
    """Call :meth:`check` with each step's loss; it raises :class:`TrainingDiverged`."""

    label: str = "train"  # names the run in the message (e.g. "retune rot-30")
    factor: float = 10.0  # exploding: running mean loss > factor x max(initial loss, 1)
    smoothing: float = 0.9  # EMA weight of the past (about 1 / (1 - 0.9) = 10-20 steps)

    def __post_init__(self) -> None:
        if self.factor <= 1:
            raise ValueError(f"factor: expected > 1, got {self.factor}")
        if not 0 <= self.smoothing < 1:
            raise ValueError(f"smoothing: expected in [0, 1), got {self.smoothing}")
        self.initial: float | None = None
        self.mean: float | None = None

    def check(self, step: int, total: int, loss: float) -> None:
        """Record ``loss`` of ``step`` (0-based, of ``total``); raise if the run diverged."""
        where = f"{self.label}: training diverged at step {step + 1}/{total}"
        if not math.isfinite(loss):
            raise TrainingDiverged(f"{where}: the loss is {loss}; {HINT}")
        if self.initial is None:
            self.initial, self.mean = loss, loss
            return
        self.mean = self.smoothing * self.mean + (1 - self.smoothing) * loss
        limit = self.factor * max(self.initial, 1.0)
        if self.mean > limit:
            raise TrainingDiverged(
                f"{where}: the running mean loss is {self.mean:.4g}, above {self.factor:g} x "
                f"the loss it started from ({self.initial:.4g}); {HINT}")
