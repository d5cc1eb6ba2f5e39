"""Foundations and adapters round-trip bit-exactly through safetensors + JSON, and an adapter
refuses a foundation it was not trained on."""

from __future__ import annotations

import json

import pytest
import torch

from taugate.training.adapters import (
    foundation_sha256,
    load_adapter,
    load_foundation,
    save_adapter,
    save_foundation,
)
from taugate.training.families.mlp import MLP, BackboneConfig
from taugate.training.methods import get_method


def _foundation(seed=0):
    torch.manual_seed(seed)
    return MLP(BackboneConfig(hidden=(16, 8)))


def test_foundation_round_trip(tmp_path):
    net = _foundation()
    sha = save_foundation(net, tmp_path / "f")
    back, meta = load_foundation(tmp_path / "f.safetensors")
    assert meta["sha256"] == sha == foundation_sha256(back)
    for (k, a), (_, b) in zip(net.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), k
    assert not list(tmp_path.glob("*.tmp")), "temporary files left behind"


def test_adapter_round_trip_is_bit_exact(tmp_path):
    net = _foundation()
    sha = save_foundation(net, tmp_path / "f")
    method = get_method("taugate", {"sharpness": 7.0})
    model = method.wrap(net)
    with torch.no_grad():
        for p in method.trainable(model).values():
            p.copy_(torch.randn_like(p))
    save_adapter(tmp_path / "a", method, model, sha, mode={"name": "rot45", "angle": 45.0})
    loaded = load_adapter(tmp_path / "a", net, sha)
    assert loaded.method.config.sharpness == 7.0
    got = loaded.method.trainable(loaded.model)
    for name, p in method.trainable(model).items():
        assert torch.equal(got[name], p), name
    x = torch.rand(8, 784)
    assert torch.equal(loaded.model(x), model.eval()(x))


def test_adapter_refuses_another_foundation(tmp_path):
    net, other = _foundation(0), _foundation(1)
    sha = save_foundation(net, tmp_path / "f")
    method = get_method("taugate")
    save_adapter(tmp_path / "a", method, method.wrap(net), sha, mode={"name": "rot0", "angle": 0.0})
    with pytest.raises(ValueError, match="trained on foundation"):
        load_adapter(tmp_path / "a", other)


def test_tampered_foundation_is_refused(tmp_path):
    save_foundation(_foundation(), tmp_path / "f")
    data = bytearray((tmp_path / "f.safetensors").read_bytes())
    data[-1] ^= 1
    (tmp_path / "f.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        load_foundation(tmp_path / "f")


def test_wrong_kind_is_refused(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"kind": "something-else"}))
    with pytest.raises(ValueError, match="expected kind 'taugate-foundation'"):
        load_foundation(tmp_path / "x")


def test_a_mode_name_with_a_dot_keeps_its_files(tmp_path):
    """``noise0.6`` is one name, not a stem and a suffix: its adapter files keep the dot."""
    from taugate.training.adapters import _paths

    st, js = _paths(tmp_path / "adapters" / "noise0.6")
    assert (st.name, js.name) == ("noise0.6.safetensors", "noise0.6.json")
    assert _paths(tmp_path / "noise0.6.json") == (st.parent.parent / "noise0.6.safetensors",
                                                 js.parent.parent / "noise0.6.json")
