"""LM decode graphs: compaction, parity with torch (step logits, greedy), the format 3 bundle."""

import json

import numpy as np
import onnx
import pytest
import torch

from taugate.bundle.errors import BundleFormatError, BundleIntegrityError
from taugate.bundle.graph_check import check_model
from taugate.bundle.lm import parse_lm_manifest
from taugate.bundle.manifest import parse_manifest
from taugate.exporting.lm_bundle import write_lm_bundle
from taugate.exporting.lm_decode import compact_lm, decoder_weights, torch_greedy
from taugate.exporting.lm_graph import build_decoder
from taugate.exporting.lm_parity import decoder_for, step_logit_diff
from taugate.exporting.quantize import quantize
from taugate.training.gating import gate_modules, set_hard
from tests.lm_fixtures import PROMPT, calibration, code_bundle, foundation, mode


@pytest.fixture(scope="module")
def lm_bundle(tmp_path_factory):
    return code_bundle(tmp_path_factory.mktemp("lm") / "bundle", calibration=calibration())


def _ids(b=2, t=7):
    return torch.randint(0, 256, (b, t), generator=torch.Generator().manual_seed(1))


def test_dense_graph_step_logits_match_torch():
    base = foundation()
    data = build_decoder(decoder_weights(base)).SerializeToString()
    assert step_logit_diff(data, base, _ids()) < 1e-5
    assert step_logit_diff(data, base, _ids(1, 1)) < 1e-5  # a one-token prompt


def test_mode_graph_matches_the_hard_gated_model_and_int8_stays_close():
    base = foundation()
    wrapped = mode(base)
    c = compact_lm("code", base, wrapped)  # no calibration: only gain-0 units go
    hard = set_hard(wrapped, True)
    ids = _ids()
    with torch.no_grad():  # compaction is exact: same logits as the wrapped hard-gated model
        assert torch.allclose(c.small.step(ids)[0], hard.step(ids)[0], atol=1e-5)
    data = build_decoder(decoder_weights(c.small)).SerializeToString()
    assert step_logit_diff(data, c.small, ids) < 1e-5
    int8 = quantize(data, weights_only=True)
    spread = float(c.small.step(ids)[0].std())
    assert 0 < step_logit_diff(int8, c.small, ids) < 0.5 * spread


def test_units_with_gain_zero_or_never_firing_are_removed():
    base = foundation()
    wrapped = mode(base)
    gains = [a.gain.detach() for _, a in gate_modules(wrapped)]
    c = compact_lm("code", base, wrapped)
    assert c.units_kept == [int((g != 0).sum()) for g in gains]
    with torch.no_grad():  # a threshold no unit reaches: nothing fires on calibration
        for _, a in gate_modules(wrapped):
            a.tau.fill_(1e4)
    c = compact_lm("code", base, wrapped, calibration())
    assert c.units_kept == [1, 1]  # every graph keeps one unit to stay valid
    assert c.small.blocks[0].ffn.down.weight.shape == (32, 1)


def test_the_hard_gate_is_where_of_silu():
    base = foundation()
    c = compact_lm("code", base, mode(base))
    ops = [n.op_type for n in build_decoder(decoder_weights(c.small)).graph.node]
    assert ops.count("Where") == ops.count("Greater") == 2  # one gate per layer
    dense_ops = [n.op_type for n in build_decoder(decoder_weights(base)).graph.node]
    assert "Where" not in dense_ops and len(dense_ops) == len(ops) - 4


def test_each_residual_add_but_the_last_is_fused_into_the_next_norm():
    graph = build_decoder(decoder_weights(foundation())).graph
    ops = [n.op_type for n in graph.node]
    layers = len(foundation().blocks)
    assert ops.count("SkipSimplifiedLayerNormalization") == 2 * layers - 1
    assert ops.count("Add") == 3  # the first and last norms' epsilon, the last residual


def test_bundle_records_greedy_match_and_mac_ratio(lm_bundle):
    m = json.loads((lm_bundle / "manifest.json").read_text())
    entry = m["modes"]["code"]
    assert entry["greedy_match"] is True
    assert entry["ffn_mac_ratio"] == pytest.approx(sum(entry["units_total"])
                                                   / sum(entry["units_kept"]))
    assert set(entry["graphs"]) == set(m["dense"]["graphs"]) == {"fp32", "int8"}
    assert entry["step_logit_diff"]["fp32"] < 1e-3
    parse_lm_manifest(m)


def test_greedy_output_of_the_graph_is_the_torch_hard_gated_models(lm_bundle):
    base = foundation()
    wrapped = set_hard(mode(base), True)
    prompt = torch.tensor(list(PROMPT))
    data = (lm_bundle / "modes" / "code.onnx").read_bytes()
    assert decoder_for(data, base).greedy(prompt.numpy(), 24) == torch_greedy(wrapped, prompt, 24)


def test_every_graph_passes_the_format3_operator_check(lm_bundle):
    for path in sorted(lm_bundle.rglob("*.onnx")):
        check_model(path.read_bytes(), 3, path.name)
        assert onnx.load(path).opset_import[0].version == 17
    with pytest.raises(BundleIntegrityError, match="not allowed"):  # the format 1 allowlist
        check_model((lm_bundle / "dense.onnx").read_bytes(), 1, "dense.onnx")


def test_the_classifier_reader_refuses_an_lm_bundle_clearly(lm_bundle):
    m = json.loads((lm_bundle / "manifest.json").read_text())
    with pytest.raises(BundleFormatError, match="language-model bundle.*Generator"):
        parse_manifest(m)


def test_bad_arguments_leave_nothing_written(tmp_path):
    base = foundation()
    with pytest.raises(ValueError, match="precisions"):
        write_lm_bundle(base, {"code": mode(base)}, tmp_path / "b", precisions=("int8",))
    with pytest.raises(TypeError, match="taugate method"):
        write_lm_bundle(base, {"code": base}, tmp_path / "b", precisions=("fp32",))
    with pytest.raises(ValueError, match="calibration"):
        write_lm_bundle(base, {"code": mode(base)}, tmp_path / "b", precisions=("fp32",),
                        calibration=np.zeros((0, 4), np.int64))
    assert list(tmp_path.iterdir()) == []
