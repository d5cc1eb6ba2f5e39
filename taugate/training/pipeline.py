"""The main job as functions: pretrain a foundation, adapt it per mode, export a bundle.

Every ``taugate`` command that trains or exports (train, export, demo, reproduce, sweep) goes
through these, so there is one way to do each step.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from taugate.bundle.schema import PRECISIONS
from taugate.exporting.prune import PruneConfig, firing_rates
from taugate.exporting.quantize import DEFAULT_SCHEME
from taugate.exporting.specialize import PrunedMode, prune_mode
from taugate.exporting.variants import int8_variant
from taugate.exporting.writer import ModeExport, graph_bytes, write_bundle
from taugate.spec import HardenedModel
from taugate.summaries import units_kept
from taugate.training.backbone import MLP, FoundationConfig, harden_mlp
from taugate.training.families import get_family
from taugate.training.gating import set_hard
from taugate.training.loop import TrainConfig, accuracy, train
from taugate.training.methods import AdaptationMethod, get_method
from taugate.training.sources import MNISTModes, Mode, ModeData, ModeSource
from taugate.training.sparsity import retune
from taugate.training.targets import Targets

log = logging.getLogger(__name__)


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
    train: TrainConfig = field(default_factory=TrainConfig)  # the paper: 1 epoch, SGD momentum

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


@dataclass
class ModeReport:
    """What the demo and `taugate export` print per mode."""

    name: str  # the key in the bundle (default: the mode's name, e.g. "rot45")
    mode: Mode
    method: str
    soft_accuracy: float  # torch, smooth gate (as trained)
    hard_accuracy: float  # torch, hard gate
    pruned: PrunedMode
    dense_accuracy: float | None = None  # the dense frozen foundation, same test set

    @property
    def units(self) -> str:
        return units_kept(self.pruned.model.widths, self.pruned.unpruned.widths)


def _np(split) -> tuple[np.ndarray, np.ndarray]:
    return split.x.numpy(), split.y.numpy()


def harden_mode(
    method: AdaptationMethod,
    model: MLP,
    mode_data: ModeData,
    prune: PruneConfig | None = None,
    name: str | None = None,
) -> ModeReport:
    """Harden, prune on the calibration split, and measure on the test split.

    ``name`` is the mode's key in the bundle (default: the mode's own name); give e.g.
    ``"rot45-lora"`` to export several methods for one mode side by side."""
    soft = accuracy(set_hard(model, False), mode_data.test)
    hard = accuracy(set_hard(model, True), mode_data.test)
    set_hard(model, False)
    hardened = method.harden(model, {"mode": mode_data.mode.name, "angle": mode_data.mode.angle})
    pruned = prune_mode(hardened, _np(mode_data.calibration), _np(mode_data.test), prune)
    return ModeReport(name or mode_data.mode.name, mode_data.mode, method.name, soft, hard, pruned)


@dataclass
class PrecisionConfig:
    """Which precision variants ``export_bundle`` adds beside the fp32 graphs."""

    precisions: tuple[str, ...] = ("fp32",)  # fp32 is always written: the reference
    quantization: str = DEFAULT_SCHEME  # taugate.exporting.quantize.SCHEMES
    max_accuracy_drop: float = 0.005  # refuse a variant losing more test accuracy than this
    calibration_rows: int = 2000  # calibration rows the static scheme reads (per mode)

    def __post_init__(self) -> None:
        from taugate.exporting.quantize import SCHEMES

        self.precisions = tuple(self.precisions)
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad or not self.precisions:
            raise ValueError(f"precision: expected a comma-separated subset of "
                             f"{', '.join(PRECISIONS)}, got {','.join(self.precisions) or '(none)'}")
        if self.quantization not in SCHEMES:
            raise ValueError(f"quantization: expected one of {', '.join(SCHEMES)}, got "
                             f"{self.quantization!r}")
        if self.max_accuracy_drop < 0:
            raise ValueError(f"max_accuracy_drop: expected >= 0, got {self.max_accuracy_drop}")

    @property
    def int8(self) -> bool:
        return "int8" in self.precisions


def _int8(name, model, tests, calibration, config: PrecisionConfig, per_mode=False):
    return {"int8": int8_variant(name, graph_bytes(model, name), tests, config.max_accuracy_drop,
                                 config.quantization, calibration, per_mode=per_mode)}


def export_bundle(
    out: str | Path,
    foundation: MLP,
    reports: list[ModeReport],
    data: MNISTModes,
    overwrite: bool = False,
    precision: PrecisionConfig | None = None,
) -> Path:
    """Write the bundle: the dense foundation + one compacted subnetwork per mode (+ int8
    variants of each, and of the dense model, when ``precision`` asks for them)."""
    precision = precision or PrecisionConfig()
    dense: HardenedModel = harden_mlp(foundation, {"method": "frozen"})
    dense_acc = {r.mode.name: r.dense_accuracy if r.dense_accuracy is not None
                 else accuracy(foundation, data.mode(r.mode).test) for r in reports}
    variants, dense_variants = {}, {}
    if precision.int8:
        n = precision.calibration_rows
        splits = {r.mode.name: data.mode(r.mode) for r in reports}
        tests = {m: _np(d.test) for m, d in splits.items()}
        cals = {m: _np(d.calibration)[0][:n].reshape(-1, dense.layers[0].in_features)
                for m, d in splits.items()}
        for r in reports:
            log.info("int8 variant of %s (%s)", r.name, precision.quantization)
            variants[r.name] = _int8(r.name, r.pruned.model, {r.mode.name: tests[r.mode.name]},
                                     cals[r.mode.name], precision)
        dense_variants = _int8("dense", dense, tests, np.concatenate(list(cals.values())),
                               precision, per_mode=True)
    exports = {
        r.name: ModeExport(
            model=r.pruned.model,
            method=r.method,
            angle=r.mode.angle,
            units_total=r.pruned.unpruned.widths,
            kept_indices=r.pruned.kept_indices,
            calibration_accuracy=r.pruned.calibration_accuracy,
            test_accuracy=r.pruned.test_accuracy,
            extra={
                "data_mode": r.mode.name,
                "unpruned_test_accuracy": r.pruned.unpruned_test_accuracy,
                # every unit's firing rate on the mode's test set, pruned units included:
                # what the report's "which units fire" heat map draws
                "test_firing_rates": [
                    np.round(rate, 5).tolist()
                    for rate in firing_rates(r.pruned.unpruned, data.mode(r.mode).test.x.numpy())
                ],
            },
            variants=variants.get(r.name, {}),
        )
        for r in reports
    }
    return write_bundle(out, dense, exports, dense_extra={"test_accuracy": dense_acc},
                        overwrite=overwrite, dense_variants=dense_variants)
