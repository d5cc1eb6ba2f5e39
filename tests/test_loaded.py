"""Bring your own model and modes, end to end: `taugate train --modes-dir --model --weights
--targets` writes a run; `load_run` reads it back for the exporter; every method's GatedSpec
describes its hard-gated model exactly; the foundation stays frozen bit-exactly."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from taugate.bundle.schema import InputSpec, OutputSpec
from taugate.cli import main
from taugate.training.gating import targets_of
from taugate.training.loaded import load_run
from taugate.training.loop import TrainConfig
from taugate.training.methods import METHODS
from taugate.training.pipeline import AdaptConfig, adapt
from taugate.training.sources import FolderModes
from taugate.training.targets import resolve_targets, set_module
from tests.test_sources import write_mode

USER_MODEL = '''
from collections import OrderedDict
from torch import nn

def build():
    """Depth 3, 6 inputs, arbitrary module names."""
    return nn.Sequential(OrderedDict([
        ("inp", nn.Linear(6, 24)), ("r1", nn.ReLU()),
        ("mid", nn.Linear(24, 20)), ("r2", nn.ReLU()), ("do", nn.Dropout(0.1)),
        ("deep", nn.Linear(20, 16)), ("r3", nn.ReLU()),
        ("cls", nn.Linear(16, 3)),
    ]))
'''


class HardGate(nn.Module):
    """The GatedSpec's meaning (docs/bundle-v2.md): gain * act(z) * 1[z > threshold]."""

    def __init__(self, units):
        super().__init__()
        self.act = torch.relu if units.activation == "relu" else nn.functional.gelu
        self.t, self.g = torch.from_numpy(units.threshold), torch.from_numpy(units.gain)

    def forward(self, z):
        return self.g * self.act(z) * (z > self.t).to(z.dtype)


def apply_spec(foundation, spec, targets):
    """A reference reading of a GatedSpec on the foundation: overrides loaded, gates swapped in."""
    model = copy.deepcopy(foundation)
    state = model.state_dict()
    for k, v in spec.overrides.items():
        assert k in state and tuple(state[k].shape) == v.shape, k
        state[k] = torch.from_numpy(v)
    model.load_state_dict(state)
    act_of = {s.producer: s.act for s in targets.sites}
    for units in spec.targets:
        set_module(model, act_of[units.producer], HardGate(units))
    return model.eval()


@pytest.fixture
def user_run(tmp_path):
    modes = tmp_path / "modes"
    write_mode(modes, "site-a", n=120, seed=1)
    write_mode(modes, "site-b", n=120, seed=2)
    (tmp_path / "net.py").write_text(USER_MODEL)
    torch.manual_seed(0)
    from taugate.training.families.user import load_factory

    weights = {k: v.clone() for k, v in load_factory(f"{tmp_path / 'net.py'}:build").state_dict().items()}
    save_file(weights, tmp_path / "w.safetensors")
    return tmp_path, modes


