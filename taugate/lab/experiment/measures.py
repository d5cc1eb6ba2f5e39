"""What the reproduction measures besides accuracy: gate statistics, mask overlap, ONNX parity.

Definitions (arXiv 2602.11726 leaves them loose; these are ours, also in docs/reproduce.md):

* **gate batch**: a fixed batch of ``gate_batch`` (1024) examples of the mode's *training*
  split, drawn with ``gate_seed`` (the same examples for every seed and method).
* **high-act frac**: the soft gate ``g = sigmoid(s * (z - tau))`` of every hidden unit on every
  example of the gate batch; the fraction of those values above 0.9, per hidden layer, then
  averaged over the hidden layers. Only gated methods (TauGate, TauOnly) have one.
* **mode mask** (Table 3): a hidden unit belongs to a model's mask on a batch when its gate is
  above 0.9 on at least ``overlap_min_frac`` (half) of the batch's examples. (The mean over
  units of that per-unit frequency is the layer's high-act frac: one notion of "high".)
* **overlap** (``jaccard``, Table 3's main column): the Jaccard similarity ``|A & B| / |A | B|``
  per hidden layer of the masks of the two specialized models (e.g. TauGate to 0 and to 45 deg)
  on the *same* inputs: both modes' gate batches together (2 x 1024 examples). Layer 1's
  pre-activations are then identical in both models (frozen W1, b1), so its overlap isolates
  how far the two adapters' thresholds moved apart; this reading is what makes the paper's
  1.000 for layer 1 possible. 1.0 when both masks are empty.
* **own-input overlap** (``jaccard_own``): the same, but each model's mask on its *own* mode's
  gate batch: which units each mode actually uses on its data (adapter + input shift).
"""

from __future__ import annotations

import numpy as np
import torch

from taugate.exporting.graph import INPUT_NAME, build_graph
from taugate.spec import HardenedModel
from taugate.summaries import jaccard, top1
from taugate.training.families.mlp import MLP
from taugate.training.gating import clear_gates, gates, set_hard
from taugate.training.sources import Split


def gate_batch(split: Split, size: int, seed: int) -> torch.Tensor:
    """``size`` rows of ``split.x`` chosen by ``seed`` (all of them when the split is smaller)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(split), generator=g)[:size]
    return split.x[idx]


@torch.no_grad()
def high_gate_frequency(model: MLP, x: torch.Tensor, threshold: float) -> list[np.ndarray] | None:
    """Per hidden layer, the fraction of rows of ``x`` on which each unit's soft gate exceeds
    ``threshold``; None for a model without gates."""
    set_hard(model.eval(), False)
    clear_gates(model)  # a stale gate from training must not count
    model(x)
    recorded = gates(model)
    if not recorded:
        return None
    return [(g > threshold).double().mean(0).cpu().numpy() for g in recorded]


def high_act_frac(frequencies: list[np.ndarray]) -> float:
    """The fraction of gate values above the threshold, averaged over the hidden layers."""
    return float(np.mean([f.mean() for f in frequencies]))


def mode_masks(frequencies: list[np.ndarray], min_frac: float) -> list[np.ndarray]:
    """A unit is in the mode's mask when it is high on at least ``min_frac`` of the batch."""
    return [f >= min_frac for f in frequencies]


def mask_overlap(model_a: MLP, model_b: MLP, x_a: torch.Tensor, x_b: torch.Tensor,
                 threshold: float, min_frac: float) -> list[dict]:
    """Per hidden layer: ``jaccard`` (shared inputs ``x_a + x_b``), ``jaccard_own`` (each model
    on its own mode's ``x``), and the shared-input mask sizes ``units_a``, ``units_b``."""
    both = torch.cat([x_a, x_b])
    shared_a = mode_masks(_frequency(model_a, both, threshold), min_frac)
    shared_b = mode_masks(_frequency(model_b, both, threshold), min_frac)
    own_a = mode_masks(_frequency(model_a, x_a, threshold), min_frac)
    own_b = mode_masks(_frequency(model_b, x_b, threshold), min_frac)
    return [
        {"layer": i + 1, "jaccard": jaccard(sa, sb), "jaccard_own": jaccard(oa, ob),
         "units_a": int(sa.sum()), "units_b": int(sb.sum())}
        for i, (sa, sb, oa, ob) in enumerate(zip(shared_a, shared_b, own_a, own_b))
    ]


def _frequency(model: MLP, x: torch.Tensor, threshold: float) -> list[np.ndarray]:
    freq = high_gate_frequency(model, x, threshold)
    if freq is None:
        raise ValueError("mask overlap: expected gated models (TauGate, TauOnly), got ungated ones")
    return freq


class OnnxScorer:
    """The accuracy of a hardened model's ONNX graph (export/graph.py) through onnxruntime."""

    def __init__(self, hardened: HardenedModel, name: str = "model"):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        proto = build_graph(hardened, name)
        self.session = ort.InferenceSession(
            proto.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )

    def logits(self, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32)
        out = [self.session.run(None, {INPUT_NAME: x[i : i + batch_size]})[0]
               for i in range(0, len(x), batch_size)]
        return np.concatenate(out)

    def accuracy(self, split: Split) -> float:
        return top1(self.logits(split.x.numpy()), split.y.numpy())
