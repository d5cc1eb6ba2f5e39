"""Screen per-mode corrections within the 5,000-number budget on the width-128 rot45 mode
(issue 21, item 4 (b)).

Usage: ``python scripts/measure_pooled_corrections.py NAME '{"rank": 16, "pool": 2,
"scale": 0.2}'`` with TAUGATE_DATA set and the width-128 foundation at /work/runs/mlp
(``taugate train --out /work/runs/mlp --sparse``). Runs the sparse recipe with
target_mac_ratio 2 and 10 retune epochs (other keys: TauGateConfig's flat options) plus:
``rank``/``scale`` (first-layer correction, default 4 / 0.1), ``mask`` (A only on pixels nonzero
in some training row), ``pool`` (A reads the image pooled k x k), ``rank1``/``scale1`` (a
second-layer correction), ``out`` (scale of a full output-layer correction), ``bias`` (scale of
first/second-layer bias corrections), ``adam`` (Adam lr for the factors in the retune),
``shift``/``shift_p`` (random pixel shifts of up to ``shift`` on a ``shift_p`` share of rows),
``epochs`` (sparse phase), ``seed``. Prints one JSON line: hard/soft test accuracy, hard train
accuracy, MAC ratio, kept units, stored numbers per mode. Results:
docs/measured/corrections_rot45_w128.json ("screen_pooled"); what shipped: ``--correction-pool``.
"""
import json
import sys
import time

import torch
from torch import nn

import taugate.training.loop as L
import taugate.training.pipeline as P
from taugate.training.adapters import load_foundation
from taugate.training.gating import gate_modules
from taugate.training.loop import TrainConfig, accuracy
from taugate.training.methods.lora import LoRALinear, PooledCorrection
from taugate.training.methods.taugate import TauGate
from taugate.training.pipeline import AdaptConfig, adapt
from taugate.training.recipes import sparse_recipe
from taugate.training.sources import DataConfig, MNISTModes
from taugate.training.sparsity import dense_macs, kept_macs
from taugate.training.targets import get_module, set_module

torch.set_num_threads(1)
name = sys.argv[1]
opts = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
o = dict(opts)
rank, scale, mask, pool = o.pop("rank", 4), o.pop("scale", 0.1), o.pop("mask", False), o.pop("pool", 0)
rank1, scale1 = o.pop("rank1", 0), o.pop("scale1", 0.1)
out_scale, bias = o.pop("out", 0.0), o.pop("bias", 0.0)
epochs, seed, adam = o.pop("epochs", 1), o.pop("seed", 0), o.pop("adam", 0.0)
shift, shift_p = o.pop("shift", 0), o.pop("shift_p", 1.0)
in_retune = {"on": False}


class Masked(LoRALinear):
    """A's columns multiplied by a fixed 0/1 pixel mask."""

    def __init__(self, base, rank, alpha, m):
        super().__init__(base, rank, alpha)
        self.register_buffer("m", m)

    def forward(self, x):
        return self.base(x) + (x @ (self.lora_A * self.m).t() @ self.lora_B.t()) * self.scaling


class Delta(nn.Module):
    """A frozen linear plus ``s * dW`` (optional) and ``s * db``, both starting at zero."""

    def __init__(self, base, s, weight=True):
        super().__init__()
        self.base, self.s = base, s
        for p in base.parameters():
            p.requires_grad_(False)
        self.dw = nn.Parameter(torch.zeros_like(base.weight)) if weight else None
        self.db = nn.Parameter(torch.zeros_like(base.bias))

    weight = property(lambda self: self.base.weight + (self.s * self.dw if self.dw is not None else 0))
    bias = property(lambda self: self.base.bias + self.s * self.db)
    in_features = property(lambda self: self.base.in_features)
    out_features = property(lambda self: self.base.out_features)

    def merged_weight_bias(self):
        return self.weight, self.bias

    def forward(self, x):
        return nn.functional.linear(x, self.weight, self.bias)


