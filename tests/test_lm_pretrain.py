"""Pretraining: seeded batches, resumes exactly where it stopped, a verified foundation."""

import json

import numpy as np
import pytest
import torch

from taugate.training.adapters import foundation_sha256
from taugate.training.lm import pretrain as pt
from taugate.training.lm.model import LMConfig

CFG = LMConfig(dim=16, heads=2, layers=1, ffn=32, context=16)
CONFIG = pt.PretrainConfig(steps=6, batch_size=2, seq_len=16, warmup=2, checkpoint_every=2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data():
    rng = np.random.default_rng(0)
    return {"code": rng.integers(0, 256, 500).astype(np.uint8),
            "prose": rng.integers(0, 256, 300).astype(np.uint8)}


def test_batches_are_a_function_of_seed_and_step():
    data = _data()
    a = pt.sample_windows(data, CONFIG.mixture, 0, 3, 16, 4)
    assert a.shape == (4, 17) and torch.equal(a, pt.sample_windows(data, CONFIG.mixture, 0, 3, 16, 4))
    assert not torch.equal(a, pt.sample_windows(data, CONFIG.mixture, 0, 4, 16, 4))
    only = pt.sample_windows(data, {"prose": 1.0}, 0, 3, 16, 64)
    prose = data["prose"].tobytes()
    assert all(bytes(row.tolist()) in prose for row in only.to(torch.uint8))


def test_lr_warms_up_then_decays_to_the_floor():
    c = pt.PretrainConfig(steps=100, warmup=10, lr=1.0, min_lr_ratio=0.1)
    assert c.lr_at(0) == pytest.approx(0.1) and c.lr_at(9) == pytest.approx(1.0)
    assert c.lr_at(10) == pytest.approx(1.0) and c.lr_at(100) == pytest.approx(0.1)
    assert c.lr_at(50) < c.lr_at(30)


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    data = _data()
    whole, meta = pt.pretrain(CFG, CONFIG, data, tmp_path / "whole", progress=False)
    assert meta["sha256"] == foundation_sha256(whole)
    real = pt.sample_windows

    def crash_at_5(data, mixture, seed, step, *rest):
        if step == 5:
            raise KeyboardInterrupt
        return real(data, mixture, seed, step, *rest)

    monkeypatch.setattr(pt, "sample_windows", crash_at_5)
    with pytest.raises(KeyboardInterrupt):
        pt.pretrain(CFG, CONFIG, data, tmp_path / "cut", progress=False)
    state = json.loads((tmp_path / "cut" / "state.json").read_text())
    assert state["step"] == 4 and not (tmp_path / "cut" / "foundation.json").exists()
    monkeypatch.setattr(pt, "sample_windows", real)
    resumed, _ = pt.pretrain(CFG, CONFIG, data, tmp_path / "cut", progress=False)
    for k, v in whole.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    # complete: loaded, not retrained; other data: trained again
    again, meta2 = pt.pretrain(CFG, CONFIG, data, tmp_path / "cut", progress=False)
    assert meta2["sha256"] == meta["sha256"]
    other = {**data, "code": data["code"][::-1].copy()}
    changed, meta3 = pt.pretrain(CFG, CONFIG, other, tmp_path / "cut", progress=False)
    assert meta3["sha256"] != meta["sha256"]


def test_a_tampered_foundation_is_refused(tmp_path):
    pt.pretrain(CFG, pt.PretrainConfig(steps=1, batch_size=1, seq_len=8, warmup=1), _data(),
                tmp_path, progress=False)
    path = tmp_path / "foundation.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="sha256 does not match"):
        pt.load_lm_foundation(tmp_path)
    with pytest.raises(FileNotFoundError, match="expected a pretrained"):
        pt.load_lm_foundation(tmp_path / "nowhere")


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="mixture"):
        pt.PretrainConfig(mixture={"poetry": 1.0})
    with pytest.raises(ValueError, match="steps: expected >= 1"):
        pt.PretrainConfig(steps=0)
