"""Convolutional sites: ``Conv2d -> [BatchNorm2d] -> act -> Conv2d`` with output channels as
units, found, gated per channel, BatchNorm2d folded, compacted exactly and exported in both
layouts with the runtime matching torch (a tiny CNN on random data, seeded)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from taugate.bundle.graph_check import ALLOWED_OPS
from taugate.bundle.schema import InputSpec, OutputSpec
from taugate.exporting.compact import (
    compact,
    export_onnx,
    firing_counts,
    hard_gated,
    keep_masks,
    linear_macs,
)
from taugate.exporting.norms import folded_foundation
from taugate.exporting.pipeline import ExportConfig, ModeInput, export_modes
from taugate.exporting.prune import PruneConfig
from taugate.runtime import ModeRuntime
from taugate.spec import GatedSpec, GatedUnits
from taugate.training.gating import set_hard
from taugate.training.methods import get_method
from taugate.training.targets import find_sites, resolve_targets, select_sites


class TinyCNN(nn.Module):
    """[N, 1, 8, 8] -> Conv-BN-ReLU-Conv-ReLU-MaxPool-Flatten-Linear -> 3 logits."""

    def __init__(self, pool=None):
        super().__init__()
        self.pool = pool or (lambda h: F.max_pool2d(h, 2))
        self.c1, self.bn = nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c2, self.head = nn.Conv2d(8, 6, 3, padding=1), nn.Linear(6 * 4 * 4, 3)
        with torch.no_grad():  # non-trivial statistics, as after training
            self.bn.running_mean.uniform_(-0.3, 0.3)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.2, 0.2)

    def forward(self, x):
        h = self.c2(F.relu(self.bn(self.c1(x))))
        return self.head(torch.flatten(self.pool(F.relu(h)), 1))


def test_a_spec_mixing_a_conv_and_a_linear_is_refused():
    spec = GatedSpec((GatedUnits("0", "1", "relu", np.zeros(4, np.float32),
                                 np.ones(4, np.float32)),))
    with pytest.raises(ValueError, match="Conv2d producer with a Linear consumer"):
        hard_gated(nn.Sequential(nn.Conv2d(1, 4, 1), nn.Linear(4, 2)), spec)


def test_unit_importance_is_per_channel():
    from taugate.training.sparsity import unit_importance

    model, x = _model(), torch.randn(16, 1, 8, 8)
    adapted = get_method("taugate").wrap(model, resolve_targets(model, x[:4]))
    (imp,) = unit_importance(adapted, x)
    assert imp.shape == (8,) and bool((imp > 0).all())


def test_global_average_pooling_is_an_allowed_operator():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2)).eval()
    proto = export_onnx(model, torch.randn(2, 1, 6, 6))
    ops = {n.op_type for n in proto.graph.node}
    assert "GlobalAveragePool" in ops and ops <= ALLOWED_OPS[2][""], ops - ALLOWED_OPS[2][""]


class Residual(nn.Module):
    """A conv whose activated channels also feed a residual addition."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.head = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 1), \
            nn.Linear(4, 2)

    def forward(self, x):
        h = F.relu(self.c1(x))
        return self.head((self.c2(h) + h).mean((2, 3)))


def _model(pool=None):
    torch.manual_seed(0)
    return TinyCNN(pool).eval()


POOLS = {  # layout -> (pooling in forward(), the operator the exporter writes for it)
    "shared": (None, "MaxPool"),
    "standalone": (lambda h: F.avg_pool2d(h, 2), "AveragePool"),
}


def _spec(seed: int, zero: int = 3) -> GatedSpec:
    rng = np.random.default_rng(seed)
    gain = rng.uniform(0.5, 1.5, 8).astype(np.float32)
    gain[rng.choice(8, zero, replace=False)] = 0  # removed channels
    t = rng.uniform(0, 0.3, 8).astype(np.float32)
    return GatedSpec((GatedUnits("c1", "c2", "relu", t, gain, None, None, "bn"),))


