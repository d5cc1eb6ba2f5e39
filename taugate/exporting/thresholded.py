"""The fp32 lowering of the hard gate: ``Gemm -> ThresholdedRelu`` instead of
``Gemm -> Greater -> Cast -> Mul`` (``Conv -> ThresholdedRelu`` for a conv site).

A gated ReLU unit computes ``z * 1[z > t]``. With its producer row (weight and bias) multiplied
by ``1/t`` it computes ``z' = z/t``, and ``ThresholdedRelu(alpha=1)`` (``z' * 1[z' > 1]``) gates
it; ``t`` goes back into the consumer's column (times the unit's gain). One operator per gated
layer instead of three, and the graph runs as fast as a plain-Relu pruned one
(docs/bundle-v2.md, section 4). A conv site is the same with channels as units: the producer's
output channels (axis 0 of its 4-D weight, and its bias) are scaled by ``1/t``, the consumer's
input channels (axis 1) by ``gain * t``; a site's channels go straight into the consumer conv
(training/traced.py), and a convolution is linear in each input channel, so this is exact.

Units with ``t == 0`` (a plain ReLU gate) take ``t = 2**-40`` instead: scaling by a power of two
is exact in float32, and the only change is that a unit with ``0 < z <= 2**-40`` outputs 0
instead of ``z`` (less than 1e-12 per unit). Scaled rows widen the activation range, which
per-tensor int8 quantization cannot take: int8 variants lower the gate their own way
(exporting/int8_gate.py: ``t`` multiplied back right after the gate).

Every lowered weight is built with the runtime's own numpy code
(:func:`taugate.bundle.materialize.build_initializer`), in the order its materialize step
applies (take rows, take columns, scale columns, scale rows), so the shared layout rebuilds it
bit for bit.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
import torch
from torch import nn

from taugate.bundle.materialize import build_initializer
from taugate.bundle.schema import MaterializeStep
from taugate.exporting.compact import GatedConv2d, GatedLinear, Surgery
from taugate.exporting.int8_gate import ZERO_THRESHOLD
from taugate.spec import GatedSpec


class _ThresholdedRelu(torch.autograd.Function):
    """``x * 1[x > 1]``; exported as one ``ThresholdedRelu(alpha=1)`` node."""

    @staticmethod
    def forward(ctx, x):
        return x * (x > 1.0).to(x.dtype)

    @staticmethod
    def symbolic(g, x):
        return g.op("ThresholdedRelu", x, alpha_f=1.0)


class ThresholdedLinear(nn.Linear):
    """A producer with rows pre-scaled by ``1/t``, gated by ``ThresholdedRelu(alpha=1)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ThresholdedRelu.apply(super().forward(x))


class ThresholdedConv2d(nn.Conv2d):
    """A conv with output channels pre-scaled by ``1/t``, gated by ``ThresholdedRelu(alpha=1)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ThresholdedRelu.apply(super().forward(x))


def _blank(old: nn.Module, thresholded: bool) -> nn.Module:
    """An uninitialized layer of ``old``'s type and geometry (thresholded or plain)."""
    if isinstance(old, nn.Conv2d):
        return (ThresholdedConv2d if thresholded else nn.Conv2d)(
            old.in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
            old.dilation, old.groups, old.bias is not None, old.padding_mode)
    return (ThresholdedLinear if thresholded else nn.Linear)(
        old.in_features, old.out_features, bias=old.bias is not None)


def _regated(old: nn.Module, new: nn.Module) -> nn.Module:
    """``new``'s weights under ``old``'s hard gate (a consumer that is itself a gated
    producer whose gate is not lowered)."""
    if isinstance(old, GatedConv2d):
        gated = GatedConv2d(old, old.in_channels, old.out_channels, old.threshold,
                            old.bias is not None)
    else:
        gated = GatedLinear(old.in_features, old.out_features, old.threshold)
        if old.bias is None:
            gated.register_parameter("bias", None)
    gated.load_state_dict({**new.state_dict(), "threshold": old.threshold})
    return gated


def lowerable(s: Surgery, activation: str) -> bool:
    """Whether a producer's gate can be lowered: a gated ReLU Linear or Conv2d with no
    negative threshold (other activations keep ``Greater -> Cast -> Mul``)."""
    return s.gated and activation == "relu" and s.threshold is not None \
        and bool(np.all(s.threshold >= 0)) and bool(np.all(np.isfinite(s.threshold)))


