"""The decoder: cached decode equals the full forward, and its FFNs are gated sites."""

import pytest
import torch

from taugate.training.lm.model import LMConfig, TinyLlama
from taugate.training.targets import resolve_targets


def _model():
    torch.manual_seed(0)
    return TinyLlama(LMConfig(dim=32, heads=2, ffn=64, layers=2, context=16)).eval()


def test_cached_decode_matches_the_full_forward():
    m = _model()
    ids = torch.randint(0, 256, (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = m(ids)
        logits, past = m.step(ids[:, :6])
        assert torch.allclose(logits, full[:, 5], atol=1e-5)
        for i in range(6, 10):
            logits, past = m.step(ids[:, i:i + 1], past)
            assert torch.allclose(logits, full[:, i], atol=1e-5)
    assert past[0][0].shape == (2, 2, 10, 16)


def test_every_ffn_is_a_swiglu_site():
    sites = resolve_targets(_model(), torch.zeros(2, 8, dtype=torch.long)).sites
    assert [(s.producer, s.up, s.consumer, s.activation) for s in sites] == [
        (f"blocks.{i}.ffn.gate", f"blocks.{i}.ffn.up", f"blocks.{i}.ffn.down", "silu")
        for i in range(2)]


def test_context_and_shapes_are_checked():
    m = _model()
    with pytest.raises(ValueError, match="exceed the model's context"):
        m.step(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="split into 3 heads"):
        LMConfig(dim=32, heads=3)