def test_modes_dir_round_trip_with_a_user_model(user_run, capsys):
    tmp, modes = user_run
    rc = main(["train", "--out", str(tmp / "run"), "--modes-dir", str(modes),
               "--model", f"{tmp / 'net.py'}:build", "--weights", str(tmp / "w.safetensors"),
               "--targets", "inp,deep", "--adapt-epochs", "2", "--batch-size", "32", "--quiet",
               "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    run = load_run(tmp / "run")
    assert run.family == "user" and sorted(run.modes) == ["site-a", "site-b"]
    assert run.input_spec == InputSpec.plain((6,)) and run.output_spec == OutputSpec.logits(3)
    assert run.input_spec.to_dict() == {"name": "input", "dtype": "float32", "shape": ["batch", 6],
                                        "range": None, "layout": None}
    assert run.targets == ["inp", "deep"]
    assert [(s.act, s.consumer) for s in run.sites] == [("r1", "mid"), ("r3", "cls")]
    frozen = load_file(tmp / "w.safetensors")
    for k, v in run.foundation.state_dict().items():
        assert torch.equal(v, frozen[k]), k  # the foundation is the user's weights, bit-exact
    assert not any(p.requires_grad for p in run.foundation.parameters())
    src = FolderModes(modes)
    for name, mode in run.modes.items():
        assert mode.method == "taugate" and mode.facts == {"source": "folder"}
        assert [(u.producer, u.consumer, u.activation) for u in mode.spec.targets] == \
            [("inp", "mid", "relu"), ("deep", "cls", "relu")]
        assert mode.spec.overrides == {} and mode.spec.meta["mode"] == name
        assert torch.equal(mode.calibration[0], src.mode(name).calibration.x)
        assert mode.test[0].shape == (120, 6) and mode.test[1].dtype == torch.int64
        hard = mode.hard_model()
        ref = apply_spec(run.foundation, mode.spec, targets_of(mode.adapter.model))
        x = mode.test[0]
        assert torch.allclose(hard(x), ref(x), atol=1e-5)
    meta = json.loads((tmp / "run" / "run.json").read_text())
    assert meta["format"] == "taugate-run" and meta["source"]["kind"] == "folder"


def _sequential_run(method, tmp_path, sparse=False):
    (tmp_path / "net.py").write_text(USER_MODEL)
    from taugate.training.families.user import load_factory

    torch.manual_seed(0)
    foundation = load_factory(f"{tmp_path / 'net.py'}:build").eval()
    for p in foundation.parameters():
        p.requires_grad_(False)
    write_mode(tmp_path / "modes", "m", n=96, seed=4)
    md = FolderModes(tmp_path / "modes").mode("m")
    targets = resolve_targets(foundation, md.train.x[:4])
    mc = {"unit_l1": 0.5, "retune_epochs": 1} if sparse else {}
    cfg = AdaptConfig(method, mc, TrainConfig(epochs=2, batch_size=16, lr=0.2))
    before = {k: v.clone() for k, v in foundation.state_dict().items()}
    m, model = adapt(foundation, md, cfg, progress=False, targets=targets)
    return foundation, before, m, model, md, targets


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_on_a_user_sequential(method, tmp_path):
    foundation, before, m, model, md, targets = _sequential_run(method, tmp_path)
    for k, v in foundation.state_dict().items():
        assert torch.equal(v, before[k]), f"{method} changed the frozen {k}"
    spec = m.harden_spec(model, {"mode": "m"})
    assert spec.meta["method"] == method
    ref = apply_spec(foundation, spec, targets)
    from taugate.training.gating import set_hard

    hard = set_hard(model, True).eval()
    assert torch.allclose(hard(md.test.x), ref(md.test.x), atol=1e-5)
    changed = {"frozen": set(), "taugate": set(), "tau_only": set(), "gain_only": set(),
               "bitfit": {"inp.bias", "mid.bias", "deep.bias", "cls.bias"},
               "lora": {f"{n}.weight" for n in ("inp", "mid", "deep", "cls")},
               "full_ft": set(before)}[method]
    assert set(spec.overrides) == changed


@pytest.mark.parametrize("method", ["taugate", "gain_only"])
def test_sparse_methods_zero_units_on_a_user_model(method, tmp_path):
    _, _, m, model, _, _ = _sequential_run(method, tmp_path, sparse=True)
    spec = m.harden_spec(model)
    assert sum(int((u.gain == 0).sum()) for u in spec.targets) > 0


GELU_VIT = ["--family", "vit", "--family-option", "depth=1", "--family-option", "dim=16",
            "--family-option", "heads=2", "--family-option", "ffn=32", "--family-option", "patch=4",
            "--family-option", "activation=gelu"]


def test_tiny_transformer_end_to_end(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for k, name in enumerate(("up", "down")):
        folder = tmp_path / "modes" / name
        folder.mkdir(parents=True)
        for split in ("train", "test"):
            y = rng.integers(0, 2, 160).astype(np.int64)
            x = rng.normal(size=(160, 1, 8, 8)).astype(np.float32) * 0.3
            rows = slice(0, 4) if k == 0 else slice(4, 8)  # each mode: the class in another half
            x[:, 0, rows, :] += y[:, None, None] * 1.5 - 0.75
            np.savez(folder / f"{split}.npz", x=x, y=y)
    rc = main(["train", "--out", str(tmp_path / "run"), "--modes-dir", str(tmp_path / "modes"),
               *GELU_VIT, "--epochs", "3", "--adapt-epochs", "2", "--batch-size", "32",
               "--quiet", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    run = load_run(tmp_path / "run")
    assert run.family == "vit" and run.targets == ["blocks.0.ffn.fc1"]
    assert run.input_spec.shape == (1, 8, 8)
    for mode in run.modes.values():
        (units,) = mode.spec.targets
        assert (units.consumer, units.activation, units.units) == ("blocks.0.ffn.fc2", "gelu", 32)
        tau = mode.adapter.model.get_submodule("blocks.0.ffn.act").tau.detach().numpy()
        assert np.array_equal(units.threshold, tau)  # gelu: t = tau, negative ones included
        ref = apply_spec(run.foundation, mode.spec, targets_of(mode.adapter.model))
        x = mode.test[0]
        assert torch.allclose(mode.hard_model()(x), ref(x), atol=1e-5)
        acc = float((mode.hard_model()(x).argmax(1) == mode.test[1]).float().mean())
        assert acc > 0.7  # learnable in seconds: the class is a bright half of the image


@pytest.mark.parametrize("args, fragments", [
    (["--method-option", "colour=3"], ["unknown option(s) 'colour'", "valid: sharpness"]),
    (["--method", "bitfit", "--sparse"], ["method 'bitfit': unknown option(s) 'unit_l1'"]),
    (["--targets", "nope"], ["'nope' matches no nn.Linear", "inp, mid, deep, cls"]),
    (["--targets", "cls"], ["'cls'", "no consumer"]),
])
def test_train_errors_are_one_line(user_run, capsys, args, fragments):
    tmp, modes = user_run
    rc = main(["train", "--out", str(tmp / "run"), "--modes-dir", str(modes),
               "--model", f"{tmp / 'net.py'}:build", "--weights-in-factory", "--quiet", "--device", "cpu", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err


def test_gain_only_sparse_trains(user_run, capsys):
    tmp, modes = user_run
    rc = main(["train", "--out", str(tmp / "run"), "--modes-dir", str(modes), "--modes", "site-a",
               "--model", f"{tmp / 'net.py'}:build", "--weights-in-factory", "--method", "gain_only", "--sparse",
               "--retune-epochs", "1", "--batch-size", "32", "--quiet", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    cfg = json.loads((tmp / "run" / "adapters" / "site-a.json").read_text())["method_config"]
    assert cfg["sparsity"]["unit_l1"] > 0 and cfg["retune"]["epochs"] == 1
    assert load_run(tmp / "run").modes["site-a"].method == "gain_only"


def test_mlp_family_on_folder_data(user_run, capsys):
    """The built-in mlp trained on non-image data: input size, classes and normalization
    come from the data."""
    tmp, modes = user_run
    rc = main(["train", "--out", str(tmp / "run"), "--modes-dir", str(modes), "--hidden", "16,8",
               "--epochs", "1", "--batch-size", "32", "--quiet", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    run = load_run(tmp / "run")
    assert run.family == "mlp" and run.targets == ["linears.0", "linears.1"]
    assert run.foundation.config.input_dim == 6 and run.foundation.config.num_classes == 3
    assert run.foundation.config.input_mean < 0  # the data's, not MNIST's


def test_format_1_mlp_run_still_loads(data_root, tmp_path):
    rc = main(["train", "--out", str(tmp_path / "run"), "--modes", "rot45", "--epochs", "1",
               "--limit-train", "1200", "--limit-test", "200", "--calibration-size", "200",
               "--data-root", data_root, "--quiet", "--device", "cpu"])
    assert rc == 0
    (tmp_path / "run" / "run.json").unlink()
    for f in (tmp_path / "run" / "adapters").glob("*.json"):  # as written before targets/facts
        meta = json.loads(f.read_text())
        meta.pop("targets"), meta.pop("facts")
        meta["method_config"] = {"sharpness": 10.0, "unit_l1": 0.0, "retune_epochs": 0}
        f.write_text(json.dumps(meta))
    run = load_run(tmp_path / "run", data_root=data_root)
    mode = run.modes["rot45"]
    assert run.family == "mlp" and run.input_spec.shape == (784,)
    assert mode.facts == {"source": "mnist-rotation", "angle": 45.0}
    assert [u.producer for u in mode.spec.targets] == ["linears.0", "linears.1"]
