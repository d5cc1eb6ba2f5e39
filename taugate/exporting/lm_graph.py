"""Pure builder: a decoder's weights (numpy) -> one ONNX decode graph with a key/value cache.

One graph serves the prompt and every later token (docs/bundle-format.md, format 3):

- inputs ``input_ids [B, T]`` int64, ``seqlens_k [B]`` int32 (``P + T - 1``: cached + new
  positions, minus one), ``total_sequence_length`` int32 scalar (``P + T``), and per layer
  ``past_key_<i>`` / ``past_value_<i>`` ``[B, heads, S, head_dim]``;
- outputs ``logits [B, vocab]`` (the last position's) and ``present_key_<i>`` /
  ``present_value_<i>``.

Attention is onnxruntime's ``GroupQueryAttention`` (domain ``com.microsoft``, on CPU since
onnxruntime 1.18) with its rotary embedding (``do_rotary``, the model's own cos/sin tables,
``rotate_half`` form): one node per layer instead of about twenty standard ones, and, with
``S`` = the context and past and present bound to one buffer, the cache is updated in place
instead of copied by a ``Concat`` every token (measured: that copy, not the FFN, dominated
batch-8 decode). With ``S = P`` (a growing cache) it returns ``P + T`` positions instead.

Each residual add but the last is fused into the RMSNorm that follows it
(``SkipSimplifiedLayerNormalization``, ``com.microsoft``: the norm and the sum, one kernel).
Every other operator is default-domain opset 17: the attention scale is folded into q's
weights, q/k/v are one ``MatMul`` and gate/up another (split in two); the hard gate of a mode is
``Where(z > t, silu(z), 0)`` -- exactly ``silu(z) * 1[z > t]``, two operators; the first and
the last RMSNorm keep the ``Pow, ReduceMean, Add, Sqrt, Div, Mul`` form onnxruntime fuses into
one kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from taugate.bundle.lm import (
    INPUT_IDS,
    LOGITS,
    SEQLENS_K,
    TOTAL_LEN,
    past_names,
    present_names,
)
from taugate.exporting.graph import IR_VERSION, OPSET

MS = "com.microsoft"


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
    """cos and sin ``[context, head_dim/2]`` (the model's own float32 angles)."""
    import torch  # the same float32 arithmetic as TinyLlama's buffers

    half = head_dim // 2
    inv = theta ** (-torch.arange(half, dtype=torch.float32) / half)
    angles = torch.outer(torch.arange(context, dtype=torch.float32), inv)
    return angles.cos().numpy().astype(np.float32), angles.sin().numpy().astype(np.float32)


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


def _skip_rms(g: _Graph, delta: str, x: str, weight: str, eps: float) -> tuple[str, str]:
    """``x + delta`` and its RMSNorm, in one kernel (the residual sum is output 3)."""
    h, s = f"{weight}_in", f"{weight}_sum"
    g.op("SkipSimplifiedLayerNormalization", [delta, x, weight], n_out=4, out=[h, "", "", s],
         domain=MS, epsilon=eps)
    return h, s


def _ffn(g: _Graph, h: str, layer: LayerWeights, p: str, zero: str) -> str:
    """The FFN of ``h`` (the normed residual stream): what its ``down`` adds to the stream."""
    units = layer.down.shape[0]
    split = g.const(p + "split_gu", np.array([units, units], np.int64))
    z, up = g.op("Split", [g.op("MatMul", [h, g.const(p + "gate_up", layer.gate_up)]), split],
                 n_out=2, axis=-1)
    act = g.op("Mul", [z, g.op("Sigmoid", [z])])
    if layer.threshold is not None:
        fire = g.op("Greater", [z, g.const(p + "threshold", layer.threshold)])
        act = g.op("Where", [fire, act, zero])
    return g.op("MatMul", [g.op("Mul", [act, up]), g.const(p + "down", layer.down)])


def build_decoder(w: DecoderWeights, name: str = "decoder") -> onnx.ModelProto:
    """The decode graph of ``w`` (see the module docstring), checked by ``onnx.checker``
    (the contrib ops' schemas are onnxruntime's: checked by the parity tests instead)."""
    g = _Graph()
    dim = w.embed.shape[1]
    heads, head_dim = w.heads, dim // w.heads
    eps = g.const("eps", np.array(w.eps, np.float32))
    two = g.const("two", np.array(2.0, np.float32))
    zero = g.const("zero", np.array(0.0, np.float32))
    cos, sin = rope_tables(w.context, head_dim, w.rope_theta)
    g.const("rope_cos", cos)
    g.const("rope_sin", sin)
    inputs = [helper.make_tensor_value_info(INPUT_IDS, TensorProto.INT64, ["batch", "seq"]),
              helper.make_tensor_value_info(SEQLENS_K, TensorProto.INT32, ["batch"]),
              helper.make_tensor_value_info(TOTAL_LEN, TensorProto.INT32, [])]
    outputs = [helper.make_tensor_value_info(LOGITS, TensorProto.FLOAT, ["batch", w.head.shape[1]])]
    x = g.op("Gather", [g.const("embed", w.embed), INPUT_IDS], axis=0)  # [B, T, dim]
    delta = None  # what the previous block adds to x: added in the next norm's kernel
    for i, layer in enumerate(w.layers):
        pk, pv = past_names(i)
        ck, cv = present_names(i)
        inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT,
                                                 ["batch", heads, "past", head_dim])
                   for n in (pk, pv)]
        outputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT,
                                                  ["batch", heads, "present", head_dim])
                    for n in (ck, cv)]
        p = f"l{i}_"
        norm = g.const(p + "attn_norm", layer.attn_norm)
        if delta is None:
            h = _rms(g, x, norm, eps, two)
        else:
            h, x = _skip_rms(g, delta, x, norm, w.eps)
        qkv = g.op("MatMul", [h, g.const(p + "qkv", layer.qkv)])  # packed: no key/value inputs
        att = g.op("GroupQueryAttention", [qkv, "", "", pk, pv, SEQLENS_K, TOTAL_LEN, "rope_cos",
                                           "rope_sin"], n_out=3, out=[f"att_{i}", ck, cv],
                   domain=MS, num_heads=heads, kv_num_heads=heads, scale=1.0, do_rotary=1,
                   rotary_interleaved=0)[0]
        h, x = _skip_rms(g, g.op("MatMul", [att, g.const(p + "o", layer.o)]), x,
                         g.const(p + "ffn_norm", layer.ffn_norm), w.eps)
        delta = _ffn(g, h, layer, p, zero)
    x = g.op("Add", [x, delta])
    last = g.op("Gather", [x, g.const("last", np.array(-1, np.int64))], axis=1)  # [B, dim]
    h = _rms(g, last, g.const("norm", w.norm), eps, two)
    g.op("MatMul", [h, g.const("head", w.head)], out=[LOGITS])
    graph = helper.make_graph(g.nodes, name, inputs, outputs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                    helper.make_opsetid(MS, 1)],
                              producer_name="taugate")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model
