"""The per-mode low-rank correction (``correction_rank``): it starts from the frozen model,
counts what a mode stores, trains with tau/gamma, and exports merged into the mode's graph."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import taugate
from taugate.runtime import ModeRuntime
from taugate.training.corrections import correction_size
from taugate.training.families.mlp import MLP, BackboneConfig
from taugate.training.methods import get_method


def tiny() -> MLP:
    torch.manual_seed(0)
    return MLP(BackboneConfig(input_dim=12, hidden=(16, 8), num_classes=4))


def test_the_correction_starts_from_the_frozen_model():
    x = torch.randn(32, 12, generator=torch.Generator().manual_seed(1))
    plain = get_method("taugate", {}).wrap(tiny())
    method = get_method("taugate", {"correction_rank": 3})
    corrected = method.wrap(tiny())
    torch.testing.assert_close(corrected(x), plain(x), rtol=0, atol=0)
    trained = method.trainable(corrected)
    assert trained["linears.0.lora_A"].shape == (3, 12)
    assert trained["linears.0.lora_B"].shape == (16, 3)
    assert correction_size(corrected, kept_units=10) == 3 * (12 + 10)


def test_the_override_is_the_merged_first_layer():
    method = get_method("taugate", {"correction_rank": 2, "correction_scale": 0.5})
    model = method.wrap(tiny())
    with torch.no_grad():
        model.linears[0].lora_B.fill_(0.25)
    a = model.linears[0].lora_A.detach()
    expected = model.linears[0].base.weight.detach() + 0.5 * (torch.full((16, 2), 0.25) @ a)
    spec = method.harden_spec(model)
    assert list(spec.overrides) == ["linears.0.weight"]
    np.testing.assert_allclose(spec.overrides["linears.0.weight"], expected.numpy(), rtol=1e-6)


@pytest.mark.parametrize("bad, match", [
    ({"correction_rank": -1}, "correction_rank: expected an integer >= 0"),
    ({"correction_rank": 1.5}, "correction_rank: expected an integer >= 0"),
    ({"correction_rank": 2, "correction_scale": 0.0}, "correction_scale: expected > 0"),
])
def test_bad_corrections_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        get_method("taugate", bad)


def test_a_rank_above_the_layer_is_refused():
    with pytest.raises(ValueError, match="correction_rank: expected at most 12"):
        get_method("taugate", {"correction_rank": 13}).wrap(tiny())


def test_the_cli_flags_reach_the_method_config():
    import argparse

    from taugate.commands.train import add_arguments, method_config

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--out", "x", "--sparse", "--correction-rank", "4",
                         "--target-mac-ratio", "2"])
    cfg = method_config(args)
    assert cfg["correction_rank"] == 4 and cfg["target_mac_ratio"] == 2.0
    assert get_method("taugate", cfg).config.retune.target_mac_ratio == 2.0


def test_the_cli_refuses_a_correction_for_another_method():
    import argparse

    from taugate.commands.train import add_arguments, method_config

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--out", "x", "--method", "gain_only", "--correction-rank", "2"])
    with pytest.raises(ValueError, match="--correction-rank: expected --method taugate.*"
                                         "got --method gain_only"):
        method_config(args)


def _data(shift: float, n: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + 2 * (x[:, 2] > 0)
    return x + shift, y


@pytest.mark.filterwarnings("ignore:south")
@pytest.mark.parametrize("layout", [pytest.param("shared", marks=pytest.mark.slow), "standalone"])
def test_a_corrected_mode_exports_and_serves_what_it_trained(tmp_path, layout):
    from taugate.training.adapters import load_adapter, load_foundation

    x, _ = _data(0.7, 64, 3)
    # calibrated on the rows compared below: export keeps every unit that fires on them
    modes = {"south": {"train": _data(0.7, 240, 1), "test": _data(0.7, 120, 2),
                       "calibration": _data(0.7, 64, 3)}}
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(12, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32),
                              torch.nn.ReLU(), torch.nn.Linear(32, 4))
    run = taugate.train(modes, tmp_path / "run", model=net, adapt_epochs=2, adapt_min_steps=0,
                        batch_size=32, method_options={"correction_rank": 2, "correction_scale": 1.0})
    path = taugate.export(run, tmp_path / "bundle", layout=layout, allow_worse=True)
    foundation, meta = load_foundation(tmp_path / "run" / "foundation", model=net)
    adapter = load_adapter(tmp_path / "run" / "adapters" / "south", foundation, meta["sha256"])
    assert adapter.method.config.correction_rank == 2
    from taugate.training.gating import gate_modules

    for _, act in gate_modules(adapter.model):
        act.hard = True
    with torch.no_grad():
        want = adapter.model(torch.from_numpy(x)).numpy()
        adapter.model.get_submodule("0").lora_B.zero_()
        uncorrected = adapter.model(torch.from_numpy(x)).numpy()
    with ModeRuntime.open(path) as rt:
        got = rt.run("south", x)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.abs(got - uncorrected).max() > 1e-3  # the correction is in the graph


def image_mlp() -> MLP:
    torch.manual_seed(0)
    return MLP(BackboneConfig(input_dim=16, hidden=(16, 8), num_classes=4))  # 4 x 4 images


def test_a_pooled_correction_reads_pooled_pixels_and_merges_exactly():
    from taugate.training.corrections import stored_numbers

    method = get_method("taugate", {"correction_rank": 3, "correction_pool": 2,
                                    "correction_scale": 0.5})
    model = method.wrap(image_mlp())
    layer = model.linears[0]
    assert method.trainable(model)["linears.0.lora_A"].shape == (3, 4)  # 2 x 2 cells
    with torch.no_grad():
        layer.lora_B.normal_(generator=torch.Generator().manual_seed(2))
    x = torch.randn(5, 16, generator=torch.Generator().manual_seed(3))
    w, b = layer.merged_weight_bias()
    torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, w, b))
    # the top-left cell averages pixels 0, 1, 4 and 5: one value spread over its patch
    a = layer.full_a()
    np.testing.assert_allclose(a[:, [0, 1, 4, 5]].detach(), (layer.lora_A[:, [0]] / 4)
                               .expand(3, 4).detach(), rtol=1e-6)
    assert correction_size(model, kept_units=10) == 3 * (4 + 10)
    # tau + gamma of all 24 units, and the correction's factors on the kept units
    assert stored_numbers(method, model, kept_units=10) == 2 * 24 + 3 * (4 + 10)


@pytest.mark.parametrize("bad, match", [
    ({"correction_rank": 2, "correction_pool": 0}, "correction_pool: expected an integer >= 1"),
    ({"correction_rank": 2, "correction_pool": 2, "correction_sites": "ffn"},
     "correction_pool: .*expected correction_sites 'first' with it, got 'ffn'"),
])
def test_bad_pooling_is_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        get_method("taugate", bad)


def test_pooling_a_non_image_input_is_refused():
    with pytest.raises(ValueError, match=r"correction_pool: .*reads 12 inputs, expected side\^2 "
                                         r"with side divisible by 2"):
        get_method("taugate", {"correction_rank": 2, "correction_pool": 2}).wrap(tiny())


def test_a_rank_above_the_pooled_inputs_is_refused():
    with pytest.raises(ValueError, match=r"correction_rank: expected at most 4 with "
                                         r"correction_pool 2 .*got 5"):
        get_method("taugate", {"correction_rank": 5, "correction_pool": 2}).wrap(image_mlp())


def test_the_pool_and_scale_flags_reach_the_method_config():
    import argparse

    from taugate.commands.train import add_arguments, method_config

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--out", "x", "--correction-rank", "16", "--correction-pool", "2",
                         "--correction-scale", "0.2"])
    cfg = get_method("taugate", method_config(args)).config
    assert (cfg.correction_rank, cfg.correction_pool, cfg.correction_scale) == (16, 2, 0.2)
    args = p.parse_args(["--out", "x", "--method", "lora", "--correction-pool", "2"])
    with pytest.raises(ValueError, match="--correction-pool: expected --method taugate"):
        method_config(args)


@pytest.mark.filterwarnings("ignore:south")
def test_a_pooled_mode_trains_reports_its_storage_and_serves_what_it_trained(tmp_path):
    from taugate.commands.train import summary
    from taugate.training.adapters import load_adapter, load_foundation
    from taugate.training.gating import gate_modules

    def data(n, seed):
        x, y = _data(0.7, n, seed)
        return np.concatenate([x, x[:, :4]], axis=1), y  # 16 features: a 4 x 4 image

    modes = {"south": {"train": data(240, 1), "test": data(120, 2), "calibration": data(64, 3)}}
    # the mlp family (not a module from Python): summary() reopens the run on its own
    run = taugate.train(modes, tmp_path / "run", hidden=(32, 32), epochs=2, adapt_epochs=2,
                        adapt_min_steps=0, batch_size=32, device="cpu",
                        method_options={"correction_rank": 2, "correction_pool": 2,
                                        "correction_scale": 1.0})
    foundation, meta = load_foundation(tmp_path / "run" / "foundation")
    adapter = load_adapter(tmp_path / "run" / "adapters" / "south", foundation, meta["sha256"])
    assert adapter.method.config.correction_pool == 2
    row = summary(tmp_path / "run", ["south"]).splitlines()[2]
    kept = int(row.split()[2].split("/")[0])
    assert f" {2 * 64 + 2 * (4 + kept)} " in f" {row} "  # the stored/mode column
    x, _ = data(64, 3)
    for _, act in gate_modules(adapter.model):
        act.hard = True
    with torch.no_grad():
        want = adapter.model(torch.from_numpy(x)).numpy()
    path = taugate.export(run, tmp_path / "bundle", layout="standalone", allow_worse=True)
    with ModeRuntime.open(path) as rt:
        np.testing.assert_allclose(rt.run("south", x), want, atol=1e-4)
