"""The ``mlp`` family: the paper's backbone (arXiv 2602.11726), 784 -> 128 -> 128 -> 10 with
ReLU, and its plain per-layer form.

Every hidden activation is a :class:`UnitActivation` module so that adaptation methods can swap
in gated ones without touching the weights. Parameter names (``linears.<i>``, ``input_mean``,
``input_std``) are the saved foundations' state-dict keys: keep them.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, replace
from math import prod

import numpy as np
import torch
from torch import nn

from taugate.spec import (
    HardenedLayer,
    HardenedModel,
    fold_gain,
    fold_input_normalization,
)
from taugate.training.families.base import Family


@dataclass
class BackboneConfig:
    input_dim: int = 784  # 28 x 28 pixels, flattened
    hidden: tuple[int, ...] = (128, 128)  # hidden widths; depth = len(hidden)
    num_classes: int = 10
    input_mean: float = 0.1307  # MNIST pixel mean; normalization is folded away at export
    input_std: float = 0.3081

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden: expected one or more widths >= 1, got {self.hidden}")
        if self.input_dim < 1 or self.num_classes < 2:
            raise ValueError(
                f"input_dim/num_classes: expected >= 1 / >= 2, got "
                f"{self.input_dim}/{self.num_classes}"
            )
        if self.input_std <= 0:
            raise ValueError(f"input_std: expected > 0, got {self.input_std}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d


class UnitActivation(nn.Module):
    """A per-unit activation of a hidden layer; the base class is plain ReLU.

    Subclasses (methods/) add learnable per-unit parameters. ``hard`` switches a gated
    activation from its smooth training form to the step gate used at inference.
    """

    site_kind = "relu"  # the activation kind a site of it records (training/activations.py)

    def __init__(self, width: int):
        super().__init__()
        self.width = width
        self.hard = False
        self.last_gate: torch.Tensor | None = None  # gate values of the last forward, if gated

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.relu(z)

    def hardened(self) -> tuple[np.ndarray, np.ndarray]:
        """``(threshold t >= 0, gain)`` with ``h = gain * z * 1[z > t]`` at inference."""
        return np.zeros(self.width, np.float32), np.ones(self.width, np.float32)


class MLP(nn.Module):
    """Raw pixels in [0, 1] -> logits; hidden layers: Linear then a UnitActivation."""

    def __init__(self, config: BackboneConfig | None = None):
        super().__init__()
        self.config = config or BackboneConfig()
        dims = (self.config.input_dim, *self.config.hidden, self.config.num_classes)
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:]))
        self.acts = nn.ModuleList(UnitActivation(w) for w in self.config.hidden)
        self.register_buffer("input_mean", torch.tensor(self.config.input_mean))
        self.register_buffer("input_std", torch.tensor(self.config.input_std))
        self.normalize_input = True  # False once folded into the first layer (for_export)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = (x - self.input_mean) / self.input_std if self.normalize_input else x
        for i, linear in enumerate(self.linears):
            h = linear(h)
            if i < len(self.acts):
                h = self.acts[i](h)
        return h

    def example_input(self, batch: int = 2) -> torch.Tensor:
        """A batch of the input shape (finding targets traces one forward pass)."""
        return torch.zeros(batch, self.config.input_dim)

    def set_hard(self, hard: bool) -> MLP:
        """Switch every gated activation between its smooth and its hard (step) form."""
        for act in self.acts:
            act.hard = hard
        return self

    def gates(self) -> list[torch.Tensor]:
        """Gate values recorded by the last forward pass (gated activations only)."""
        return [a.last_gate for a in self.acts if a.last_gate is not None]


def linear_weight_bias(linear: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The effective (merged) weight and bias of a linear layer, plain or wrapped (LoRA)."""
    if hasattr(linear, "merged_weight_bias"):
        return linear.merged_weight_bias()
    return linear.weight, linear.bias


@torch.no_grad()
def harden_mlp(model: MLP, meta: dict | None = None) -> HardenedModel:
    """The plain per-layer form of ``model``: gains folded forward, thresholds kept, input
    normalization folded into layer 0. Method-agnostic (see export/hardened.py)."""
    ws, bs = [], []
    for linear in model.linears:
        w, b = linear_weight_bias(linear)
        ws.append(w.detach().double().cpu().numpy())
        bs.append(b.detach().double().cpu().numpy())
    ws[0], bs[0] = fold_input_normalization(
        ws[0], bs[0], float(model.input_mean), float(model.input_std)
    )
    thresholds = []
    for i, act in enumerate(model.acts):
        t, g = act.hardened()
        thresholds.append(np.asarray(t, np.float32))
        ws[i + 1] = fold_gain(ws[i + 1], np.asarray(g, np.float64))
    layers = [
        HardenedLayer(
            weight=np.ascontiguousarray(w, np.float32),
            bias=np.ascontiguousarray(b, np.float32),
            threshold=thresholds[i] if i < len(thresholds) else None,
        )
        for i, (w, b) in enumerate(zip(ws, bs))
    ]
    return HardenedModel(layers=tuple(layers), meta=dict(meta or {}))


class MLPFamily(Family):
    """The paper's MLP; its config is the foundation config's ``backbone``."""

    name = "mlp"
    Config = BackboneConfig
    Model = MLP
    optimizer, lr = "sgd", 0.05

    def config(self, values):
        if isinstance(values, BackboneConfig):
            return values
        return super().config(values)

    def foundation_config(self, fc):
        return fc.backbone

    def for_export(self, model: MLP):
        """The MLP with ``(x - mean) / std`` folded into the first Linear (``W / std``,
        ``b - mean / std * W.sum(1)``): the graphs take raw inputs and spend no operator on
        normalizing them (two elementwise passes over the input cost a fifth of a 784-128-128-10
        mode's time at batch 256). Overrides of the first layer are folded the same way."""
        if not model.normalize_input:
            return model, lambda overrides: overrides
        mean, std = float(model.input_mean), float(model.input_std)
        weight, bias = model.linears[0].weight.detach(), model.linears[0].bias.detach()
        out = copy.deepcopy(model).eval()
        with torch.no_grad():
            out.linears[0].weight.copy_(weight / std)
            out.linears[0].bias.copy_(bias - mean / std * weight.sum(1))
            out.input_mean.zero_()
            out.input_std.fill_(1.0)
        out.normalize_input = False
        w_key, b_key = "linears.0.weight", "linears.0.bias"

        def fold(overrides: dict) -> dict:
            if w_key not in overrides and b_key not in overrides:
                return overrides
            w = torch.as_tensor(np.asarray(overrides.get(w_key, weight.numpy())))
            b = torch.as_tensor(np.asarray(overrides.get(b_key, bias.numpy())))
            return {**overrides, w_key: (w / std).numpy(),
                    b_key: (b - mean / std * w.sum(1)).numpy()}

        return out, fold

    def fit_to_data(self, fc, facts):
        backbone = replace(fc.backbone, input_dim=prod(facts.shape), num_classes=facts.classes,
                           input_mean=facts.mean, input_std=facts.std)
        return replace(fc, backbone=backbone)

    def foundation_meta(self, model, factory=None):
        return {"family": self.name, "backbone": model.config.to_dict()}

    def load(self, meta):
        return MLP(self.config(meta["backbone"]))

    def harden(self, model, meta):
        return harden_mlp(model, meta)