def test_the_conv_pair_is_a_site_with_channels_as_units():
    model, x = _model(), torch.randn(4, 1, 8, 8)
    sites = find_sites(model, x)
    assert [(s.producer, s.consumer, s.norm, s.conv, s.units, s.tokens) for s in sites] == \
        [("c1", "c2", "bn", True, 8, 64)]
    t = resolve_targets(model, x)
    assert t.macs() == linear_macs(model, x) == 64 * 9 * 8 + 64 * 8 * 9 * 6 + 96 * 3
    assert t.macs({"c1": 5}) == 64 * 9 * 5 + 64 * 5 * 9 * 6 + 96 * 3


def test_a_conv_feeding_a_residual_addition_is_refused_by_name():
    model = Residual()
    assert find_sites(model, torch.randn(2, 4, 6, 6)) == []
    with pytest.raises(ValueError, match="'c1'.*residual addition"):
        select_sites(model, [], "c1")


def test_the_trained_per_channel_gate_is_the_exported_hard_gate():
    model, x = _model(), torch.randn(32, 1, 8, 8)
    method = get_method("taugate")
    targets = resolve_targets(model, x[:4])
    adapted = method.wrap(model, targets)
    act = adapted.get_submodule(targets.sites[0].act)  # F.relu, now a per-channel gate
    with torch.no_grad():
        act.tau.uniform_(-0.1, 0.4)
        act.gain.uniform_(0.5, 1.5)
    spec = method.harden_spec(adapted)
    want = set_hard(adapted, True).eval()(x)
    got = hard_gated(folded_foundation(model, [spec]), spec)(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_compaction_is_exact_and_removes_channels_from_both_convs():
    model, x = _model(), torch.randn(64, 1, 8, 8)
    spec = _spec(1)
    folded = folded_foundation(model, [spec])
    hard = hard_gated(folded, spec)
    masks = keep_masks(spec, firing_counts(hard, spec, x))
    small, _ = compact(folded, spec, masks)
    kept = int(masks[0].sum())
    assert kept <= 5 and small.c1.weight.shape[0] == small.c2.weight.shape[1] == kept
    torch.testing.assert_close(small(x), hard(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layout", ["shared", "standalone"])
def test_export_matches_torch_in_both_layouts(tmp_path, layout):
    pool, op = POOLS[layout]
    model = _model(pool)
    torch.manual_seed(2)
    x, y = torch.randn(96, 1, 8, 8), torch.randint(0, 3, (96,))
    modes = {f"m{i}": ModeInput(_spec(i), (x[:64], y[:64]), (x[64:], y[64:])) for i in range(2)}
    spec_in = InputSpec("image", "float32", (1, 8, 8), None)
    spec_out = OutputSpec("logits", "float32", 3)
    config = ExportConfig(layout=layout, allow_worse=True,
                          prune=PruneConfig(max_accuracy_drop=1.0))
    out, reports = export_modes(tmp_path / "b", model, modes, family="user", input_spec=spec_in,
                                output_spec=spec_out, config=config)
    assert all(r.macs < linear_macs(model, x) for r in reports)  # channels removed
    with ModeRuntime.open(out, providers="cpu") as rt:
        for name, mode in modes.items():
            cal = mode.calibration[0]
            want = hard_gated(folded_foundation(model, [mode.spec]), mode.spec)(cal)
            np.testing.assert_allclose(rt.run(name, cal.numpy()), want.detach().numpy(),
                                       atol=1e-4)
        with torch.no_grad():
            np.testing.assert_allclose(rt.run("dense", x.numpy()), model(x).numpy(), atol=1e-4)
    graph = onnx.load(str(next((out / "modes").glob("m0*.onnx"))), load_external_data=False)
    ops = {n.op_type for n in graph.graph.node}
    assert op in ops and ops <= ALLOWED_OPS[2][""], ops - ALLOWED_OPS[2][""]
    if layout == "standalone":
        shapes = {i.name: list(i.dims) for i in graph.graph.initializer}
        assert shapes["c1.weight"][0] == shapes["c2.weight"][1] < 8
        assert not any(n.startswith("bn.") for n in shapes)  # folded into c1
