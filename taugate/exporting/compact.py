"""Hard-gate, measure and compact any frozen torch model from a ``GatedSpec``; export to ONNX.

The torch side of docs/bundle-v2.md section 1 (export itself never imports torch):

- :func:`hard_gated`: the foundation with the spec's overrides, every target Linear replaced by a
  :class:`GatedLinear` (``z * 1[z > t]``) and the gains folded into the consumers' columns. Gating
  the producer's output is exact for every supported activation, since ``act(0) == 0``
  (training/activations.py): ``act(z * 1[z > t]) == act(z) * 1[z > t]``; in a gated FFN the
  product with ``up`` keeps that, and pruning a unit removes ``up``'s row too.
- :func:`firing_counts` / :func:`keep_masks`: a unit is kept when it fires on the calibration
  inputs (any position, for token models) and its gain is not exactly 0.
- :func:`compact`: keep-index surgery (Torch-Pruning's habit): producer rows + bias + thresholds,
  consumer columns multiplied by the kept gains. A ReLU target whose kept thresholds are all 0
  becomes a plain Linear (the model's own ReLU is the gate), so the graph has no threshold ops.
- :func:`export_onnx`: ``torch.onnx.export`` with the TorchScript exporter chosen explicitly
  (``dynamo=False``: the only one on torch 2.4, still there on 2.14), opset 17, IR 8, a dynamic
  batch axis, no constant folding (initializers keep their state-dict names, which is what lets
  the bundle rebuild them from the shared backbone), then ``onnx.checker`` full check.

Only torch APIs that exist in torch 2.4 are used.
"""

from __future__ import annotations

import copy
import inspect
import io
import warnings
from dataclasses import dataclass, replace

import numpy as np
import onnx
import torch
from torch import nn

from taugate.exporting.conv import GatedConv2d, rebuilt_conv
from taugate.exporting.graph import IR_VERSION, OPSET
from taugate.exporting.macs import linear_macs
from taugate.spec import GatedSpec

__all__ = ["GatedConv2d", "GatedLinear", "Surgery", "apply_surgery", "compact", "export_onnx",
           "firing_counts", "firing_rates", "gate_margins", "hard_gated", "keep_masks",
           "linear_macs", "plan_surgery"]


class GatedLinear(nn.Linear):
    """``z = x W^T + b`` followed by the hard gate ``z * 1[z > threshold]`` (per output unit).

    The gate is ``Greater -> Cast -> Mul`` in ONNX: exact, no row scaling, so int8/fp16
    quantizers see the producer's own weights. ``counts`` (when set) accumulates how often each
    unit fires, over every position of every sample.
    """

    def __init__(self, in_features: int, out_features: int, threshold: torch.Tensor):
        super().__init__(in_features, out_features)
        self.register_buffer("threshold", threshold.detach().clone().float())
        self.counts: torch.Tensor | None = None
        self.margins: list | None = None  # per sample: min |z - threshold| over units, positions

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = super().forward(x)
        fire = z > self.threshold
        if self.counts is not None:
            self.counts += fire.reshape(-1, z.shape[-1]).sum(0)
        if self.margins is not None:
            # only units whose gate is a jump: at |t| ~ 0 a flip changes act(z) by ~0
            gap = (z - self.threshold).abs().masked_fill(self.threshold.abs() <= 1e-5, np.inf)
            self.margins.append(gap.reshape(z.shape[0], -1).amin(1))
        return z * fire.to(z.dtype)


def _linear(model: nn.Module, path: str, role: str) -> nn.Linear | nn.Conv2d:
    try:
        mod = model.get_submodule(path)
    except AttributeError:
        raise ValueError(f"{role} {path!r}: no such module in the model") from None
    if not isinstance(mod, (nn.Linear, nn.Conv2d)):  # a spec naming the wrong module
        raise ValueError(
            f"{role} {path!r}: expected an nn.Linear or nn.Conv2d, got {type(mod).__name__}")
    return mod


def _outs(mod: nn.Module) -> int:
    return mod.out_channels if isinstance(mod, nn.Conv2d) else mod.out_features


def _ins(mod: nn.Module) -> int:
    return mod.in_channels if isinstance(mod, nn.Conv2d) else mod.in_features


def _set_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, new)


def _with_overrides(model: nn.Module, spec: GatedSpec) -> nn.Module:
    """A deep copy of ``model`` (eval, no grad) with the spec's whole-tensor overrides."""
    out = copy.deepcopy(model).eval().requires_grad_(False)
    state = out.state_dict()
    for name, value in spec.overrides.items():
        if name not in state:
            raise ValueError(f"overrides: {name!r} is not a state-dict entry of the model")
        value = torch.as_tensor(np.asarray(value))
        if value.shape != state[name].shape:
            raise ValueError(f"overrides: {name!r} has shape {tuple(value.shape)}, the model's "
                             f"is {tuple(state[name].shape)}")
        state[name].copy_(value.to(state[name].dtype))
    return out


