"""The plain per-layer form every adaptation method hardens into.

This is the contract between training and export: numpy arrays only, no knowledge of which
method produced them. A hardened MLP is a stack of affine layers; every layer but the last is
followed by a *threshold activation*

    h_j = z_j * 1[z_j > t_j],   t_j >= 0

which is ReLU when ``t_j == 0``. TauGate's hard gate ``gamma * relu(z) * 1[z > tau]`` is exactly
this with ``t = max(tau, 0)`` and ``gamma`` folded into the next layer's columns
(arXiv 2602.11726, Eq. 2-4 with the sigmoid replaced by a step at inference).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class HardenedLayer:
    """One affine layer ``z = x @ weight.T + bias``, optionally followed by a threshold."""

    weight: np.ndarray  # [out, in] float32
    bias: np.ndarray  # [out] float32
    threshold: np.ndarray | None = None  # [out] float32, >= 0; None = no activation (output)

    def __post_init__(self) -> None:
        w, b, t = self.weight, self.bias, self.threshold
        if w.ndim != 2:
            raise ValueError(f"weight: expected a 2-D [out, in] array, got shape {w.shape}")
        if b.shape != (w.shape[0],):
            raise ValueError(f"bias: expected shape ({w.shape[0]},), got {b.shape}")
        if t is not None:
            if t.shape != (w.shape[0],):
                raise ValueError(f"threshold: expected shape ({w.shape[0]},), got {t.shape}")
            if np.any(t < 0) or not np.all(np.isfinite(t)):
                raise ValueError("threshold: expected finite values >= 0 (t = max(tau, 0))")

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    @property
    def is_relu(self) -> bool:
        """True when every threshold is 0, so the activation is a plain ReLU."""
        return self.threshold is not None and not np.any(self.threshold > 0)


@dataclass(frozen=True)
class HardenedModel:
    """A hardened MLP: hidden layers carry thresholds, the last layer returns logits.

    The input is raw pixels in [0, 1]: input normalization is already folded into layer 0.
    """

    layers: tuple[HardenedLayer, ...]
    meta: dict = field(default_factory=dict)  # free-form facts: method, mode, angle, ...

    def __post_init__(self) -> None:
        if len(self.layers) < 1:
            raise ValueError("layers: expected at least one layer")
        for i, (a, b) in enumerate(zip(self.layers, self.layers[1:])):
            if a.out_features != b.in_features:
                raise ValueError(
                    f"layers {i}->{i + 1}: out_features {a.out_features} != in_features "
                    f"{b.in_features}"
                )
        for i, layer in enumerate(self.layers):
            last = i == len(self.layers) - 1
            if last != (layer.threshold is None):
                raise ValueError(
                    f"layer {i}: hidden layers need a threshold and the output layer none"
                )

    @property
    def hidden(self) -> tuple[HardenedLayer, ...]:
        return self.layers[:-1]

    @property
    def widths(self) -> list[int]:
        """Units per hidden layer."""
        return [layer.out_features for layer in self.hidden]

    @property
    def macs(self) -> int:
        """Multiply-accumulates per example (the affine layers; activations are ~free)."""
        return int(sum(layer.in_features * layer.out_features for layer in self.layers))

    def forward(self, x: np.ndarray, return_hidden: bool = False):
        """Logits for ``x`` of shape [N, in]; with ``return_hidden`` also each hidden output."""
        h = np.asarray(x, dtype=np.float32)
        hidden = []
        for layer in self.layers:
            z = h @ layer.weight.T + layer.bias
            if layer.threshold is None:
                h = z
            else:
                h = np.where(z > layer.threshold, z, np.float32(0)).astype(np.float32)
                hidden.append(h)
        return (h, hidden) if return_hidden else h


def fold_input_normalization(
    weight: np.ndarray, bias: np.ndarray, mean: float, std: float
) -> tuple[np.ndarray, np.ndarray]:
    """Fold ``(x - mean) / std`` into the affine layer that consumes it."""
    w = (weight / np.float32(std)).astype(np.float32)
    b = (bias - w.sum(axis=1) * np.float32(mean)).astype(np.float32)
    return w, b


def fold_gain(next_weight: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """Fold a hidden layer's per-unit gain ``gamma`` into the next layer's columns.

    ``gamma * z * 1[z > t]`` feeds ``next_weight``; scaling column j by ``gamma_j`` is exact for
    any sign of gamma because the gate depends on z, not on gamma.
    """
    return (next_weight * gain[None, :]).astype(np.float32)


ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu", "mish", "leaky_relu:<slope>")


def _valid_activation(kind) -> bool:
    if kind in ACTIVATIONS[:-1]:
        return True
    name, _, slope = str(kind).partition(":")
    try:
        return name == "leaky_relu" and float(slope) >= 0
    except ValueError:
        return False


@dataclass(frozen=True)
class GatedUnits:
    """The hard-gated output units of one target ``nn.Linear`` (docs/bundle-v2.md, section 1).

    Unit j computes ``gain_j * act(z_j) * 1[z_j > threshold_j]`` and feeds ``consumer``; in a
    gated FFN (``up`` set) that times ``up``'s unit j, so removing unit j removes ``up``'s row
    j too. ``norm``: a BatchNorm1d between producer and activation, folded into the producer
    before anything else (exporting/norms.py).
    """

    producer: str  # module path of the target Linear, e.g. "blocks.0.ffn.fc1"
    consumer: str  # module path of the Linear that consumes its (activated) outputs
    activation: str  # ACTIVATIONS: the unit-wise op between producer and consumer
    threshold: np.ndarray  # [units] float32; relu: max(tau, 0), any other kind: tau
    gain: np.ndarray  # [units] float32, folded into the consumer's columns
    act: str | None = None  # module path of the activation between them (None: not a module)
    up: str | None = None  # gated FFN: the Linear whose output multiplies the activated units
    norm: str | None = None  # the BatchNorm1d between producer and activation (folded)

    def __post_init__(self) -> None:
        if not _valid_activation(self.activation):
            raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {self.activation!r}")
        t, g = self.threshold, self.gain
        if t.ndim != 1 or g.shape != t.shape:
            raise ValueError(f"{self.producer}: threshold and gain must be 1-D of one length, "
                             f"got shapes {t.shape} and {g.shape}")
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(g))):
            raise ValueError(f"{self.producer}: threshold and gain must be finite")
        if self.activation == "relu" and np.any(t < 0):
            raise ValueError(f"{self.producer}: relu thresholds must be >= 0 (t = max(tau, 0))")

    @property
    def units(self) -> int:
        return int(self.threshold.shape[0])


@dataclass(frozen=True)
class LowRankFactors:
    """An override that is the backbone tensor plus ``u @ expand(v)``: the factors a shared
    bundle stores instead of the merged tensor (taugate/bundle/lowrank.py, which merges them)."""

    u: np.ndarray  # [out, r] float32, the correction's scale included
    v: np.ndarray  # [r, cells] float32
    pool: int = 1  # cells: the inputs (1), or k x k patches of a square image input (k)


@dataclass(frozen=True)
class GatedSpec:
    """What makes a mode a mode on any torch model: gated targets plus the tensors a method
    changed. Method-agnostic; export never learns which method produced it."""

    targets: tuple[GatedUnits, ...]
    overrides: dict = field(default_factory=dict)  # state-dict name -> whole np.ndarray
    meta: dict = field(default_factory=dict)  # method, mode, facts, ...
    # state-dict name -> LowRankFactors of that override: its merge is the override exactly
    factors: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [t.producer for t in self.targets]
        if len(set(names)) != len(names):
            raise ValueError(f"targets: a producer appears twice in {names}")
