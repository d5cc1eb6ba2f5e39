"""`taugate train`'s summary compacts a conv mode whose pruned channels had a BatchNorm: the
norms are folded first, as export folds them (else the BatchNorm keeps its old width)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from taugate.spec import GatedSpec, GatedUnits
from taugate.training.methods import get_method


class BnCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.bn = nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c2, self.head = nn.Conv2d(8, 4, 3, padding=1), nn.Linear(4, 3)

    def forward(self, x):
        h = self.c2(F.relu(self.bn(self.c1(x))))
        return self.head(F.relu(h).mean((2, 3)))


def test_the_summary_of_a_pruned_batchnorm_conv_mode(monkeypatch, tmp_path):
    import taugate.training.loaded as loaded
    from taugate.commands.train import summary

    torch.manual_seed(0)
    model = BnCNN().eval()
    gain = np.ones(8, np.float32)
    gain[[1, 4, 6]] = 0  # three channels removed from c1 (and bn) and from c2's inputs
    spec = GatedSpec((GatedUnits("c1", "c2", "relu", np.zeros(8, np.float32), gain, None, None,
                                 "bn"),))
    x, y = torch.randn(32, 1, 6, 6), torch.randint(0, 3, (32,))
    mode = SimpleNamespace(method="taugate", spec=spec, calibration=(x, y), test=(x, y),
                           adapter=SimpleNamespace(model=model, method=get_method("frozen")),
                           hard_model=lambda: model)
    run = SimpleNamespace(foundation=model, modes={"m": mode})
    monkeypatch.setattr(loaded, "load_run", lambda *a, **k: run)
    text = summary(tmp_path, ["m"])
    assert "5/8" in text.splitlines()[2], text
