"""scripts/measure_activations.py measures what the hard gate removes beyond the activation:
nothing for ReLU at τ = 0, the negative tail (z <= 0) for SiLU and GELU."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from taugate.training.gating import set_hard
from taugate.training.methods import get_method
from taugate.training.targets import resolve_targets

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def script():
    path = ROOT / "scripts" / "measure_activations.py"
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def _gated(act: type[nn.Module], x: torch.Tensor):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), act(), nn.Linear(16, 3)).eval()
    targets = resolve_targets(model, x[:2])
    return set_hard(get_method("taugate").wrap(model, targets), True).eval(), targets.sites, model


@pytest.mark.parametrize("act, tail", [(nn.ReLU, False), (nn.SiLU, True), (nn.GELU, True)])
def test_the_gate_removes_the_negative_tail_only_where_there_is_one(script, act, tail):
    x = torch.randn(256, 6, generator=torch.Generator().manual_seed(1))
    gated, sites, model = _gated(act, x)
    (effect,) = script.gate_effect(gated, sites, x).values()
    z = model[0](x).detach()
    kept = (z > 0).any(0)
    if tail:  # τ = 0: every output with z <= 0 of a kept unit, and the |act| mass they held
        a = act()(z)[:, kept].abs()
        cut = z[:, kept] <= 0
        assert effect["zeroed"] == pytest.approx(float(cut.float().mean()))
        assert effect["mass_removed"] == pytest.approx(float(a[cut].sum() / a.sum()), rel=1e-5)
        assert 0 < effect["mass_removed"] < effect["zeroed"]
    else:
        assert effect == {"zeroed": 0.0, "mass_removed": 0.0}


def test_the_table_shows_hard_minus_soft(script):
    row = {"frozen": 0.9, "soft": 0.95, "hard": 0.948, "kept": [70, 60], "units": [128, 128],
           "gate": {"0": {"zeroed": 0.41, "mass_removed": 0.052},
                    "2": {"zeroed": 0.3, "mass_removed": 0.02}}}
    line = script.table({"silu": {"rot0": row}}).splitlines()[2]
    assert line == ("| silu | rot0 | 0.9000 | 0.9500 | 0.9480 | -0.0020 | 70 60 | 41% / 30% | "
                    "5.2% / 2.0% |")
