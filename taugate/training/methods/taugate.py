"""TauGate: learn a per-unit threshold tau and gain gamma on a frozen network.

arXiv 2602.11726, Eq. (2)-(5): for a hidden pre-activation z,
    gate  g = sigmoid(s * (z - tau))                 (soft, training)
    out   h = gamma * act(z) * g                     (act: the site's activation)
    loss  = CE + lambda * mean(g)                    (optional activity penalty, Eq. 5)
At inference the gate is hardened to 1[z > tau]. For ReLU that is h = gamma * z * 1[z > t] with
t = max(tau, 0); for any other activation t = tau (docs/byom.md). gamma is folded into the consumer's
columns at export. The units are those of the target Linear layers (training/targets.py).

Beyond the paper (off by default): ``sparsity.unit_l1`` adds a cost-weighted proximal L1 step
on the gains after each SGD step (training/sparsity.py), which zeroes whole units per mode so
the exporter can remove them; ``sparsity.gain_lr_scale`` gives the gains a larger learning
rate; ``retune`` retrains tau/gamma afterwards with the zeroed units frozen;
``correction_rank`` adds a per-mode low-rank correction to the first site's producer
(``correction_sites="ffn"``: to every site's producer and up projection;
training/corrections.py), trained with tau/gamma and merged into its weight at export.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from taugate.spec import GatedUnits
from taugate.training.activations import apply, module_for
from taugate.training.corrections import (
    CORRECTION_SCALE,
    add_correction,
    check_correction,
    correction_factors,
    correction_overrides,
)
from taugate.training.families.mlp import UnitActivation
from taugate.training.gating import gate_modules, gates, targets_of
from taugate.training.methods.base import AdaptationMethod, as_numpy
from taugate.training.sparsity import RetuneConfig, SparsityConfig, gain_prox_step
from taugate.training.targets import set_module


@dataclass
class TauGateConfig:
    sharpness: float = 10.0  # s in Eq. 3: how close the sigmoid gate is to a step
    tau_init: float = 0.0  # initial thresholds
    gain_init: float = 1.0  # initial gains
    activity_lambda: float = 0.0  # lambda in Eq. 5, on the mean gate value (paper's sparsity)
    learn_tau: bool = True  # False: tau stays at tau_init (GainOnly-like)
    learn_gain: bool = True  # False: gamma stays at gain_init (TauOnly-like)
    gated: bool = True  # False: no gate at all, h = gamma * act(z) (GainOnly)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)  # unit-level L1 (off)
    retune: RetuneConfig = field(default_factory=RetuneConfig)  # prune, then retune (off)
    correction_rank: int = 0  # rank of the per-mode correction of the first producer (0: off)
    correction_scale: float = CORRECTION_SCALE  # its output scale (the factors' effective lr)
    correction_sites: str = "first"  # "first": the first producer; "ffn": every producer and up
    correction_pool: int = 1  # > 1: the correction reads the image input pooled k x k (rank
    #   buys k^2 fewer stored numbers; training/corrections.py)

    # the flat option names of the CLI, the recipes and format-1 adapters
    FLAT: ClassVar[dict] = {**SparsityConfig.FLAT, **RetuneConfig.FLAT}

    def __post_init__(self) -> None:
        if self.sharpness <= 0:
            raise ValueError(f"sharpness: expected > 0, got {self.sharpness}")
        if self.activity_lambda < 0:
            raise ValueError(f"activity_lambda: expected >= 0, got {self.activity_lambda}")
        if not (self.learn_tau or self.learn_gain):
            raise ValueError("learn_tau/learn_gain: at least one must be True")
        check_correction(self.correction_rank, self.correction_scale, self.correction_sites,
                         self.correction_pool)
        if self.sparsity.unit_l1 > 0 and not self.learn_gain:
            raise ValueError("unit_l1: acts on the learned gains; it needs learn_gain=True")


class TauGateActivation(UnitActivation):
    """``gamma * act(z) * gate(z - tau)``, soft (sigmoid) or hard (step); act: the site's
    activation kind (training/activations.py)."""

    def __init__(self, width: int, config: TauGateConfig, kind: str = "relu",
                 conv: bool = False):
        super().__init__(width)
        self.conv = conv  # units are the channels (axis 1) of [N, C, H, W] feature maps
        module_for(kind)  # a ValueError naming the valid kinds
        self.site_kind = kind
        self.sharpness = config.sharpness
        self.gated = config.gated
        self.gain_lr_scale = float(config.sparsity.gain_lr_scale)
        tau = torch.full((width,), float(config.tau_init))
        gain = torch.full((width,), float(config.gain_init))
        if config.learn_tau and config.gated:
            self.tau = nn.Parameter(tau)
        else:
            self.register_buffer("tau", tau)
        if config.learn_gain:
            self.gain = nn.Parameter(gain)
        else:
            self.register_buffer("gain", gain)

    def per_unit(self, p: torch.Tensor) -> torch.Tensor:
        """``p`` ([units]) shaped to broadcast over the units' axis of the input."""
        return p.view(-1, 1, 1) if self.conv else p

    def gate(self, z: torch.Tensor) -> torch.Tensor:
        tau = self.per_unit(self.tau)
        if self.hard:
            return (z > tau).to(z.dtype)
        return torch.sigmoid(self.sharpness * (z - tau))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = apply(self.site_kind, z)
        if self.gated:
            g = self.gate(z)
            self.last_gate = g
            h = h * g
        gain = self.gain
        if self.gain_lr_scale != 1.0 and gain.requires_grad:
            # same value, gradient scaled: SGD(+momentum) then moves the gains at lr * scale
            gain = gain + (self.gain_lr_scale - 1.0) * (gain - gain.detach())
        return self.per_unit(gain) * h

    @torch.no_grad()
    def threshold(self) -> np.ndarray:
        """The hard gate's threshold: relu max(tau, 0), any other kind tau (ungated: relu 0)."""
        tau = self.tau.detach().float().cpu()
        if not self.gated:
            if self.site_kind != "relu":
                raise ValueError(f"an ungated {self.site_kind} unit has no finite threshold")
            return np.zeros(self.width, np.float32)
        t = tau.clamp(min=0) if self.site_kind == "relu" else tau
        return t.numpy().astype(np.float32)

    @torch.no_grad()
    def hardened(self) -> tuple[np.ndarray, np.ndarray]:
        return self.threshold(), self.gain.detach().float().cpu().numpy()


