"""Checks of a decode graph against its torch model: step logits and greedy tokens.

A small onnxruntime decode loop of its own (exporting may not import the runtime); the feeds
come from taugate/bundle/lm.py, the same contract the runtime's generator uses.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from taugate.bundle.lm import LOGITS, decode_feed, past_names, present_names
from taugate.exporting.compaction import ParityError


class GraphDecoder:
    """Batch decode with one graph (onnxruntime, CPU, one thread), the cache growing by
    ``Concat`` semantics (past ``P`` positions in, ``P + T`` out): the simplest feed, checked
    against the same graph's in-place form by the runtime's tests."""

    def __init__(self, data: bytes, layers: int, heads: int, head_dim: int):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        self.layers, self.heads, self.head_dim = layers, heads, head_dim
        self.outputs = [LOGITS] + [n for i in range(layers) for n in present_names(i)]

    def step(self, ids: np.ndarray, past: list | None) -> tuple[np.ndarray, list]:
        """``ids [B, T]`` after ``past`` (None: none); the last logits and the new cache."""
        b = ids.shape[0]
        if past is None:
            z = np.zeros((b, self.heads, 0, self.head_dim), np.float32)
            past = [z] * (2 * self.layers)
        feed = decode_feed(ids, past[0].shape[2])
        feed.update({n: past[j] for j, n in enumerate(
            n for i in range(self.layers) for n in past_names(i))})
        out = self.session.run(self.outputs, feed)
        return out[0], out[1:]

    def greedy(self, prompt: np.ndarray, new_tokens: int) -> list[int]:
        logits, past = self.step(prompt.reshape(1, -1), None)
        out = []
        for _ in range(new_tokens):
            out.append(int(logits[0].argmax()))
            if len(out) == new_tokens:
                break
            logits, past = self.step(np.array([[out[-1]]], np.int64), past)
        return out


def decoder_for(data: bytes, model: nn.Module) -> GraphDecoder:
    cfg = model.cfg
    return GraphDecoder(data, cfg.layers, cfg.heads, cfg.dim // cfg.heads)


@torch.no_grad()
def step_logit_diff(data: bytes, model: nn.Module, ids: torch.Tensor, steps: int = 4) -> float:
    """Max |logit| difference between the graph and ``model.step`` over the prompt ``ids``
    ``[B, T]`` and ``steps`` fed-back greedy tokens (the torch model's)."""
    g = decoder_for(data, model)
    ref, past = model.step(ids)
    got, gpast = g.step(ids.numpy(), None)
    worst = float(np.abs(ref.numpy() - got).max())
    for _ in range(steps):
        nxt = ref.argmax(-1, keepdim=True)
        ref, past = model.step(nxt, past)
        got, gpast = g.step(nxt.numpy(), gpast)
        worst = max(worst, float(np.abs(ref.numpy() - got).max()))
    return worst


def check_step_parity(name: str, data: bytes, model: nn.Module, ids: torch.Tensor,
                      atol: float) -> float:
    """:class:`ParityError` when the graph's step logits differ from the model's by > atol."""
    diff = step_logit_diff(data, model, ids)
    if not diff <= atol:
        raise ParityError(f"{name}: the decode graph's logits differ from the torch model's by "
                          f"{diff:.3g} (> {atol:g}): an exporter bug")
    return diff
