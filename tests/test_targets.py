"""Targets: (producer, activation, consumer) sites found by module path in any torch model."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from taugate.training.families.mlp import MLP, BackboneConfig
from taugate.training.families.vit import ViT, ViTConfig
from taugate.training.sparsity import unit_costs
from taugate.training.targets import find_sites, resolve_targets, select_sites


def named_sequential(widths=(13, 32, 24, 16, 3), act=nn.ReLU):
    """An nn.Sequential MLP, input 13 wide, depth 3, with arbitrary module names."""
    layers = OrderedDict()
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        layers[f"dense_{chr(97 + i)}"] = nn.Linear(a, b)
        if i < len(widths) - 2:
            layers[f"nonlin{i}"] = act()
            if i == 0:
                layers["drop"] = nn.Dropout(0.1)
    return nn.Sequential(layers)


class Shared(nn.Module):  # one ReLU module used twice: not a gateable site
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.c(self.relu(self.b(self.relu(self.a(x)))))


class Functional(nn.Module):  # torch.relu in forward(): found on the traced graph
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


class Residual(nn.Module):  # fc1 -> relu -> (+ x) -> fc2: the sum breaks the chain
    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)) + x)


def _sites(model, example):
    return [(s.producer, s.act, s.consumer, s.activation, s.in_features, s.units,
             s.out_features, s.tokens) for s in find_sites(model, example)]


SITE_TABLE = [
    ("paper mlp", lambda: MLP(), torch.zeros(2, 784),
     [("linears.0", "acts.0", "linears.1", "relu", 784, 128, 128, 1),
      ("linears.1", "acts.1", "linears.2", "relu", 128, 128, 10, 1)]),
    ("sequential depth 3, 13 inputs", named_sequential, torch.zeros(2, 13),
     [("dense_a", "nonlin0", "dense_b", "relu", 13, 32, 24, 1),
      ("dense_b", "nonlin1", "dense_c", "relu", 32, 24, 16, 1),
      ("dense_c", "nonlin2", "dense_d", "relu", 24, 16, 3, 1)]),
    ("gelu sequential", lambda: named_sequential((5, 6, 2), nn.GELU), torch.zeros(3, 5),
     [("dense_a", "nonlin0", "dense_b", "gelu", 5, 6, 2, 1)]),
    ("vit ffn", lambda: ViT(ViTConfig(depth=2, dim=16, heads=2, ffn=32)), torch.zeros(2, 784),
     [(f"blocks.{i}.ffn.fc1", f"blocks.{i}.ffn.act", f"blocks.{i}.ffn.fc2", "relu", 16, 32, 16, 17)
      for i in range(2)]),
    ("shared relu", Shared, torch.zeros(2, 4), []),
    ("functional relu", Functional, torch.zeros(2, 4),
     [("a", "taugate_act_a", "b", "relu", 4, 8, 2, 1)]),
    ("residual in between", Residual, torch.zeros(2, 8), []),
    ("tanh-approximate gelu", lambda: named_sequential((5, 6, 2), lambda: nn.GELU("tanh")),
     torch.zeros(3, 5), [("dense_a", "nonlin0", "dense_b", "gelu_tanh", 5, 6, 2, 1)]),
]


@pytest.mark.parametrize("name, build, example, expected", SITE_TABLE, ids=[r[0] for r in SITE_TABLE])
def test_find_sites(name, build, example, expected):
    torch.manual_seed(0)
    assert _sites(build(), example) == expected


@pytest.mark.parametrize("patterns, expected", [
    (None, ["dense_a", "dense_b", "dense_c"]),
    ("dense_b", ["dense_b"]),
    ("dense_[ac]", ["dense_a", "dense_c"]),
    (["dense_c", "dense_a"], ["dense_a", "dense_c"]),  # forward order, whatever the pattern order
    ("dense_.*", None),  # matches dense_d, which has no consumer
])
def test_select_sites(patterns, expected):
    model = named_sequential()
    sites = find_sites(model, torch.zeros(2, 13))
    if expected is None:
        with pytest.raises(ValueError, match="'dense_d'.*no consumer"):
            select_sites(model, sites, patterns)
    else:
        assert [s.producer for s in select_sites(model, sites, patterns)] == expected


@pytest.mark.parametrize("model, example, patterns, match", [
    (named_sequential(), torch.zeros(2, 13), "fc1", "matches no nn.Linear.*dense_a"),
    (named_sequential(), torch.zeros(2, 13), "dense_(", "not a valid regular expression"),
    (Residual(), torch.zeros(2, 8), None, "found no nn.Linear in Residual.*fc1, fc2"),
    (Shared(), torch.zeros(2, 4), "a", "'a'.*no consumer"),
])
def test_target_errors_say_what_is_wrong(model, example, patterns, match):
    with pytest.raises(ValueError, match=match):
        resolve_targets(model, example, patterns)


@pytest.mark.parametrize("hidden", [(128, 128), (64, 32, 16), (1024, 1024)])
def test_mlp_macs_and_unit_costs_match_the_dense_formula(hidden):
    model = MLP(BackboneConfig(hidden=hidden))
    targets = resolve_targets(model, model.example_input())
    dims = (784, *hidden, 10)
    assert targets.macs() == sum(a * b for a, b in zip(dims, dims[1:]))
    raw = [float(dims[i] + dims[i + 2]) for i in range(len(hidden))]
    mean = sum(c * w for c, w in zip(raw, hidden)) / sum(hidden)
    for cost, c, w in zip(unit_costs(model), raw, hidden):
        assert torch.equal(cost, torch.full((w,), c / mean))
    kept = {s.producer: s.units // 2 for s in targets.sites}
    half = (784, *(h // 2 for h in hidden), 10)
    assert targets.macs(kept) == sum(a * b for a, b in zip(half, half[1:]))


def test_vit_macs_count_tokens():
    c = ViTConfig(depth=2, dim=16, heads=2, ffn=32)
    t = resolve_targets(ViT(c), torch.zeros(2, 784))
    per_block = 17 * (16 * 48 + 16 * 16 + 16 * 32 + 32 * 16)
    assert t.macs() == 16 * 49 * 16 + 2 * per_block + 16 * 10
    assert t.macs({"blocks.0.ffn.fc1": 0}) == t.macs() - 17 * 2 * 16 * 32
