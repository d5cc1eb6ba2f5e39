"""Train and evaluate: one seeded SGD loop for the foundation and for every adaptation method.

The paper's protocol (arXiv 2602.11726): SGD with momentum, batch 256; the loss is
cross-entropy plus whatever penalty the method adds (TauGate: lambda * mean gate, Eq. 5).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from taugate.summaries import top1
from taugate.training.guards import DivergenceGuard
from taugate.training.sources import Split

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    epochs: int = 1
    batch_size: int = 256
    lr: float = 0.05
    momentum: float = 0.9
    seed: int = 0  # shuffling order (and nothing else: weights are seeded by their creator)
    optimizer: str = "sgd"  # "sgd" (with momentum; the paper) or "adam" (the vit family)
    min_steps: int = 0  # at least this many optimizer steps: small data gets more epochs

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs: expected >= 1, got {self.epochs}")
        if self.min_steps < 0:
            raise ValueError(f"min_steps: expected >= 0, got {self.min_steps}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"lr: expected > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum: expected in [0, 1), got {self.momentum}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer: expected one of {', '.join(OPTIMIZERS)}, got "
                             f"{self.optimizer!r}")


    def steps_per_epoch(self, rows: int) -> int:
        """Optimizer steps in one pass over ``rows`` examples (the last batch may be short)."""
        return max(1, (rows + self.batch_size - 1) // self.batch_size)

    def epochs_for(self, rows: int) -> int:
        """Whole epochs over ``rows`` examples: ``epochs``, or more where that many would take
        fewer than ``min_steps`` optimizer steps (500 rows at batch 256 are 2 steps an epoch)."""
        per_epoch = self.steps_per_epoch(rows)
        return max(self.epochs, -(-self.min_steps // per_epoch))

    def steps_for(self, rows: int) -> int:
        """The optimizer steps :func:`train` takes over ``rows`` examples."""
        return self.epochs_for(rows) * self.steps_per_epoch(rows)


OPTIMIZERS = ("sgd", "adam")


def make_optimizer(params: list, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum)


class Progress:
    """A one-line progress report on stderr (no dependency; quiet when disabled)."""

    def __init__(self, label: str, total: int, enabled: bool = True):
        self.label, self.total, self.enabled, self.n = label, max(total, 1), enabled, 0
        self._last = -1

    def update(self, n: int = 1, **info: float) -> None:
        self.n += n
        pct = int(100 * self.n / self.total)
        if self.enabled and (pct != self._last or self.n == self.total):
            self._last = pct
            extra = " ".join(f"{k}={v:.4f}" for k, v in info.items())
            sys.stderr.write(f"\r{self.label}: {pct:3d}% ({self.n}/{self.total}) {extra}   ")
            if self.n >= self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()


def batches(split: Split, batch_size: int, generator: torch.Generator | None) -> Iterable:
    n = len(split)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for i in range(0, n, batch_size):
        idx = order[i : i + batch_size]
        yield split.x[idx], split.y[idx]


def train(
    model: nn.Module,
    params: Iterable[nn.Parameter],
    data: Split,
    config: TrainConfig,
    device: torch.device | str = "cpu",
    penalty: Callable[[nn.Module], torch.Tensor] | None = None,
    after_step: Callable[[nn.Module, float], None] | None = None,
    label: str = "train",
    progress: bool = True,
    objective: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    lr_scale: Callable[[int, int], float] | None = None,
    max_grad_norm: float | None = None,
) -> list[float]:
    """SGD with momentum (or Adam) over ``data`` for ``config.epochs`` (more where fewer would
    take under ``config.min_steps`` optimizer steps); returns the mean loss per epoch.

    ``objective(logits, x, y)`` replaces cross-entropy (e.g. distillation); ``penalty(model)``
    (a tensor, or None for nothing) is added to it after each forward; ``lr_scale(step,
    total_steps)`` multiplies ``config.lr`` (a schedule); ``after_step(model, lr)`` runs after
    each optimizer step (proximal updates); ``max_grad_norm`` clips the gradient's norm.
    A non-finite or exploding loss stops with :class:`~taugate.training.guards.TrainingDiverged`.
    """
    params = list(params)
    opt = make_optimizer(params, config)
    gen = torch.Generator().manual_seed(config.seed)
    epochs = config.epochs_for(len(data))
    steps = epochs * config.steps_per_epoch(len(data))
    bar = Progress(label, steps, enabled=progress)
    guard = DivergenceGuard(label)
    model.train()
    history, step, lr = [], 0, config.lr
    for _ in range(epochs):
        total, count = 0.0, 0
        for xb, yb in batches(data, config.batch_size, gen):
            if lr_scale is not None:
                lr = config.lr * lr_scale(step, steps)
                for group in opt.param_groups:
                    group["lr"] = lr
            xb, yb = xb.to(device), yb.to(device)
            logits = model(xb)
            if objective is None:
                loss = nn.functional.cross_entropy(logits, yb)
            else:
                loss = objective(logits, xb, yb)
            extra = penalty(model) if penalty is not None else None
            if extra is not None:
                loss = loss + extra
            guard.check(step, steps, float(loss.detach()))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if max_grad_norm is not None:
                nn.utils.clip_grad_norm_(params, max_grad_norm)
            opt.step()
            step += 1
            if after_step is not None:
                after_step(model, lr)
            total += float(loss.detach()) * len(yb)
            count += len(yb)
            bar.update(loss=total / count)
        history.append(total / max(count, 1))
    model.eval()
    return history


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, device="cpu", batch_size: int = 4096):
    """Logits for ``x`` (CPU tensor), computed in batches in eval mode."""
    model.eval()
    out = [model(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out)


def accuracy(model: nn.Module, split: Split, device="cpu") -> float:
    """Top-1 accuracy of ``model`` on ``split``."""
    return top1(predict(model, split.x, device).numpy(), split.y.numpy())