class Both:
    """SGD for tau/gamma, Adam for the 2-D factors, stepped together."""

    def __init__(self, a, b):
        self.a, self.b, self.param_groups = a, b, a.param_groups

    def zero_grad(self, set_to_none=True):
        self.a.zero_grad(set_to_none=set_to_none)
        self.b.zero_grad(set_to_none=set_to_none)

    def step(self):
        self.a.step()
        self.b.step()


_make, _batches, _retune = L.make_optimizer, L.batches, P.retune


def make_optimizer(params, config):
    big = [p for p in params if p.dim() >= 2]
    if not adam or not in_retune["on"] or not big:
        return _make(params, config)
    return Both(_make([p for p in params if p.dim() < 2], config), torch.optim.Adam(big, lr=adam))


def shifted(x, gen):
    n = len(x)
    pad = nn.functional.pad(x.reshape(n, 28, 28), (shift,) * 4)
    dx = torch.randint(-shift, shift + 1, (n,), generator=gen)
    dy = torch.randint(-shift, shift + 1, (n,), generator=gen)
    still = torch.rand(n, generator=gen) >= shift_p
    dx[still], dy[still] = 0, 0
    ar = torch.arange(28)
    rows, cols = ar[None] + shift + dy[:, None], ar[None] + shift + dx[:, None]
    return pad[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]].reshape(n, -1)


def batches(split, batch_size, gen):
    for xb, yb in _batches(split, batch_size, gen):
        yield (shifted(xb, gen) if shift and gen is not None else xb), yb


def retune(*a, **k):
    in_retune["on"] = True
    return _retune(*a, **k)


L.make_optimizer, L.batches, P.retune = make_optimizer, batches, retune

foundation, meta = load_foundation("/work/runs/mlp/foundation")
mode = MNISTModes(DataConfig(root="/work/shared/datasets")).mode("rot45")
support = (mode.train.x.reshape(len(mode.train), -1).abs().amax(0) > 0).float()


class Corrected(TauGate):
    name = "taugate"

    def inject(self, model):
        super().inject(model)
        first = get_module(model, "linears.0")
        if bias:
            first = Delta(first, bias, weight=False)
        if rank and pool:
            first = PooledCorrection(first, rank, rank * scale, pool)
        elif rank:
            first = Masked(first, rank, rank * scale, support if mask else torch.ones_like(support))
        set_module(model, "linears.0", first)
        second = get_module(model, "linears.1")
        if bias:
            second = Delta(second, bias, weight=False)
        if rank1:
            second = LoRALinear(second, rank1, rank1 * scale1)
        set_module(model, "linears.1", second)
        if out_scale:
            set_module(model, "linears.2", Delta(get_module(model, "linears.2"), out_scale))


cfg = {**sparse_recipe([128, 128]), "target_mac_ratio": 2.0, "retune_epochs": 10, **o}
P.get_method = lambda n, c: Corrected(c)
t = time.time()
train = TrainConfig(epochs=epochs, seed=seed, min_steps=200)
method, model = adapt(foundation, mode, AdaptConfig("taugate", cfg, train), progress=False)
soft = accuracy(model, mode.test)
model.set_hard(True)
acc, acc_train = accuracy(model, mode.test), accuracy(model, mode.train)
kept = [int((a.gain != 0).sum()) for _, a in gate_modules(model)]
cols = (28 // pool) ** 2 if pool else int(support.sum()) if mask else 784
stored = (512 + rank * (cols + kept[0]) + rank1 * (kept[0] + kept[1])
          + (10 * kept[1] + 10 if out_scale else 0) + (sum(kept) if bias else 0))
print(json.dumps({"name": name, "opts": json.dumps(opts), "acc_hard": round(acc, 4),
                  "soft": round(soft, 4), "train": round(acc_train, 4),
                  "mac_ratio": round(dense_macs(model) / kept_macs(model), 3), "kept": kept,
                  "stored": stored, "sec": round(time.time() - t)}), flush=True)
