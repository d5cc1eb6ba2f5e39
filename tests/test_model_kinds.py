"""The models people write: every unit-wise activation (module or F.* call), gated FFNs
(SwiGLU/GeGLU) and Linear -> BatchNorm1d -> activation, found, gated, hard-gated and compacted
exactly (tiny models, seeded)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from taugate.exporting.compact import compact, hard_gated
from taugate.exporting.norms import folded_foundation
from taugate.training.activations import apply, kind_of_module, module_for
from taugate.training.gating import set_hard
from taugate.training.methods import get_method
from taugate.training.rewrite import fold_batchnorm
from taugate.training.targets import find_sites, resolve_targets

KIND_MODULES = [  # (kind, module, the functional call forward() would make)
    ("relu", nn.ReLU(), F.relu),
    ("gelu", nn.GELU(), F.gelu),
    ("gelu_tanh", nn.GELU(approximate="tanh"), lambda z: F.gelu(z, approximate="tanh")),
    ("silu", nn.SiLU(), F.silu),
    ("mish", nn.Mish(), F.mish),
    ("leaky_relu:0.2", nn.LeakyReLU(0.2), lambda z: F.leaky_relu(z, negative_slope=0.2)),
]


class Net(nn.Module):
    """6 -> 16 -> 3 with the activation as a module or as a call in forward()."""

    def __init__(self, act=None, call=None):
        super().__init__()
        self.a, self.b, self.act, self.call = nn.Linear(6, 16), nn.Linear(16, 3), act, call

    def forward(self, x):
        z = self.a(x)
        return self.b(self.act(z) if self.act is not None else self.call(z))


class GatedFFN(nn.Module):
    """A residual LLaMA-style MLP: down(act(gate(h)) * up(h)), bias-free like LLaMA's."""

    def __init__(self, act=None, functional=None):
        super().__init__()
        self.inp, self.out = nn.Linear(6, 8), nn.Linear(8, 3)
        self.gate, self.up = nn.Linear(8, 16, bias=False), nn.Linear(8, 16, bias=False)
        self.down, self.act, self.functional = nn.Linear(16, 8, bias=False), act, functional

    def forward(self, x):
        h = self.inp(x)
        g = self.act(self.gate(h)) if self.act is not None else self.functional(self.gate(h))
        return self.out(h + self.down(g * self.up(h)))


class Normed(nn.Module):
    """Linear (no bias) -> BatchNorm1d -> F.relu -> Linear, with non-trivial statistics."""

    def __init__(self):
        super().__init__()
        self.a, self.bn, self.b = nn.Linear(6, 16, bias=False), nn.BatchNorm1d(16), nn.Linear(16, 3)
        with torch.no_grad():
            self.bn.running_mean.normal_()
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.normal_()
            self.bn.bias.normal_()

    def forward(self, x):
        return self.b(F.relu(self.bn(self.a(x))))


MODELS = [  # (id, build, expected (producer, act, consumer, activation, functional, up, norm))
    *[(f"module {k}", lambda m=m: Net(act=m), ("a", "act", "b", k, False, None, None))
      for k, m, _ in KIND_MODULES],
    *[(f"F.* {k}", lambda c=c: Net(call=c), ("a", "taugate_act_a", "b", k, True, None, None))
      for k, _, c in KIND_MODULES],
    ("swiglu module", lambda: GatedFFN(act=nn.SiLU()),
     ("gate", "act", "down", "silu", False, "up", None)),
    ("geglu functional", lambda: GatedFFN(functional=F.gelu),
     ("gate", "taugate_act_gate", "down", "gelu", True, "up", None)),
    ("batchnorm1d", Normed, ("a", "taugate_act_a", "b", "relu", True, None, "bn")),
]


def _built(build):
    torch.manual_seed(0)
    return build().eval()


@pytest.mark.parametrize("kind, module, call", KIND_MODULES, ids=[k for k, _, _ in KIND_MODULES])
def test_activation_kinds_compute_what_torch_computes(kind, module, call):
    z = torch.linspace(-4, 4, 101)
    assert kind_of_module(module) == kind
    assert torch.equal(apply(kind, z), module(z))  # golden: torch's own module
    assert torch.equal(apply(kind, z), call(z))
    assert torch.equal(module_for(kind)(z), module(z))
    assert apply(kind, torch.zeros(1)).item() == 0  # what makes the exported gate exact


