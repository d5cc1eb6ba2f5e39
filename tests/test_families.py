"""Model families, one registry: the paper's mlp (pinned sizes), the small ViT, and user
factories with strictly loaded safetensors weights; every family answers the same questions."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from taugate.training.adapters import load_foundation, save_foundation
from taugate.training.backbone import FoundationConfig
from taugate.training.families import FAMILIES, family_of, get_family, pretrainable
from taugate.training.families.mlp import MLP, BackboneConfig
from taugate.training.families.user import load_factory, load_weights
from taugate.training.families.vit import ViT, ViTConfig
from taugate.training.sources import DataFacts

USER_MODEL = '''
from torch import nn

def build():
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))

def not_a_module():
    return 42
'''


@pytest.mark.parametrize("config, params", [
    (BackboneConfig(), 784 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10),  # 118,282 (paper)
    (BackboneConfig(hidden=(1024, 1024)), 784 * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 10 + 10),
    (BackboneConfig(input_dim=13, hidden=(32, 24, 16), num_classes=3),
     13 * 32 + 32 + 32 * 24 + 24 + 24 * 16 + 16 + 16 * 3 + 3),
])
def test_mlp_parameter_counts(config, params):
    assert sum(p.numel() for p in MLP(config).parameters()) == params


def test_vit_defaults_are_measured_sizes():
    model = ViT()
    c = model.config
    assert (c.patch, c.dim, c.heads, c.depth, c.ffn, c.tokens) == (7, 64, 4, 4, 256, 17)
    block = 2 * 128 + (64 * 192 + 192) + (64 * 64 + 64) + (64 * 256 + 256) + (256 * 64 + 64)
    embed = (49 * 64 + 64) + 64 + 17 * 64  # patch embedding, class token, positions
    assert sum(p.numel() for p in model.parameters()) == embed + 4 * block + 128 + (64 * 10 + 10)
    x = torch.rand(3, 784)
    assert model(x).shape == (3, 10)
    assert torch.equal(model(x), model(x.reshape(3, 1, 28, 28)))  # flat or image input


@pytest.mark.parametrize("kwargs, field", [({"patch": 5}, "patch"), ({"heads": 3}, "heads"),
                                           ({"activation": "tanh"}, "activation"),
                                           ({"depth": 0}, "depth")])
def test_vit_config_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ViTConfig(**kwargs)


def test_family_registry():
    assert set(FAMILIES) == {"mlp", "vit", "user", "hf"} and pretrainable() == ["mlp", "vit"]
    assert family_of(get_family("vit").build({"depth": 1})).name == "vit"
    assert family_of(MLP()).name == "mlp"
    assert family_of(nn.Sequential(nn.Linear(2, 2))).name == "user"
    with pytest.raises(ValueError, match="unknown key.*'width_'.*valid: channels"):
        get_family("vit").build({"width_": 3})
    with pytest.raises(ValueError, match="'cnn' is not a model family; valid: mlp, vit, user, hf"):
        get_family("cnn")
    with pytest.raises(ValueError, match="--model FILE.py:FACTORY"):
        FoundationConfig(family="user")


def test_mlp_state_dict_keys_are_the_saved_foundations():
    # every saved foundation and the golden run load by these keys: they must never change
    assert list(MLP().state_dict()) == ["input_mean", "input_std", "linears.0.weight",
                                        "linears.0.bias", "linears.1.weight", "linears.1.bias",
                                        "linears.2.weight", "linears.2.bias"]


FACTS = {  # (data facts, family option) -> what the family's config becomes
    "mlp": (DataFacts((13,), 3, 0.5, 2.0), {},
            lambda fc: (fc.backbone.input_dim, fc.backbone.num_classes, fc.backbone.input_std),
            (13, 3, 2.0)),
    "vit": (DataFacts((3, 8, 8), 4, 0.2, 0.4), {"patch": 4},
            lambda fc: tuple(fc.family_config[k] for k in ("channels", "height", "num_classes")),
            (3, 8, 4)),
}


@pytest.mark.parametrize("name", ["mlp", "vit"])
def test_family_table_build_fit_save_load(tmp_path, name):
    """Every pretrainable family: defaults, fit to data, build, save, load: one code path."""
    facts, option, read, want = FACTS[name]
    family = get_family(name)
    fc = family.fit_to_data(FoundationConfig(family=name, family_config=option), facts)
    assert read(fc) == want
    torch.manual_seed(0)
    model = family.build(family.foundation_config(fc))
    assert family_of(model) is family and family.owns(model)
    x = torch.rand(2, *facts.shape)
    save_foundation(model, tmp_path / "f")
    loaded, meta = load_foundation(tmp_path / "f")
    assert meta["family"] == name and type(loaded) is type(model)
    assert torch.equal(loaded(x), model.eval()(x))
    assert family.optimizer in ("sgd", "adam") and family.lr > 0


def test_user_family_saves_its_factory(tmp_path):
    f = tmp_path / "net.py"
    f.write_text(USER_MODEL)
    model = load_factory(f"{f}:build")
    save_foundation(model, tmp_path / "given")  # a module from Python: no factory to record
    with pytest.raises(ValueError, match="pass it again"):
        load_foundation(tmp_path / "given")
    assert load_foundation(tmp_path / "given", model)[0] is model  # checked by sha256
    save_foundation(model, tmp_path / "f", factory=f"{f}:build")
    loaded, meta = load_foundation(tmp_path / "f")
    assert meta["family"] == "user" and meta["factory"] == f"{f}:build"
    x = torch.rand(2, 6)
    assert torch.equal(loaded(x), model(x))
    assert not get_family("user").per_layer and get_family("mlp").per_layer


def test_only_the_mlp_has_a_per_layer_form():
    from taugate.training.methods import get_method

    method = get_method("frozen")
    assert len(method.harden(MLP()).layers) == 3
    with pytest.raises(TypeError, match="mlp family only.*ViT.*harden_spec"):
        method.harden(get_family("vit").build({"depth": 1}))


def test_user_factory_and_strict_weights(tmp_path):
    f = tmp_path / "net.py"
    f.write_text(USER_MODEL)
    model = load_factory(f"{f}:build")
    assert isinstance(model, nn.Sequential)
    torch.manual_seed(3)
    good = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
    save_file(good, tmp_path / "w.safetensors")
    load_weights(model, tmp_path / "w.safetensors")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in good.items())

    bad = dict(good)
    bad.pop("2.bias")
    bad["extra.weight"] = torch.zeros(1)
    bad["0.weight"] = torch.zeros(16, 7)
    save_file(bad, tmp_path / "bad.safetensors")
    with pytest.raises(ValueError) as err:
        load_weights(load_factory(f"{f}:build"), tmp_path / "bad.safetensors")
    msg = str(err.value)
    assert "missing keys: 2.bias" in msg and "unexpected keys: extra.weight" in msg
    assert "0.weight: file (16, 7) vs model (16, 6)" in msg


@pytest.mark.parametrize("spec, match", [
    ("net.py", "expected FILE.py:FACTORY"),
    ("net.py:nope", "has no function 'nope'; callables there: build, not_a_module"),
    ("net.py:not_a_module", "returned int, expected"),
    ("absent.py:build", "does not exist"),
])
def test_user_factory_errors(tmp_path, monkeypatch, spec, match):
    (tmp_path / "net.py").write_text(USER_MODEL)
    monkeypatch.chdir(tmp_path)
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        load_factory(spec)


def test_weights_are_never_unpickled(tmp_path):
    (tmp_path / "net.py").write_text(USER_MODEL)
    model = load_factory(f"{tmp_path / 'net.py'}:build")
    torch.save(model.state_dict(), tmp_path / "w.pt")
    with pytest.raises(ValueError, match="expected a .safetensors file"):
        load_weights(model, tmp_path / "w.pt")
    (tmp_path / "w.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_weights(model, tmp_path / "w.safetensors")
