"""Experiment (issue 12 points 5-6), not package code: per-mode corrections on the kept units of
a compacted TauGate mode, trained after unit selection with the gates fixed (h = z * 1[z > t]).

    python docs/experiments/accuracy_gap.py RUN SPEC...     SPEC = rank,b|-,s|-,epochs
    GAP_DROP=1 GAP_BUNDLE=out/corr python docs/experiments/accuracy_gap.py RUN 4,b,-,3

rank: LoRA rank per compacted layer (0: none); b: per-unit bias; s: per-unit pre-gate scale;
Adam lr 1e-3, cosine, on the mode's training split. GAP_DROP=k first drops layer 0's k least
important kept units; GAP_BUNDLE writes a bundle holding the mode and the mode with the
correction folded into its weights (W + BA, b + db), for `taugate bench`. Numbers: docs/int8.md.
"""

import math
import os
import sys

import numpy as np
import torch

from taugate.training.runs import export_run
from taugate.training.sources import DataConfig, MNISTModes

torch.set_num_threads(1)
run, variant = sys.argv[1], sys.argv[2:]
data = MNISTModes(DataConfig(root=os.environ["TAUGATE_DATA"]))
_, reports = export_run(run, "/tmp/i12/gap_bundle", data, modes=["rot45"], overwrite=True)
m = reports[0].pruned.model
d = data.mode("rot45")
drop = int(os.environ.get("GAP_DROP", "0"))
if drop:
    # drop layer 0's least important kept units (|next column| x mean activation on calibration)
    from taugate.exporting.prune import compact

    _, hid = m.forward(d.calibration.x.numpy(), return_hidden=True)
    imp = np.linalg.norm(m.layers[1].weight, axis=0) * hid[0].mean(0)
    keep0 = np.ones(m.widths[0], bool)
    keep0[np.argsort(imp)[:drop]] = False
    m = compact(m, [keep0, np.ones(m.widths[1], bool)])
    kept0 = [k for k, ok in zip(reports[0].pruned.kept_indices[0], keep0) if ok]
    reports[0].pruned.masks[0][:] = False
    reports[0].pruned.masks[0][kept0] = True
    print(
        "dropped",
        drop,
        "-> widths",
        m.widths,
        "acc",
        float((m.forward(d.test.x.numpy()).argmax(1) == d.test.y.numpy()).mean()),
    )


class Gated(torch.nn.Module):
    def __init__(self, m, rank, bias, scale):
        super().__init__()
        self.W = [torch.tensor(layer.weight) for layer in m.layers]
        self.b0 = [torch.tensor(layer.bias) for layer in m.layers]
        self.t = [
            torch.tensor(layer.threshold) if layer.threshold is not None else None
            for layer in m.layers
        ]
        self.db = (
            torch.nn.ParameterList([torch.nn.Parameter(torch.zeros_like(b)) for b in self.b0])
            if bias
            else None
        )
        self.ds = (
            torch.nn.ParameterList([torch.nn.Parameter(torch.ones(w.shape[0])) for w in self.W])
            if scale
            else None
        )
        self.A = torch.nn.ParameterList()
        self.B = torch.nn.ParameterList()
        g = torch.Generator().manual_seed(0)
        for w in self.W:
            if rank:
                self.A.append(
                    torch.nn.Parameter(
                        torch.randn(rank, w.shape[1], generator=g) / math.sqrt(w.shape[1])
                    )
                )
                self.B.append(torch.nn.Parameter(torch.zeros(w.shape[0], rank)))

    def forward(self, x):
        h = x
        for i, w in enumerate(self.W):
            z = h @ w.T + self.b0[i]
            if self.A:
                z = z + (h @ self.A[i].T) @ self.B[i].T
            if self.ds is not None:
                z = z * self.ds[i]
            if self.db is not None:
                z = z + self.db[i]
            h = z * (z > self.t[i]).float() if self.t[i] is not None else z
        return h

    def stored(self):
        n = sum(p.numel() for p in self.parameters())
        return n + 2 * sum(int(t.numel()) for t in self.t if t is not None)  # + thresholds & gains


def acc(model, split):
    with torch.no_grad():
        return float((model(split.x).argmax(1) == split.y).float().mean())


for spec in variant:
    rank, bias, scale, epochs = spec.split(",")
    rank, bias, scale, epochs = int(rank), bias == "b", scale == "s", int(epochs)
    torch.manual_seed(0)
    model = Gated(m, rank, bias, scale)
    params = list(model.parameters())
    before = acc(model, d.test)
    opt = torch.optim.Adam(params, lr=1e-3)
    n = len(d.train.x)
    steps = epochs * ((n + 255) // 256)
    step = 0
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, 256):
            idx = perm[i : i + 256]
            for gr in opt.param_groups:
                gr["lr"] = 1e-3 * 0.5 * (1 + math.cos(math.pi * step / steps))
            loss = torch.nn.functional.cross_entropy(model(d.train.x[idx]), d.train.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    if os.environ.get("GAP_BUNDLE"):
        from taugate.exporting.writer import ModeExport, write_bundle
        from taugate.spec import HardenedLayer, HardenedModel
        from taugate.training.adapters import load_foundation
        from taugate.training.families.mlp import harden_mlp
        from taugate.training.loop import accuracy as tacc

        layers = []
        with torch.no_grad():
            for i, w in enumerate(model.W):
                W = w.clone()
                b = model.b0[i].clone()
                if model.A:
                    W = W + model.B[i] @ model.A[i]
                if model.db is not None:
                    b = b + model.db[i]
                t = model.t[i].numpy() if model.t[i] is not None else None
                layers.append(
                    HardenedLayer(W.numpy().astype(np.float32), b.numpy().astype(np.float32), t)
                )
        corr = HardenedModel(tuple(layers))
        found, _ = load_foundation(f"{run}/foundation")
        dense = harden_mlp(found, {})
        r = reports[0]

        def ex(model_, acc_, r=r):
            return ModeExport(
                model=model_,
                method="taugate",
                angle=45.0,
                units_total=r.pruned.unpruned.widths,
                kept_indices=[list(map(int, np.flatnonzero(mk))) for mk in r.pruned.masks],
                calibration_accuracy=0.0,
                test_accuracy=acc_,
                extra={"data_mode": "rot45"},
            )

        tx, ty = d.test.x.numpy(), d.test.y.numpy()
        a_corr = float((corr.forward(tx).argmax(1) == ty).mean())
        write_bundle(
            os.environ["GAP_BUNDLE"],
            dense,
            {
                "rot45": ex(m, float((m.forward(tx).argmax(1) == ty).mean())),
                "rot45-corr": ex(corr, a_corr),
            },
            dense_extra={"test_accuracy": {"rot45": tacc(found, d.test)}},
            overwrite=True,
        )
        print("numpy acc of corrected:", a_corr, "bundle", os.environ["GAP_BUNDLE"])
    print(
        f"{spec}: rot45 test {before:.4f} -> {acc(model, d.test):.4f}, calib {acc(model, d.calibration):.4f}, stored/mode {model.stored()}, widths {m.widths}, MAC ratio {118016 / m.macs:.2f}",
        flush=True,
    )
