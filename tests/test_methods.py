"""Every adaptation method: trainable-parameter counts on the paper's backbone, a frozen
foundation that stays bit-identical, ONNX parity of the hardened graph, adapter round-trips,
and one bundle holding every method side by side."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from taugate.bundle.schema import OutputSpec
from taugate.exporting.graph import INPUT_NAME, build_graph
from taugate.training.adapters import foundation_sha256, load_adapter, save_adapter
from taugate.training.families.mlp import MLP, BackboneConfig
from taugate.training.loop import TrainConfig, train
from taugate.training.methods import METHODS, get_method
from taugate.training.methods.lora import LoRALinear
from taugate.training.sources import Split

# name, trainable parameters on 784-128-128-10 (arXiv 2602.11726, Tables 1-2), dense graph
METHOD_TABLE = [
    ("frozen", 0, True),
    ("full_ft", 118282, True),
    ("bitfit", 266, True),
    ("lora", 10448, True),
    ("taugate", 512, False),
    ("gain_only", 256, True),
    ("tau_only", 256, False),
]
NAMES = [row[0] for row in METHOD_TABLE]


def _tiny(seed=0) -> MLP:
    torch.manual_seed(seed)
    return MLP(BackboneConfig(input_dim=20, hidden=(12, 8), num_classes=3)).eval()


def _data(n=256, d=20, seed=0) -> Split:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g)
    return Split(x, (x[:, :3].sum(1) * 2).long().clamp(max=2))


def _trained(name: str, foundation: MLP, steps_lr=0.5):
    """The method wrapped around ``foundation`` after a few large SGD steps."""
    torch.manual_seed(1)
    method = get_method(name)
    model = method.wrap(foundation)
    params = list(method.trainable(model).values())
    if params:
        train(model, params, _data(), TrainConfig(epochs=2, batch_size=64, lr=steps_lr),
              penalty=method.penalty, after_step=method.after_step, progress=False)
    return method, model


def test_every_registered_method_is_in_the_table():
    assert sorted(METHODS) == sorted(NAMES)


@pytest.mark.parametrize("name,expected,_dense", METHOD_TABLE)
def test_trainable_parameters_on_the_paper_backbone(name, expected, _dense):
    method = get_method(name)
    model = method.wrap(MLP())
    trainable = method.trainable(model)
    assert sum(p.numel() for p in trainable.values()) == expected
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected


@pytest.mark.parametrize("name", NAMES)
def test_foundation_stays_bit_identical(name):
    foundation = _tiny()
    before = {k: v.clone() for k, v in foundation.state_dict().items()}
    _, model = _trained(name, foundation)
    for k, v in foundation.state_dict().items():
        assert torch.equal(v, before[k]), f"{name} changed the foundation's {k}"
    x = _data(32, seed=5).x
    changed = not torch.equal(model.eval()(x), foundation(x))
    assert changed == (name != "frozen"), f"{name}: training should change the outputs"
    if name == "full_ft":
        return  # its copy is meant to move; the foundation object above did not
    for i, linear in enumerate(model.linears):
        base = linear.base if isinstance(linear, LoRALinear) else linear
        assert torch.equal(base.weight, before[f"linears.{i}.weight"]), f"{name}: weight {i}"
        if name != "bitfit":
            assert torch.equal(base.bias, before[f"linears.{i}.bias"]), f"{name}: bias {i}"


def _randomize_gates(model: MLP) -> None:
    """Thresholds on both sides of 0 and gains of both signs, so every folding path runs."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for act in model.acts:
            if isinstance(getattr(act, "tau", None), torch.nn.Parameter):
                act.tau.copy_(torch.rand(act.width, generator=g) - 0.3)
            if isinstance(getattr(act, "gain", None), torch.nn.Parameter):
                act.gain.copy_(torch.randn(act.width, generator=g))


@pytest.mark.parametrize("name,_params,dense", METHOD_TABLE)
def test_onnx_export_matches_hard_gated_torch(name, _params, dense):
    method, model = _trained(name, _tiny())
    _randomize_gates(model)
    hardened = method.harden(model, {"mode": "rot45"})
    proto = build_graph(hardened, f"rot45-{name}")
    # ungated methods harden to plain ReLUs (LoRA and full FT merged into dense weights)
    assert all(layer.is_relu for layer in hardened.hidden) == dense
    ops = {n.op_type for n in proto.graph.node}
    assert (ops <= {"Gemm", "Relu"}) == dense, ops
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = _data(200, seed=7).x
    with torch.no_grad():
        want = model.set_hard(True)(x).numpy()
    got = session.run(None, {INPUT_NAME: x.numpy()})[0]
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    np.testing.assert_allclose(hardened.forward(x.numpy()), want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_adapter_round_trip_is_bit_exact(name, tmp_path):
    foundation = _tiny()
    method, model = _trained(name, foundation)
    sha = foundation_sha256(foundation)
    save_adapter(tmp_path / "a", method, model, sha, mode={"name": "rot45", "angle": 45.0})
    loaded = load_adapter(tmp_path / "a", foundation, sha)
    meta = json.loads((tmp_path / "a.json").read_text())
    want = method.trainable(model)
    assert meta["tensors"] == sorted(want)
    got = loaded.method.trainable(loaded.model)
    assert sorted(got) == sorted(want)
    for k, p in want.items():
        assert torch.equal(got[k], p), f"{name}: {k}"
    x = _data(32, seed=9).x
    assert torch.equal(loaded.model(x), model.eval()(x))


def test_lora_merge_and_init():
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 4)
    layer = LoRALinear(base, rank=2, alpha=6.0)
    assert torch.equal(layer.lora_B, torch.zeros(4, 2)) and layer.lora_A.abs().sum() > 0
    with torch.no_grad():
        layer.lora_B.normal_()
    w, b = layer.merged_weight_bias()
    want = base.weight + 3.0 * layer.lora_B @ layer.lora_A
    assert torch.allclose(w, want) and b is base.bias
    x = torch.randn(5, 6)
    assert torch.allclose(layer(x), x @ w.T + b, atol=1e-6)