@pytest.mark.parametrize("name, build, expected", MODELS, ids=[m[0] for m in MODELS])
def test_sites_are_found(name, build, expected):
    sites = find_sites(_built(build), torch.zeros(4, 6))
    assert [(s.producer, s.act, s.consumer, s.activation, s.functional, s.up, s.norm)
            for s in sites] == [expected]


def _trained_spec(model, x):
    method = get_method("taugate", {})
    adapted = method.wrap(model, resolve_targets(model, x))
    gen = torch.Generator().manual_seed(1)
    for name, p in method.trainable(adapted).items():
        with torch.no_grad():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3 + (1.0 if "gain" in name else 0.0))
    return method, adapted, method.harden_spec(adapted)


@pytest.mark.parametrize("name, build, expected", MODELS, ids=[m[0] for m in MODELS])
def test_hard_gate_and_compaction_are_exact(name, build, expected):
    model = _built(build)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(2))
    _, adapted, spec = _trained_spec(model, x)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the foundation is untouched
    foundation = folded_foundation(model, [spec])
    reference = set_hard(adapted, True).eval()
    with torch.no_grad():
        torch.testing.assert_close(hard_gated(foundation, spec)(x), reference(x),
                                   atol=1e-6, rtol=0)
        # pruning a unit == giving it gain 0, and removes up's row with the gate's
        keep = [np.arange(t.units) % 3 != 0 for t in spec.targets]
        small, plan = compact(foundation, spec, keep)
        zeroed = spec.__class__(tuple(t.__class__(**{**t.__dict__, "gain": t.gain * k})
                                      for t, k in zip(spec.targets, keep)), spec.overrides)
        torch.testing.assert_close(small(x), hard_gated(foundation, zeroed)(x), atol=1e-6,
                                   rtol=0)
    kept = int(keep[0].sum())
    assert small.get_submodule(expected[0]).weight.shape[0] == kept
    assert small.get_submodule(expected[2]).weight.shape[1] == kept
    if expected[5]:
        assert small.get_submodule(expected[5]).weight.shape[0] == kept
        assert small.get_submodule(expected[0]).bias is None  # bias-free stays bias-free


def test_batchnorm_fold_is_exact_in_eval_mode():
    model = _built(Normed)
    folded = fold_batchnorm(model.a, model.bn)
    x = torch.randn(32, 6, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model.bn(model.a(x)), atol=1e-6, rtol=1e-6)


def test_gated_ffn_macs_count_up():
    t = resolve_targets(_built(lambda: GatedFFN(act=nn.SiLU())), torch.zeros(2, 6))
    assert t.macs() == 6 * 8 + 3 * 8 * 16 + 8 * 3
    assert t.macs({"gate": 4}) == 6 * 8 + 3 * 8 * 4 + 8 * 3


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        if x.sum() > 0:  # Python control flow on a tensor value: fx cannot trace it
            x = -x
        return self.b(F.relu(self.a(x)))


def test_an_untraceable_forward_is_named_with_what_to_do():
    with pytest.raises(ValueError) as err:
        resolve_targets(Untraceable(), torch.zeros(2, 4))
    msg = str(err.value)
    assert "torch.fx cannot trace Untraceable.forward()" in msg
    assert "test_model_kinds.py:" in msg and "if x.sum() > 0" in msg
    assert "nn.ReLU()" in msg  # what to do instead
    assert "/" not in msg.split("at ", 1)[1].split(" ", 1)[0]  # a file name, not a path


@pytest.mark.parametrize("build, why", [
    (lambda: nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 2)),
     "LayerNorm/RMSNorm"),
    (lambda: nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)), "unit-wise"),
])
def test_what_is_not_a_site_is_said(build, why):
    with pytest.raises(ValueError, match=why):
        resolve_targets(build(), torch.zeros(2, 4))