def scales(t: np.ndarray, gain: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(row scale 1/t of the producer, column scale gain * t of the consumer), float32."""
    t_eff = np.where(t > 0, t, ZERO_THRESHOLD).astype(np.float32)
    rows = (np.float32(1) / t_eff).astype(np.float32)
    g = np.ones_like(t_eff) if gain is None else gain.astype(np.float32)
    return rows, (g * t_eff).astype(np.float32)


def lowered_plan(plan: dict[str, Surgery], spec: GatedSpec) -> dict[str, tuple]:
    """producer path -> (row scale, column scale) for every producer lowered."""
    act = {t.producer: t.activation for t in spec.targets}
    out = {}
    for path, s in plan.items():
        if s.rows is not None and lowerable(s, act.get(path, "")):
            cons = next(p for p, c in plan.items() if c.cols_from == path)
            out[path] = scales(s.threshold, plan[cons].gain)
    return out


def steps_for(key: str, source: str, tensor: str, s: Surgery | None, lowered: dict,
              names: dict) -> tuple[tuple, tuple]:
    """(take, scale) of state-dict entry ``key`` of a compacted Linear or Conv2d (``names``: mode-file
    tensor names by kind: ``keep``, ``gain``, ``rscale``, ``cscale`` -> producer -> name)."""
    path, _, leaf = key.rpartition(".")
    take, scale = [], []
    if s is None or leaf not in ("weight", "bias"):
        return (), ()
    if s.rows is not None:
        take.append((0, names["keep"][path]))
    if s.cols is not None and leaf == "weight":
        take.append((1, names["keep"][s.cols_from]))
        if s.cols_from in lowered:
            scale.append((1, names["cscale"][s.cols_from]))
        elif s.cols_from in names["gain"]:
            scale.append((1, names["gain"][s.cols_from]))
    if path in lowered:
        scale.append((0, names["rscale"][path]))
    return tuple(take), tuple(scale)


def lower(small: nn.Module, plan: dict[str, Surgery], spec: GatedSpec, backbone: dict,
          tensors: dict, names: dict) -> nn.Module:
    """A copy of the compacted ``small`` with every lowerable gate lowered; its weights built by
    the materialize steps from ``backbone`` (state-dict key -> array, overrides applied) and the
    mode file's ``tensors`` (which gains ``rscale``/``cscale`` entries)."""
    lowered = lowered_plan(plan, spec)
    for path, (rows, cols) in lowered.items():
        tensors[names["rscale"][path]] = rows
        tensors[names["cscale"][path]] = cols
    out = copy.deepcopy(small)
    touched = set(lowered) | {p for p, s in plan.items() if s.cols_from in lowered}
    for path in touched:
        old = out.get_submodule(path)
        new = _blank(old, path in lowered)
        with torch.no_grad():
            for leaf in ("weight", "bias"):
                if getattr(old, leaf) is None:
                    continue
                key = f"{path}.{leaf}"
                take, scale = steps_for(key, "backbone", key, plan[path], lowered, names)
                step = MaterializeStep(key, "backbone", key, take, scale or None, None,
                                       "float32", tuple(getattr(old, leaf).shape))
                getattr(new, leaf).copy_(torch.from_numpy(
                    build_initializer(step, backbone, tensors, "lowering")))
        if isinstance(old, (GatedLinear, GatedConv2d)) and path not in lowered:
            new = _regated(old, new)  # a consumer still gated
        parent, _, name = path.rpartition(".")
        setattr(out.get_submodule(parent) if parent else out, name, new.eval())
    return out.eval().requires_grad_(False)


def drop_idle_relus(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` without the ``Relu`` nodes that read a ``ThresholdedRelu``'s output: a gate
    written as ``F.relu`` in ``forward()`` (no module to replace by Identity) would otherwise
    stay as one more pass over every activation, for nothing (the gated output is already
    ``>= 0``). Their readers read the ThresholdedRelu's output instead."""
    graph = proto.graph
    gated = {n.output[0] for n in graph.node if n.op_type == "ThresholdedRelu"
             and all(a.f >= 0 for a in n.attribute if a.name == "alpha")}
    outputs = {o.name for o in graph.output}
    idle = {n.output[0]: n.input[0] for n in graph.node
            if n.op_type == "Relu" and n.input[0] in gated and n.output[0] not in outputs}
    if not idle:
        return proto
    kept = [n for n in graph.node if not (n.op_type == "Relu" and n.output[0] in idle)]
    for node in kept:
        for i, name in enumerate(node.input):
            if name in idle:
                node.input[i] = idle[name]
    del graph.node[:]
    graph.node.extend(kept)
    onnx.checker.check_model(proto, full_check=True)
    return proto