@pytest.mark.parametrize("name,config,field", [
    ("lora", {"rank": 0}, "rank"),
    ("lora", {"alpha": 0.0}, "alpha"),
    ("lora", {"layers": [-1]}, "layers"),
    ("tau_only", {"sharpness": 0.0}, "sharpness"),
    ("gain_only", {"gain_init": float("nan")}, "gain_init"),
])
def test_invalid_configs_name_the_field(name, config, field):
    with pytest.raises(ValueError, match=field):
        get_method(name, config)


def test_lora_subset_of_layers():
    method = get_method("lora", {"rank": 4, "layers": [0, 2]})
    trainable = method.trainable(method.wrap(MLP()))
    assert sum(p.numel() for p in trainable.values()) == 4 * (784 + 128) + 4 * (128 + 10)
    with pytest.raises(ValueError, match="out of range"):
        get_method("lora", {"layers": [3]}).wrap(MLP())


def test_every_method_exports_into_one_bundle(data_root, tmp_path):
    """The one pipeline takes several modes with distinct names (rot45-<method>) and any
    method's GatedSpec, full_ft's and lora's overrides included."""
    from taugate.exporting.pipeline import ExportConfig, ModeInput, export_modes
    from taugate.exporting.prune import PruneConfig
    from taugate.runtime import ModeRuntime
    from taugate.training.backbone import FoundationConfig
    from taugate.training.pipeline import AdaptConfig, adapt, pretrain_foundation
    from taugate.training.sources import DataConfig, MNISTModes

    data = MNISTModes(DataConfig(root=data_root, limit_train=1500, limit_test=300,
                                 calibration_size=200))
    foundation = pretrain_foundation(data, FoundationConfig(epochs=1), progress=False)
    md = data.mode("rot45")
    modes = {}
    for name in NAMES:
        method, model = adapt(foundation, md, AdaptConfig(name), progress=False)
        modes[f"rot45-{name}"] = ModeInput(method.harden_spec(model), (md.calibration.x,
                                           md.calibration.y), (md.test.x, md.test.y), name)
    spec_out = {"name": "logits", "dtype": "float32", "shape": ["batch", 10], "labels": None}
    config = ExportConfig(allow_worse=True, prune=PruneConfig(max_accuracy_drop=1.0))
    path, reports = export_modes(tmp_path / "bundle", foundation, modes, family="mlp",
                                 input_spec=data.input_spec,
                                 output_spec=OutputSpec.from_dict(spec_out),
                                 config=config)
    manifest = json.loads((path / "manifest.json").read_text())
    assert {m: e["method"] for m, e in manifest["modes"].items()} == {f"rot45-{n}": n for n in NAMES}
    x, y = md.test.x.numpy(), md.test.y.numpy()
    rt = ModeRuntime.open(path)
    for report in reports:
        acc = float((rt.run(report.name, x).argmax(1) == y).mean())
        assert acc == pytest.approx(report.test_accuracy, abs=1e-9), report.name


def test_tables_and_figure_follow_the_registry():
    from taugate.lab.experiment.config import ABLATION_METHODS, TABLE1_METHODS, method_label

    assert TABLE1_METHODS == ("frozen", "bitfit", "taugate", "lora", "full_ft")  # paper's order
    assert ABLATION_METHODS == ("gain_only", "tau_only")
    assert sorted(TABLE1_METHODS + ABLATION_METHODS) == sorted(METHODS)
    assert method_label("lora", {"rank": 4}) == "LoRA (r=4)"
    assert method_label("taugate") == "TauGate (threshold + gain)"


@pytest.mark.parametrize("options, check", [
    ({"unit_l1": 0.1, "retune_epochs": 2}, lambda c: (c.sparsity.unit_l1, c.retune.epochs) == (0.1, 2)),
    ({"sparsity": {"unit_l1": 0.1}, "retune": {"schedule": "cosine"}},
     lambda c: (c.sparsity.unit_l1, c.retune.schedule) == (0.1, "cosine")),
    ({"retune": {"epochs": 1}, "retune_lr_scale": 3.0},  # nested and flat together
     lambda c: (c.retune.epochs, c.retune.lr_scale) == (1, 3.0)),
])
def test_nested_method_options(options, check):
    assert check(get_method("taugate", options).config)
    assert check(get_method("taugate", get_method("taugate", options).config_dict()).config)


@pytest.mark.parametrize("name, options, match", [
    ("taugate", {"colour": 1}, "method 'taugate': unknown option.*'colour'; valid: sharpness, "),
    ("gain_only", {"sharpness": 5.0},
     "unknown option.*'sharpness'; valid: gain_init, sparsity, retune, unit_l1"),
    ("taugate", {"retune": {"epoch": 1}}, "retune: unknown option.*'epoch'; valid: epochs"),
    ("bitfit", {"rank": 2}, "method 'bitfit': unknown option.*'rank'"),
])
def test_unknown_method_options_name_the_valid_keys(name, options, match):
    with pytest.raises(ValueError, match=match):
        get_method(name, options)
