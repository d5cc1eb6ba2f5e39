"""The paper's path does not move: a short golden run of the mlp family (pretrain, adapt with
each method, compact through the one export pipeline's per-mode step), pinned to the numbers the code gave before models, modes and
targets became generic (issue 9). Accuracies on 500 test images; units kept per hidden layer."""

from __future__ import annotations

import pytest
import torch

from taugate.exporting.compaction import compact_mode
from taugate.training.backbone import FoundationConfig
from taugate.training.gating import set_hard
from taugate.training.loop import TrainConfig, accuracy
from taugate.training.pipeline import AdaptConfig, adapt, pretrain_foundation
from taugate.training.sources import DataConfig, MNISTModes

# method, method config, (soft accuracy, hard accuracy, units kept, pruned test accuracy);
# recorded with commit bff6efe (before issue 9), seed 0, CPU
GOLDEN = [
    ("frozen", {}, (0.674, 0.674, "128/128 122/128", 0.674)),
    ("taugate", {}, (0.684, 0.684, "128/128 122/128", 0.684)),
    ("bitfit", {}, (0.686, 0.686, "128/128 122/128", 0.686)),
    ("lora", {}, (0.710, 0.710, "128/128 122/128", 0.710)),
    ("gain_only", {}, (0.684, 0.684, "128/128 122/128", 0.684)),
    ("tau_only", {}, (0.674, 0.674, "128/128 122/128", 0.674)),
    ("taugate", {"unit_l1": 0.08, "gain_lr_scale": 16.0, "retune_epochs": 1,  # sparse recipe
                 "retune_lr_scale": 10.0, "retune_schedule": "cosine"},   # (as of bff6efe)
     (0.734, 0.734, "76/128 119/128", 0.734)),
]


@pytest.fixture(scope="module")
def golden_setup(data_root):
    torch.set_num_threads(1)
    data = MNISTModes(DataConfig(root=data_root, limit_train=3000, limit_test=500,
                                 calibration_size=500, download=False))
    return data, pretrain_foundation(data, FoundationConfig(epochs=1), progress=False)


@pytest.mark.parametrize("method, config, expected", GOLDEN,
                         ids=[f"{m}{'-sparse' if c else ''}" for m, c, _ in GOLDEN])
def test_golden_run(golden_setup, method, config, expected):
    data, foundation = golden_setup
    m, model = adapt(foundation, data.mode("rot45"), AdaptConfig(method, config, TrainConfig()),
                     progress=False)
    md = data.mode("rot45")
    got_soft = accuracy(set_hard(model, False), md.test)
    got_hard = accuracy(set_hard(model, True), md.test)
    spec = m.harden_spec(set_hard(model, False), {"mode": "rot45"})
    c = compact_mode("rot45", foundation, spec, (md.calibration.x, md.calibration.y),
                     (md.test.x, md.test.y))
    soft, hard, units, pruned = expected
    assert got_soft == pytest.approx(soft, abs=1e-6)
    assert got_hard == pytest.approx(hard, abs=1e-6)
    assert c.units == units
    assert c.test_accuracy == pytest.approx(pruned, abs=1e-6)