class TauGate(AdaptationMethod):
    """Threshold + gain per target unit (2 x 128 + 2 x 128 = 512 parameters on the paper's
    backbone)."""

    name = "taugate"
    label = "TauGate (threshold + gain)"
    Config = TauGateConfig

    def activation_config(self) -> TauGateConfig:
        return self.config

    def inject(self, model: nn.Module) -> None:
        cfg = self.activation_config()
        for site in targets_of(model).sites:
            set_module(model, site.act, TauGateActivation(site.units, cfg, site.activation,
                                                                 site.conv))
        if cfg.correction_rank:
            add_correction(model, cfg.correction_rank, cfg.correction_scale,
                           cfg.correction_sites, cfg.correction_pool)

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        lam = self.activation_config().activity_lambda
        if lam == 0:
            return None
        recorded = gates(model)
        if not recorded:
            return None
        return lam * torch.stack([g.mean() for g in recorded]).mean()

    def after_step(self, model: nn.Module, lr: float) -> None:
        sp = self.activation_config().sparsity
        if sp.unit_l1 > 0:
            gain_prox_step(model, lr * sp.gain_lr_scale, sp.unit_l1)

    def retune_config(self):
        return self.activation_config().retune

    def gated_units(self, model: nn.Module) -> list[GatedUnits]:
        out = []
        for site, act in gate_modules(model):
            if site.activation != "relu" and not getattr(act, "gated", False):
                continue  # no finite threshold: the unit stays ungated; its gain is an override
            out.append(GatedUnits(site.producer, site.consumer, site.activation,
                                  act.threshold(), as_numpy(act.gain),
                                  None if site.functional else site.act, site.up, site.norm))
        return out

    def factors(self, model: nn.Module) -> dict:
        """The first-layer correction's factors (its override is their merge)."""
        return correction_factors(model)

    def overrides(self, model: nn.Module) -> dict[str, np.ndarray]:
        """The low-rank correction merged into its producer's weight, and for ungated
        non-ReLU sites (GainOnly on a transformer) the gain folded into the consumer."""
        from taugate.training.families.mlp import linear_weight_bias
        from taugate.training.targets import get_module

        out = correction_overrides(model)
        for site, act in gate_modules(model):
            if site.activation != "relu" and not getattr(act, "gated", False):
                w, _ = linear_weight_bias(get_module(model, site.consumer))
                gain = act.gain.detach().view(1, -1, *[1] * (w.dim() - 2))  # conv: [1, C, 1, 1]
                out[f"{site.consumer}.weight"] = as_numpy(w * gain)
        return out
