"""Training as functions: pretrain a foundation, adapt it per mode (export is
:mod:`taugate.exporting.pipeline`).

Every ``taugate`` command that trains (train, demo, reproduce, sweep) goes through these, so
there is one way to do each step.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from taugate.training.backbone import FoundationConfig
from taugate.training.budget import ADAPT_MIN_STEPS
from taugate.training.families import get_family
from taugate.training.loop import TrainConfig, train
from taugate.training.methods import AdaptationMethod, get_method
from taugate.training.sources import ModeData, ModeSource
from taugate.training.sparsity import retune
from taugate.training.targets import Targets


def foundation_model(config: FoundationConfig) -> nn.Module:
    """A fresh model of ``config.family`` (seed first: weights are seeded by their creator)."""
    family = get_family(config.family)
    return family.build(family.foundation_config(config))


def pretrain_foundation(
    data: ModeSource, config: FoundationConfig, device="cpu", progress: bool = True
) -> nn.Module:
    """Train a model of ``config.family`` on the mixture of ``config.modes`` (seeded,
    deterministic on CPU)."""
    torch.manual_seed(config.seed)
    model = foundation_model(config).to(device)
    mixture = data.mixture(list(config.modes))
    train(
        model,
        model.parameters(),
        mixture,
        TrainConfig(config.epochs, config.batch_size, config.lr, config.momentum, config.seed,
                    config.optimizer),
        device=device,
        label=f"foundation {'+'.join(config.modes)}",
        progress=progress,
    )
    return model.cpu().eval()


@dataclass
class AdaptConfig:
    method: str = "taugate"  # a name in taugate.training.methods.METHODS
    method_config: dict = field(default_factory=dict)  # the method's Config fields
    # the paper: 1 epoch, SGD momentum; at least ADAPT_MIN_STEPS optimizer steps on small data
    train: TrainConfig = field(default_factory=lambda: TrainConfig(min_steps=ADAPT_MIN_STEPS))

    def __post_init__(self) -> None:
        if isinstance(self.train, dict):
            self.train = TrainConfig(**self.train)
        get_method(self.method, self.method_config)  # validates name and config early


def adapt(
    foundation: nn.Module, mode_data: ModeData, config: AdaptConfig, device="cpu",
    progress: bool = True, targets: Targets | None = None,
) -> tuple[AdaptationMethod, nn.Module]:
    """Wrap a frozen copy of ``foundation`` with the method at ``targets`` (default: every site
    of a built-in family; training/targets.py) and train it on one mode; when the method's
    config asks for a retune (sparse TauGate), retune after the sparse phase."""
    torch.manual_seed(config.train.seed)
    method = get_method(config.method, config.method_config)
    model = method.wrap(foundation, targets).to(device)
    params = list(method.trainable(model).values())
    if params:
        train(
            model,
            params,
            mode_data.train,
            config.train,
            device=device,
            penalty=method.penalty,
            after_step=method.after_step,
            label=f"{method.name} {mode_data.mode.name}",
            progress=progress,
        )
    rc = method.retune_config()
    retune_epochs = rc.epochs if rc is not None else 0
    if params and retune_epochs > 0:
        # prune, then retune: the sparse phase zeroed whole units; retrain the rest without L1
        torch.manual_seed(config.train.seed)
        retune(method, model, mode_data.train, replace(config.train, epochs=retune_epochs),
               device=device, progress=progress, label=f"retune {mode_data.mode.name}")
    return method, model.cpu().eval()
