"""training/guards.py: a non-finite or exploding loss stops training with a hint."""

from __future__ import annotations

import math

import pytest
import torch

from taugate.training.families.mlp import MLP, BackboneConfig
from taugate.training.guards import HINT, DivergenceGuard, TrainingDiverged
from taugate.training.loop import TrainConfig, train
from taugate.training.sources import Split


@pytest.mark.parametrize("losses, stops_at", [
    ([2.3, 1.5, 0.9, 0.5, 0.3, 0.2], None),  # healthy
    ([0.1] + [0.05] * 50, None),  # near-zero start: a floor of 1.0, not 10 x 0.1
    ([0.7, 0.9, 3.0, 0.6, 0.5], None),  # one noisy batch is smoothed away
    ([2.3, 1.0, math.nan], 3),  # NaN stops at once
    ([2.3, math.inf], 2),
    ([0.7] + [500.0] * 10, 2),  # EMA 0.9 * 0.7 + 0.1 * 500 = 50.6 > 10 x max(0.7, 1)
    ([2.3] + [30.0 * 1.5 ** i for i in range(30)], 5),  # a steady explosion: EMA > 23 at 5
])
def test_guard_table(losses, stops_at):
    guard = DivergenceGuard("t")
    if stops_at is None:
        for i, loss in enumerate(losses):
            guard.check(i, len(losses), loss)
        return
    with pytest.raises(TrainingDiverged, match=f"t: training diverged at step {stops_at}/"):
        for i, loss in enumerate(losses):
            guard.check(i, len(losses), loss)


@pytest.mark.parametrize("field, value", [("factor", 1.0), ("smoothing", 1.0), ("smoothing", -0.1)])
def test_guard_config_is_validated(field, value):
    with pytest.raises(ValueError, match=field):
        DivergenceGuard(**{field: value})


def test_train_stops_a_diverging_run_with_the_hint():
    torch.manual_seed(0)
    model = MLP(BackboneConfig(input_dim=8, hidden=(16,), num_classes=3))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(512, 8, generator=g)
    data = Split(x, (x.sum(1) * 7).long() % 3)
    with pytest.raises(TrainingDiverged) as err:
        train(model, model.parameters(), data, TrainConfig(epochs=5, lr=1e4, batch_size=32),
              label="tiny", progress=False)
    msg = str(err.value)
    assert msg.startswith("tiny: training diverged at step ") and msg.endswith(HINT)
    assert "--lr" in msg and "--unit-l1" in msg


def test_train_healthy_run_is_not_stopped():
    torch.manual_seed(0)
    model = MLP(BackboneConfig(input_dim=8, hidden=(16,), num_classes=3))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(512, 8, generator=g)
    data = Split(x, (x.sum(1) * 7).long() % 3)
    history = train(model, model.parameters(), data, TrainConfig(epochs=3, batch_size=32),
                    progress=False)
    assert len(history) == 3 and history[-1] < history[0]
