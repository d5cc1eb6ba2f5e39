"""Pure builder: a decoder's weights (numpy) -> one ONNX decode graph with a key/value cache.

One graph serves the prompt and every later token (dynamic past length ``P``):

- inputs ``input_ids [B, T]`` int64, ``position_ids [T]`` int64 (``P .. P+T-1``),
  ``attn_bias [T, P+T]`` float32 (0 where a position may attend, -inf-like where not: causal
  for a prompt, all zeros for one token), and ``past_key_<i>`` / ``past_value_<i>``
  ``[B, heads, P, head_dim]`` per layer (``P`` may be 0);
- outputs ``logits [B, vocab]`` (the last position's) and ``present_key_<i>`` /
  ``present_value_<i>`` ``[B, heads, P+T, head_dim]``.

Batch-1 decode is a chain of small matrix-vector products, so every operator counts
(onnxruntime spends microseconds per node): q and k come from one ``MatMul`` with v, and rotary
is applied to q and k together on ``[B, T, 2*heads, 2, head_dim/2]`` (the halves reversed by
one ``Slice``, the sign of ``rotate_half`` folded into the sine table); the attention scale is
folded into q's weights; gate and up are one ``MatMul`` split in two. The hard gate of a mode is
``Where(z > t, silu(z), 0)``: ``silu(z) * 1[z > t]`` exactly, two operators. RMSNorm keeps the
``Pow, ReduceMean, Add, Sqrt, Div, Mul`` form that onnxruntime fuses into one kernel.
Only default-domain operators of opset 17 (docs/bundle-format.md, the LM bundle).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from taugate.bundle.lm import (
    ATTN_BIAS,
    INPUT_IDS,
    LOGITS,
    POSITION_IDS,
    past_names,
    present_names,
)
from taugate.exporting.graph import IR_VERSION, OPSET


@dataclass
class LayerWeights:
    """One block, as ``x @ W`` matrices ([in, out], float32)."""

    attn_norm: np.ndarray  # [dim]
    qkv: np.ndarray  # [dim, 3*dim]: q (scaled by 1/sqrt(head_dim)), k, v
    o: np.ndarray  # [dim, dim]
    ffn_norm: np.ndarray  # [dim]
    gate_up: np.ndarray  # [dim, 2*k]: gate's kept units, then up's
    down: np.ndarray  # [k, dim], gains folded
    threshold: np.ndarray | None  # [k] hard-gate thresholds; None: the dense SiLU


@dataclass
class DecoderWeights:
    embed: np.ndarray  # [vocab, dim]
    layers: list[LayerWeights]
    norm: np.ndarray  # [dim]
    head: np.ndarray  # [dim, vocab]
    heads: int
    context: int
    rope_theta: float
    eps: float


def rope_tables(context: int, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """cos and signed sin ``[context, 1, 2, head_dim/2]`` (the model's own float32 angles)."""
    import torch  # the same float32 arithmetic as TinyLlama's buffers

    half = head_dim // 2
    inv = theta ** (-torch.arange(half, dtype=torch.float32) / half)
    angles = torch.outer(torch.arange(context, dtype=torch.float32), inv)
    cos, sin = angles.cos().numpy(), angles.sin().numpy()
    cos_t = np.stack([cos, cos], axis=1)[:, None]
    sin_t = np.stack([-sin, sin], axis=1)[:, None]  # rotate_half's sign: [-x2, x1]
    return cos_t.astype(np.float32), sin_t.astype(np.float32)


class _Graph:
    def __init__(self):
        self.nodes: list = []
        self.inits: list = []
        self._n = 0

    def const(self, name: str, arr) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def op(self, op: str, inputs: list, n_out: int = 1, out: list | None = None, **attrs):
        self._n += 1
        outs = out or [f"{op.lower()}_{self._n}_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=f"{op}_{self._n}", **attrs))
        return outs[0] if n_out == 1 else outs


def _rms(g: _Graph, x: str, weight: str, eps: str, two: str) -> str:
    var = g.op("ReduceMean", [g.op("Pow", [x, two])], axes=[-1], keepdims=1)
    return g.op("Mul", [g.op("Div", [x, g.op("Sqrt", [g.op("Add", [var, eps])])]), weight])


def build_decoder(w: DecoderWeights, name: str = "decoder") -> onnx.ModelProto:
    """The decode graph of ``w`` (see the module docstring), checked by ``onnx.checker``."""
    g = _Graph()
    dim = w.embed.shape[1]
    heads, head_dim = w.heads, dim // w.heads
    half = head_dim // 2
    eps = g.const("eps", np.array(w.eps, np.float32))
    two = g.const("two", np.array(2.0, np.float32))
    zero = g.const("zero", np.array(0.0, np.float32))
    cos_t, sin_t = rope_tables(w.context, head_dim, w.rope_theta)
    cos = g.op("Gather", [g.const("rope_cos", cos_t), POSITION_IDS], axis=0)  # [T, 1, 2, half]
    sin = g.op("Gather", [g.const("rope_sin", sin_t), POSITION_IDS], axis=0)
    split_qkv = g.const("split_qkv", np.array([2 * dim, dim], np.int64))
    split_qk = g.const("split_qk", np.array([heads, heads], np.int64))
    shape_pairs = g.const("shape_pairs", np.array([0, 0, 2 * heads, 2, half], np.int64))
    shape_heads2 = g.const("shape_heads2", np.array([0, 0, 2 * heads, head_dim], np.int64))
    shape_heads = g.const("shape_heads", np.array([0, 0, heads, head_dim], np.int64))
    shape_flat = g.const("shape_flat", np.array([0, 0, dim], np.int64))
    rev = [g.const(n, np.array([v], np.int64)) for n, v in
           (("rev_start", -1), ("rev_end", -(2 ** 63) + 1), ("rev_axis", 3), ("rev_step", -1))]
    x = g.op("Gather", [g.const("embed", w.embed), INPUT_IDS], axis=0)  # [B, T, dim]
    inputs = [helper.make_tensor_value_info(INPUT_IDS, TensorProto.INT64, ["batch", "seq"]),
              helper.make_tensor_value_info(POSITION_IDS, TensorProto.INT64, ["seq"]),
              helper.make_tensor_value_info(ATTN_BIAS, TensorProto.FLOAT, ["seq", "total"])]
    outputs = [helper.make_tensor_value_info(LOGITS, TensorProto.FLOAT, ["batch", w.head.shape[1]])]
    for i, layer in enumerate(w.layers):
        pk, pv = past_names(i)
        ck, cv = present_names(i)
        for n in (pk, pv):
            inputs.append(helper.make_tensor_value_info(
                n, TensorProto.FLOAT, ["batch", heads, "past", head_dim]))
        for n in (ck, cv):
            outputs.append(helper.make_tensor_value_info(
                n, TensorProto.FLOAT, ["batch", heads, "total", head_dim]))
        p = f"l{i}_"
        h = _rms(g, x, g.const(p + "attn_norm", layer.attn_norm), eps, two)
        qk, v = g.op("Split", [g.op("MatMul", [h, g.const(p + "qkv", layer.qkv)]), split_qkv],
                     n_out=2, axis=-1)
        pairs = g.op("Reshape", [qk, shape_pairs])  # [B, T, 2H, 2, half]
        swapped = g.op("Slice", [pairs, *rev])
        rot = g.op("Add", [g.op("Mul", [pairs, cos]), g.op("Mul", [swapped, sin])])
        qk = g.op("Transpose", [g.op("Reshape", [rot, shape_heads2])], perm=[0, 2, 1, 3])
        q, k = g.op("Split", [qk, split_qk], n_out=2, axis=1)  # [B, H, T, D] each
        v = g.op("Transpose", [g.op("Reshape", [v, shape_heads])], perm=[0, 2, 1, 3])
        k = g.op("Concat", [pk, k], out=[ck], axis=2)
        v = g.op("Concat", [pv, v], out=[cv], axis=2)
        scores = g.op("Add", [g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])]),
                              ATTN_BIAS])
        att = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])  # [B, H, T, D]
        att = g.op("Reshape", [g.op("Transpose", [att], perm=[0, 2, 1, 3]), shape_flat])
        x = g.op("Add", [x, g.op("MatMul", [att, g.const(p + "o", layer.o)])])
        h = _rms(g, x, g.const(p + "ffn_norm", layer.ffn_norm), eps, two)
        units = layer.down.shape[0]
        split_gu = g.const(p + "split_gu", np.array([units, units], np.int64))
        z, up = g.op("Split", [g.op("MatMul", [h, g.const(p + "gate_up", layer.gate_up)]),
                               split_gu], n_out=2, axis=-1)
        act = g.op("Mul", [z, g.op("Sigmoid", [z])])
        if layer.threshold is not None:
            fire = g.op("Greater", [z, g.const(p + "threshold", layer.threshold)])
            act = g.op("Where", [fire, act, zero])
        x = g.op("Add", [x, g.op("MatMul", [g.op("Mul", [act, up]), g.const(p + "down",
                                                                          layer.down)])])
    last = g.op("Gather", [x, g.const("last", np.array(-1, np.int64))], axis=1)  # [B, dim]
    h = _rms(g, last, g.const("norm", w.norm), eps, two)
    g.op("MatMul", [h, g.const("head", w.head)], out=[LOGITS])
    graph = helper.make_graph(g.nodes, name, inputs, outputs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="taugate")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model