class KeptUnits:
    """Units kept / total per target, read from a compacted model's ``masks`` (one boolean
    array per target)."""

    masks: list[np.ndarray]

    @property
    def units_kept(self) -> list[int]:
        return [int(m.sum()) for m in self.masks]

    @property
    def units_total(self) -> list[int]:
        return [int(m.size) for m in self.masks]


@dataclass(frozen=True)
class Surgery:
    """What happens to one Linear: kept output rows (+ thresholds), kept input columns and the
    gains they are multiplied by. None: that side is untouched."""

    rows: np.ndarray | None = None  # int64 kept output units (producer)
    threshold: np.ndarray | None = None  # float32 thresholds of the kept rows (producer)
    gated: bool = False  # producer needs the gate (False: plain Linear, the ReLU gates)
    cols: np.ndarray | None = None  # int64 kept input units (consumer)
    gain: np.ndarray | None = None  # float32 gains of the kept columns (consumer)
    cols_from: str | None = None  # the producer whose kept units ``cols`` are
    conv: bool = False  # a Conv2d: rows/cols are output/input channels (axes 0/1 of 4-D)


def plan_surgery(model: nn.Module, spec: GatedSpec, masks: list[np.ndarray] | None
                 ) -> dict[str, Surgery]:
    """module path -> :class:`Surgery` for every producer and consumer of ``spec`` (all units
    kept when ``masks`` is None)."""
    plan: dict[str, dict] = {}
    for i, target in enumerate(spec.targets):
        prod = _linear(model, target.producer, "producer")
        cons = _linear(model, target.consumer, "consumer")
        if _outs(prod) != target.units or _ins(cons) != target.units:
            raise ValueError(f"target {target.producer}: {target.units} units, but the producer "
                             f"has {_outs(prod)} outputs and the consumer {_ins(cons)} inputs")
        if isinstance(prod, nn.Conv2d) != isinstance(cons, nn.Conv2d):
            raise ValueError(f"target {target.producer}: a {type(prod).__name__} producer with a "
                             f"{type(cons).__name__} consumer; expected two nn.Linear or two "
                             f"nn.Conv2d")
        keep = np.ones(target.units, bool) if masks is None else np.asarray(masks[i], bool)
        idx = np.flatnonzero(keep).astype(np.int64)
        t = target.threshold.astype(np.float32)[idx]
        gated = target.activation != "relu" or bool(np.any(t > 0))
        plan.setdefault(target.producer, {}).update(rows=idx, threshold=t, gated=gated,
                                                    conv=isinstance(prod, nn.Conv2d))
        if target.up is not None:  # a gated FFN: up's rows go with the gate's units
            if _linear(model, target.up, "up").out_features != target.units:
                raise ValueError(f"target {target.producer}: up {target.up!r} has "
                                 f"{_linear(model, target.up, 'up').out_features} outputs, "
                                 f"expected {target.units}")
            plan.setdefault(target.up, {}).update(rows=idx)
        plan.setdefault(target.consumer, {}).update(cols=idx, cols_from=target.producer,
                                                    gain=target.gain.astype(np.float32)[idx])
    return {path: Surgery(**fields) for path, fields in plan.items()}


def _rebuilt(old: nn.Linear | nn.Conv2d, s: Surgery) -> nn.Module:
    w, b = old.weight.detach(), None if old.bias is None else old.bias.detach()
    if s.rows is not None:
        rows = torch.from_numpy(s.rows)
        w = w.index_select(0, rows)
        b = None if b is None else b.index_select(0, rows)
    if s.cols is not None:
        w = w.index_select(1, torch.from_numpy(s.cols))
        if s.gain is not None and not np.all(s.gain == 1):
            w = w * torch.from_numpy(s.gain).view(1, -1, *[1] * (w.dim() - 2))
    if isinstance(old, nn.Conv2d):
        return rebuilt_conv(old, w, b, s.threshold if s.gated else None)
    out_f, in_f = w.shape
    new = (GatedLinear(in_f, out_f, torch.from_numpy(s.threshold)) if s.gated
           else nn.Linear(in_f, out_f, bias=b is not None))
    if b is None and new.bias is not None:  # a bias-free producer (LLaMA's gate_proj)
        new.register_parameter("bias", None)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
    return new.eval().requires_grad_(False)


def apply_surgery(model: nn.Module, spec: GatedSpec, masks: list[np.ndarray] | None
                  ) -> tuple[nn.Module, dict[str, Surgery]]:
    """The hard-gated (``masks`` None) or compacted model, and the surgery plan."""
    out = _with_overrides(model, spec)
    plan = plan_surgery(out, spec, masks)
    for path, s in plan.items():
        if masks is None and s.rows is not None and s.threshold is not None:
            s = replace(s, gated=True)  # count firing
        _set_module(out, path, _rebuilt(_linear(out, path, "target"), s))
    for target in spec.targets:
        # a gated ReLU unit already outputs z * 1[z > t] >= 0 (t >= 0): its ReLU is one more
        # operator per layer for nothing (about 3% of a 784-128-128-10 mode at batch 256)
        gated = masks is None or plan[target.producer].gated
        if target.activation == "relu" and target.act is not None and gated:
            _set_module(out, target.act, nn.Identity())
    return out, plan


