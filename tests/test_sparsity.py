"""training/sparsity.py + the TauGate sparsity options: exact zero gains that export removes."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from taugate.exporting.prune import PruneConfig
from taugate.exporting.specialize import prune_mode
from taugate.training.families.mlp import MLP, BackboneConfig
from taugate.training.loop import TrainConfig, train
from taugate.training.methods import get_method
from taugate.training.methods.taugate import TauGateConfig
from taugate.training.pipeline import AdaptConfig, adapt
from taugate.training.sources import Mode, ModeData, Split
from taugate.training.sparsity import prox_l1_, unit_costs


@functools.cache
def tiny_problem(seed: int = 0):
    """A small seeded MLP foundation (20 -> 16 -> 8 -> 3) and data from a random teacher
    (cached: adaptation wraps a copy, so the foundation is never modified)."""
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(20, 3, generator=g)

    def split(n):
        x = torch.rand(n, 20, generator=g)
        return Split(x, ((x - 0.5) @ teacher).argmax(1))

    torch.manual_seed(seed)
    foundation = MLP(BackboneConfig(input_dim=20, hidden=(16, 8), num_classes=3,
                                    input_mean=0.5, input_std=0.3))
    md = ModeData(Mode("rot0", 0.0), split(2048), split(1024), split(512))
    train(foundation, foundation.parameters(), md.train, TrainConfig(epochs=5, batch_size=64),
          progress=False)
    return foundation.eval(), md


def _np(split):
    return split.x.numpy(), split.y.numpy()


def test_unit_costs_follow_macs():
    costs = unit_costs(MLP(BackboneConfig()))
    assert float(costs[0][0] / costs[1][0]) == pytest.approx((784 + 128) / (128 + 10))
    assert float(torch.cat(costs).mean()) == pytest.approx(1.0)


def test_prox_l1_gives_exact_zeros_and_keeps_signs():
    p = torch.tensor([0.5, -0.5, 0.05, -0.05, 0.0])
    prox_l1_(p, 0.1)
    assert torch.equal(p, torch.tensor([0.4, -0.4, 0.0, 0.0, 0.0]))


def test_default_config_is_the_paper():
    cfg = TauGateConfig()
    assert cfg.sparsity.unit_l1 == 0 and cfg.retune.epochs == 0 and cfg.sparsity.gain_lr_scale == 1.0
    foundation, _ = tiny_problem()
    method = get_method("taugate")
    model = method.wrap(foundation)
    with torch.no_grad():
        model.acts[0].gain.fill_(1e-3)
    method.after_step(model, lr=10.0)  # no-op by default
    assert torch.all(model.acts[0].gain == 1e-3)


@pytest.mark.parametrize("method_name, extra", [("taugate", {}),
                                                ("taugate", {"gated": False, "learn_tau": False}),
                                                ("gain_only", {})])
def test_unit_l1_zeroes_units_and_export_removes_them(method_name, extra):
    foundation, md = tiny_problem()
    mc = {"unit_l1": 0.3, "retune_epochs": 1, **extra}
    method, model = adapt(foundation, md, AdaptConfig(method_name, mc, TrainConfig(
        epochs=3, batch_size=64, lr=0.05)), progress=False)
    zeros = [int((a.gain == 0).sum()) for a in model.acts]
    assert sum(zeros) > 0, zeros
    hard = method.harden(model)
    pruned = prune_mode(hard, _np(md.calibration), _np(md.test), PruneConfig(below=0.0))
    assert sum(pruned.model.widths) <= sum(hard.widths) - sum(zeros)
    full, cut = hard.forward(md.calibration.x.numpy()), pruned.model.forward(md.calibration.x.numpy())
    assert np.array_equal(full.argmax(1), cut.argmax(1))
    assert np.abs(full - cut).max() <= 1e-5


def test_retune_keeps_zeroed_units_at_zero_and_moves_the_rest():
    foundation, md = tiny_problem(1)
    ac = AdaptConfig("taugate", {"unit_l1": 0.3}, TrainConfig(epochs=2, batch_size=64))
    _, sparse = adapt(foundation, md, ac, progress=False)
    ac_rt = AdaptConfig("taugate", {"unit_l1": 0.3, "retune_epochs": 2},
                        TrainConfig(epochs=2, batch_size=64))
    _, retuned = adapt(foundation, md, ac_rt, progress=False)
    for a, b in zip(sparse.acts, retuned.acts):
        dead = a.gain == 0
        assert torch.all(b.gain[dead] == 0)
        assert not torch.equal(a.gain[~dead], b.gain[~dead])


def test_gain_lr_scale_scales_the_gradient_only():
    foundation, md = tiny_problem()
    grads, outs = [], []
    for scale in (1.0, 3.0):
        model = get_method("taugate", {"gain_lr_scale": scale}).wrap(foundation)
        out = model(md.train.x[:64])
        out.sum().backward()
        grads.append(model.acts[0].gain.grad.clone())
        outs.append(out.detach())
    torch.testing.assert_close(outs[0], outs[1])
    torch.testing.assert_close(grads[1], 3.0 * grads[0])


@pytest.mark.parametrize("kwargs, field", [({"unit_l1": -1.0}, "unit_l1"),
                                           ({"unit_l1": 0.1, "learn_gain": False}, "unit_l1"),
                                           ({"gain_lr_scale": 0.0}, "gain_lr_scale"),
                                           ({"retune_epochs": -1}, "retune_epochs")])
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        get_method("taugate", kwargs)  # flat option names, as the CLI gives them


@pytest.mark.parametrize("extra", [
    {"retune_schedule": "cosine", "retune_lr_scale": 4.0},
    {"distill": "taugate", "distill_alpha": 0.5, "distill_temperature": 2.0},
    {"distill": "foundation", "retune_schedule": "cosine"},
])
def test_retune_options_are_seeded_and_keep_zeroed_units(extra):
    foundation, md = tiny_problem(1)
    runs = []
    for _ in range(2):
        ac = AdaptConfig("taugate", {"unit_l1": 0.3, "retune_epochs": 2, **extra},
                         TrainConfig(epochs=2, batch_size=64))
        runs.append(adapt(foundation, md, ac, progress=False)[1])
    _, sparse = adapt(foundation, md, AdaptConfig("taugate", {"unit_l1": 0.3},
                      TrainConfig(epochs=2, batch_size=64)), progress=False)
    for a, b, s in zip(runs[0].acts, runs[1].acts, sparse.acts):
        assert torch.equal(a.gain, b.gain) and torch.equal(a.tau, b.tau)  # deterministic
        assert torch.all(a.gain[s.gain == 0] == 0)
        assert torch.all(torch.isfinite(a.gain))


def test_target_mac_ratio_meets_the_budget_and_rounds_layer_one_down():
    from taugate.training.sparsity import dense_macs, kept_macs

    foundation, md = tiny_problem()
    mc = {"unit_l1": 0.01, "retune_epochs": 1, "target_mac_ratio": 2.0, "round_units": 4}
    _, model = adapt(foundation, md, AdaptConfig("taugate", mc, TrainConfig(epochs=1, batch_size=64)),
                     progress=False)
    assert dense_macs(model) / kept_macs(model) >= 2.0
    assert int((model.acts[0].gain != 0).sum()) % 4 == 0


@pytest.mark.parametrize("kwargs, field", [({"target_mac_ratio": 0.5}, "target_mac_ratio"),
                                           ({"round_units": 0}, "round_units"),
                                           ({"retune_lr_scale": 0.0}, "retune_lr_scale"),
                                           ({"retune_schedule": "step"}, "retune_schedule"),
                                           ({"distill": "teacher"}, "distill"),
                                           ({"distill_alpha": 2.0}, "distill_alpha"),
                                           ({"distill_temperature": 0.0}, "distill_temperature")])
def test_retune_option_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        get_method("taugate", kwargs)  # flat option names, as the CLI gives them
