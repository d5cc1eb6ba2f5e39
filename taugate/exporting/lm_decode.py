"""A decoder language model (training/lm/model.py) and its modes -> compacted decode graphs.

A mode is the foundation wrapped by an adaptation method with hard gates (or its
:class:`~taugate.spec.GatedSpec`). Each FFN is compacted by the one compaction
(exporting/compact.py): a unit whose gain is 0, or that never fires on the calibration tokens,
loses its rows of ``gate`` and ``up`` and its column of ``down``; the kept gains are folded into
``down``. The compacted torch model is the reference the graph (exporting/lm_graph.py) is
checked against: step logits (:mod:`taugate.exporting.lm_parity`) and greedy output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from taugate.exporting.compact import (
    GatedLinear,
    KeptUnits,
    compact,
    firing_counts,
    hard_gated,
    keep_masks,
)
from taugate.exporting.lm_graph import DecoderWeights, LayerWeights
from taugate.spec import GatedSpec


def mode_spec(mode: nn.Module | GatedSpec) -> GatedSpec:
    """The spec of a mode: given as is, or read from a model an adaptation method wrapped."""
    if isinstance(mode, GatedSpec):
        return mode
    from taugate.training.gating import gate_modules, targets_of
    from taugate.training.methods.taugate import TauGateActivation

    try:
        targets_of(mode)
        acts = gate_modules(mode)
    except (ValueError, AttributeError) as exc:
        raise TypeError(f"a mode: expected a model wrapped by the taugate method or a "
                        f"GatedSpec, got {type(mode).__name__} ({exc})") from None
    if not acts or not all(isinstance(a, TauGateActivation) for _, a in acts):
        raise TypeError(f"a mode: expected a model wrapped by the taugate method (its FFN "
                        f"activations TauGateActivation), got {type(mode).__name__}")
    from taugate.training.methods.taugate import TauGate

    return TauGate().harden_spec(mode)


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().float().cpu().numpy(), np.float32)


def decoder_weights(model: nn.Module) -> DecoderWeights:
    """The graph's weights of a TinyLlama-layout model (dense, or compacted: a gate that is a
    :class:`GatedLinear` carries its thresholds)."""
    cfg = model.cfg
    scale = 1.0 / float(np.sqrt(cfg.dim // cfg.heads))
    layers = []
    for block in model.blocks:
        a, f = block.attn, block.ffn
        qkv = np.concatenate([_np(a.q.weight).T * np.float32(scale), _np(a.k.weight).T,
                              _np(a.v.weight).T], axis=1)
        gate = f.gate
        threshold = _np(gate.threshold) if isinstance(gate, GatedLinear) else None
        if gate.bias is not None or f.up.bias is not None or f.down.bias is not None:
            raise ValueError("the decode graph expects bias-free FFN projections (LLaMA layout)")
        layers.append(LayerWeights(
            attn_norm=_np(block.attn_norm.weight), qkv=np.ascontiguousarray(qkv),
            o=np.ascontiguousarray(_np(a.o.weight).T), ffn_norm=_np(block.ffn_norm.weight),
            gate_up=np.ascontiguousarray(np.concatenate([_np(gate.weight).T, _np(f.up.weight).T],
                                                        axis=1)),
            down=np.ascontiguousarray(_np(f.down.weight).T), threshold=threshold))
    return DecoderWeights(embed=_np(model.embed.weight), layers=layers, norm=_np(model.norm.weight),
                          head=np.ascontiguousarray(_np(model.head.weight).T), heads=cfg.heads,
                          context=cfg.context, rope_theta=cfg.rope_theta, eps=cfg.eps)


@dataclass
class CompactedLM(KeptUnits):
    """One mode compacted in torch."""

    name: str
    spec: GatedSpec
    small: nn.Module  # the compacted hard-gated decoder (TinyLlama.step works on it)
    masks: list[np.ndarray]


def compact_lm(name: str, foundation: nn.Module, mode: nn.Module | GatedSpec,
               calibration: torch.Tensor | None = None) -> CompactedLM:
    """Compact ``mode``'s FFNs: units with gain 0, or (when ``calibration`` token ids
    ``[N, T]`` are given) units that never fire on them, are removed."""
    spec = mode_spec(mode)
    if calibration is None:
        counts = [np.ones(t.units, np.int64) for t in spec.targets]
    else:
        calibration = torch.as_tensor(calibration, dtype=torch.long)
        if calibration.dim() != 2 or calibration.numel() == 0:
            raise ValueError(f"calibration: expected token ids [N, T], got shape "
                             f"{tuple(calibration.shape)}")
        counts = firing_counts(hard_gated(foundation.eval(), spec), spec, calibration, 64)
    masks = keep_masks(spec, counts)
    small, _ = compact(foundation.eval(), spec, masks)
    return CompactedLM(name, spec, small.eval(), masks)


def ffn_macs(model_units: list[int], dim: int) -> int:
    """FFN multiply-accumulates per token: gate, up and down of each layer."""
    return sum(3 * dim * k for k in model_units)


@torch.no_grad()
def torch_greedy(model: nn.Module, prompt: torch.Tensor, new_tokens: int) -> list[int]:
    """Greedy tokens of ``model.step`` (batch 1): the reference the graphs must reproduce."""
    logits, past = model.step(prompt.view(1, -1))
    out = []
    for _ in range(new_tokens):
        token = int(logits[0].argmax())
        out.append(token)
        if len(out) == new_tokens:
            break
        logits, past = model.step(torch.tensor([[token]]), past)
    return out