def hard_gated(model: nn.Module, spec: GatedSpec) -> nn.Module:
    """The uncompacted hard-gated model (every unit kept, gains folded)."""
    return apply_surgery(model, spec, None)[0]


@torch.no_grad()
def firing_counts(hard: nn.Module, spec: GatedSpec, x: torch.Tensor, batch_size: int = 512
                  ) -> list[np.ndarray]:
    """How often each target unit fires on ``x`` (summed over samples and positions)."""
    return _firing(hard, spec, x, batch_size)[0]


@torch.no_grad()
def firing_rates(hard: nn.Module, spec: GatedSpec, x: torch.Tensor, batch_size: int = 512
                 ) -> list[np.ndarray]:
    """The fraction of inputs of ``x`` on which each target unit fires: per sample for flat
    models, per position (token) for token models (counts / positions seen)."""
    counts, seen = _firing(hard, spec, x, batch_size)
    return [c / max(n, 1) for c, n in zip(counts, seen)]


def _firing(hard: nn.Module, spec: GatedSpec, x: torch.Tensor, batch_size: int
            ) -> tuple[list[np.ndarray], list[int]]:
    gates = [hard.get_submodule(t.producer) for t in spec.targets]
    seen = [0] * len(gates)
    hooks = []
    for i, g in enumerate(gates):
        g.counts = torch.zeros(_outs(g), dtype=torch.int64)
        axis = 1 if isinstance(g, nn.Conv2d) else -1  # a conv's units are its channels

        def hook(mod, inp, out, i=i, axis=axis):
            seen[i] += out.numel() // out.shape[axis]
        hooks.append(g.register_forward_hook(hook))
    try:
        for i in range(0, len(x), batch_size):
            hard(x[i : i + batch_size])
        return [g.counts.numpy().copy() for g in gates], seen
    finally:
        for g in gates:
            g.counts = None
        for h in hooks:
            h.remove()


@torch.no_grad()
def gate_margins(hard: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Per sample of ``x``: how close any gated unit with a threshold away from 0 comes to it
    (min |z - t| over units with |t| > 1e-5; inf when none).

    A sample whose margin is within float rounding of 0 can flip a gate between two correct
    implementations that sum in another order (torch vs onnxruntime), changing the output by a
    jump of act(t): parity is judged on the other samples."""
    gates = [m for m in hard.modules() if isinstance(m, (GatedLinear, GatedConv2d))]
    for g in gates:
        g.margins = []
    try:
        hard(x)
        per_gate = [torch.cat(g.margins) for g in gates]
    finally:
        for g in gates:
            g.margins = None
    if not per_gate:
        return torch.full((len(x),), float("inf"))
    return torch.stack(per_gate).amin(0)


def keep_masks(spec: GatedSpec, counts: list[np.ndarray]) -> list[np.ndarray]:
    """Kept units: fired at least once and gain not exactly 0. A target left with no unit keeps
    its most active one (an all-zero column, exact) so every graph stays a valid ONNX graph."""
    masks = []
    for target, c in zip(spec.targets, counts):
        keep = (c > 0) & (target.gain != 0)
        if not keep.any():
            keep[int(np.argmax(c))] = True
        masks.append(keep)
    return masks


def compact(model: nn.Module, spec: GatedSpec, masks: list[np.ndarray]
            ) -> tuple[nn.Module, dict[str, Surgery]]:
    """The compacted hard-gated model and its surgery plan."""
    return apply_surgery(model, spec, masks)


def export_onnx(model: nn.Module, example: torch.Tensor, input_name: str = "input",
                output_name: str = "logits") -> onnx.ModelProto:
    """``model`` as an opset-17, IR-8 ONNX model with a dynamic batch axis, fully checked."""
    buf = io.BytesIO()
    # torch >= 2.9 defaults to the dynamo exporter; torch 2.4 has no such argument
    kwargs = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters \
        else {}
    mha = getattr(torch.backends, "mha", None)
    if not hasattr(mha, "set_fastpath_enabled"):  # older torch: no switch (and no fast path
        mha = None  # under tracing)
    fastpath = mha.get_fastpath_enabled() if mha else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        if mha:  # the fused attention kernel has no ONNX export
            mha.set_fastpath_enabled(False)
        try:
            torch.onnx.export(model.eval(), (example[:2],), buf, opset_version=OPSET,
                              input_names=[input_name], output_names=[output_name],
                              dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
                              do_constant_folding=False, **kwargs)
        finally:
            if mha:
                mha.set_fastpath_enabled(fastpath)
    proto = onnx.load_from_string(buf.getvalue())
    opsets = {o.domain or "": o.version for o in proto.opset_import}
    if opsets.get("", OPSET) != OPSET or set(opsets) - {""}:
        raise ValueError(f"the exporter wrote opsets {opsets}; expected only ai.onnx {OPSET}")
    proto.ir_version = min(proto.ir_version, IR_VERSION)  # opset 17 needs nothing of IR 9+
    onnx.checker.check_model(proto, full_check=True)
    return proto
