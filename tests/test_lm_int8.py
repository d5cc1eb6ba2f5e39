"""The LM decode graphs' int8 variant (exporting/lm_int8.py) and the fused residual norms."""

import numpy as np
import onnx
import pytest
import torch

from taugate.exporting.lm_decode import compact_lm, decoder_weights
from taugate.exporting.lm_graph import build_decoder
from taugate.exporting.lm_int8 import dequantize_weight, quantize_decoder, quantize_weight
from taugate.exporting.lm_parity import step_logit_diff
from taugate.exporting.quantize import quantize
from tests.lm_fixtures import CFG, foundation, mode


def _ids():
    return torch.randint(0, 256, (2, 7), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("k", [128, 200, 16])  # a multiple of the block, padded, one short block
def test_block_quantized_weights_round_trip_within_half_a_step(k):
    w = np.random.default_rng(0).standard_normal((k, 24)).astype(np.float32)
    w[:, 3] = 0  # an all-zero output unit keeps a finite scale
    b, scales = quantize_weight(w, 128)
    blocks = -(-k // 128)
    assert b.dtype == np.uint8 and b.shape == (24, blocks, 128)
    assert scales.shape == (24 * blocks,) and np.all(np.isfinite(scales))
    back = dequantize_weight(b, scales, k)
    step = np.repeat(scales.reshape(24, blocks), 128, axis=1)[:, :k].T
    assert back.shape == w.shape and np.all(np.abs(back - w) <= step / 2 + 1e-7)
    assert np.all(back[:, 3] == 0)
    assert np.all(b.reshape(24, -1)[:, k:] == 128)  # the padding stands for zeros


def test_every_weight_matmul_becomes_one_8bit_matmulnbits():
    base = foundation()
    fp32 = build_decoder(decoder_weights(base))
    weights = {n.input[1] for n in fp32.graph.node if n.op_type == "MatMul"}
    q = onnx.load_from_string(quantize_decoder(fp32.SerializeToString()))
    ops = [n.op_type for n in q.graph.node]
    assert "MatMul" not in ops and ops.count("MatMulNBits") == len(weights) == 4 * CFG.layers + 1
    for n in q.graph.node:
        if n.op_type == "MatMulNBits":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            assert attrs["bits"] == 8 and attrs["accuracy_level"] == 4 and n.domain == \
                "com.microsoft"
    names = {t.name for t in q.graph.initializer}
    assert not names & weights  # the float32 weights are gone, not carried beside the int8


def test_int8_mode_graph_is_closer_to_torch_than_per_tensor_dynamic_quantization():
    base = foundation()
    c = compact_lm("code", base, mode(base))
    data = build_decoder(decoder_weights(c.small)).SerializeToString()
    ids = _ids()
    spread = float(c.small.step(ids)[0].std())
    blocks = step_logit_diff(quantize_decoder(data), c.small, ids)
    dynamic = step_logit_diff(quantize(data, weights_only=True), c.small, ids)
    assert 0 < blocks < 0.1 * spread and blocks < dynamic


def test_a_block_that_is_not_a_power_of_two_is_refused():
    data = build_decoder(decoder_weights(foundation())).SerializeToString()
    with pytest.raises(ValueError, match="block: expected a power of two >= 16, got 100"):
        quantize_decoder(data, 100)


def test_each_residual_add_but_the_last_is_fused_into_the_next_norm():
    graph = build_decoder(decoder_weights(foundation())).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("SkipSimplifiedLayerNormalization") == 2 * CFG.layers - 1
    assert ops.count("Add") == 3  # the first and last norms' epsilon, the last residual
