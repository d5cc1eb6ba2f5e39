"""Per-domain modes: FFN units pruned to the MAC target, hard-gated, saved as adapters."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from taugate.exporting.compact import compact
from taugate.exporting.lm_decode import compact_lm
from taugate.training.gating import gate_modules
from taugate.training.lm.measure import decode_macs, ffn_mac_ratio, greedy, mean_nll, perplexity
from taugate.training.lm.model import LMConfig, TinyLlama
from taugate.training.lm.modes import ModeConfig, ffn_importance, load_mode, train_mode, train_modes
from taugate.training.methods.lora import LoRALinear

CONFIG = ModeConfig(sparse_steps=3, retune_steps=2, batch_size=2, seq_len=16,
                    importance_windows=2, target_mac_ratio=3.0, distill=0.5)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _foundation(seed=0):
    torch.manual_seed(seed)
    return TinyLlama(LMConfig(dim=16, heads=2, layers=2, ffn=48, context=32)).eval()


def _tokens(seed=0, n=600):
    return np.random.default_rng(seed).integers(0, 256, n).astype(np.uint8)


def test_perplexity_is_exp_of_the_mean_next_byte_loss():
    m, tokens = _foundation(), _tokens(n=65)
    with torch.no_grad():
        ids = torch.from_numpy(tokens.astype(np.int64))
        logits = m(ids[None, :32])
        ce = torch.nn.functional.cross_entropy(logits[0], ids[1:33]).item()
    assert mean_nll(m, tokens, context=32, max_tokens=32) == pytest.approx(ce, rel=1e-5)
    assert perplexity(m, tokens, context=32, max_tokens=32) == pytest.approx(math.exp(ce), rel=1e-5)
    with pytest.raises(ValueError, match="to make a window"):
        perplexity(m, tokens[:10], context=32)


def test_a_mode_meets_the_ffn_mac_target_with_hard_gates():
    foundation = _foundation()
    before = {k: v.clone() for k, v in foundation.state_dict().items()}
    method, model, info = train_mode(foundation, _tokens(), CONFIG, progress=False)
    assert ffn_mac_ratio(model) == info["ffn_mac_ratio"] >= 3.0
    assert all(k >= 1 for k in info["kept"]) and sum(info["kept"]) == 96 // 3
    assert all(act.hard for _, act in gate_modules(model))
    # the foundation itself is untouched and the mode still decodes with its cache
    assert all(torch.equal(v, before[k]) for k, v in foundation.state_dict().items())
    assert len(greedy(model, b"ab", 4)) == 4
    macs = decode_macs(foundation.cfg, info["kept"])
    assert macs["ffn"] == 3 * 16 * sum(info["kept"])


def test_modes_are_saved_checked_against_their_foundation_and_reused(tmp_path):
    foundation = _foundation()
    domains = {"code": _tokens(1), "prose": _tokens(2)}
    modes = train_modes(foundation, domains, CONFIG, tmp_path, progress=False)
    assert set(modes) == {"code", "prose"}
    _, loaded, meta = load_mode(tmp_path / "code", foundation)
    ids = torch.from_numpy(domains["code"][:20].astype(np.int64))[None]
    with torch.no_grad():
        assert torch.equal(loaded(ids), modes["code"][0](ids))
    assert meta["mode"]["domain"] == "code"
    with pytest.raises(ValueError, match="trained on foundation"):
        load_mode(tmp_path / "code", _foundation(seed=1))
    stamp = (tmp_path / "code.safetensors").stat().st_mtime_ns
    train_modes(foundation, domains, CONFIG, tmp_path, progress=False)
    assert (tmp_path / "code.safetensors").stat().st_mtime_ns == stamp  # loaded, not retrained


def test_bad_mode_configs_are_refused():
    with pytest.raises(ValueError, match="target_mac_ratio"):
        ModeConfig(target_mac_ratio=0.5)
    with pytest.raises(ValueError, match="sparse_steps"):
        ModeConfig(sparse_steps=0)
    with pytest.raises(ValueError, match="distill: expected in"):
        ModeConfig(distill=1.5)


def test_importance_counts_the_up_projection():
    """A SwiGLU unit whose ``up`` row is zero sends nothing to ``down``, however its gate fires."""
    foundation = _foundation()
    with torch.no_grad():
        foundation.blocks[0].ffn.up.weight[5].zero_()
    model = ModeConfig().method().wrap(foundation)
    ids = torch.from_numpy(_tokens(n=64).astype(np.int64)).view(2, 32)
    scores = ffn_importance(model, ids)
    assert scores[0][5] == 0 and (scores[0] > 0).sum() == 47 and (scores[1] > 0).all()


def test_the_ffn_correction_is_trained_and_merged_into_the_compacted_mode():
    """Every layer's gate and up carry the mode's low-rank correction; export merges it, so
    the compacted mode computes what the trained mode computes, and without it would not."""
    foundation = _foundation()
    _, model, _ = train_mode(foundation, _tokens(), CONFIG, progress=False)
    corrected = {n for n, m in model.named_modules() if isinstance(m, LoRALinear)}
    assert corrected == {f"blocks.{i}.ffn.{p}" for i in range(2) for p in ("gate", "up")}
    assert all(m.lora_B.abs().sum() > 0 for m in model.modules() if isinstance(m, LoRALinear))
    ids = torch.from_numpy(_tokens(3, 40).astype(np.int64)).view(2, 20)
    compacted = compact_lm("code", foundation, model)
    assert set(compacted.spec.overrides) == {f"{n}.weight" for n in corrected}
    bare, _ = compact(foundation, replace(compacted.spec, overrides={}), compacted.masks)
    with torch.no_grad():
        assert torch.allclose(compacted.small(ids), model(ids), atol=1e-4)
        assert not torch.allclose(bare(ids), model(ids), atol=1e-4)


def test_correction_rank_is_checked():
    with pytest.raises(ValueError, match="correction_rank"):
        ModeConfig(correction_rank=-1)
    assert ModeConfig(correction_rank=0).method().config.correction_rank == 0
    from taugate.training.methods.taugate import TauGateConfig
    with pytest.raises(ValueError, match="correction_sites: expected one of first, ffn, got 'all'"):
        TauGateConfig(correction_rank=4, correction_sites="all")
