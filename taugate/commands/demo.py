"""The main job end to end, on real MNIST: pretrain a foundation on the 50/50 mixture of 0 deg
and 45 deg, train a TauGate adapter per mode on the frozen foundation (rot0 and rot45, which it
was pretrained on, and rot90, a shift it never saw: there the frozen model is poor and the mode
recovers most of the loss), export a
bundle (dense model + one compacted ONNX subnetwork per mode) to OUT/bundle, load it back
through the runtime and print, per mode: units kept per layer, MAC ratio against the dense
model, test accuracy (torch soft gate, torch hard gate, ONNX compacted), dense accuracy, and the
measured latency ratio against the dense model at one large batch.

The adapters are trained with TauGate's unit-level sparsity recipe (``taugate train --sparse``)
so that whole units switch off per mode and the exported subnetworks are smaller than the dense
model; ``--paper-taugate`` trains the paper's TauGate instead, which keeps every unit."""

from __future__ import annotations

import os
from pathlib import Path

from taugate.commands._common import (
    add_data_arguments,
    add_device_argument,
    csv_list,
    format_table,
    mac_ratio_text,
)
from taugate.commands.export import add_prune_arguments, prune_config
from taugate.commands.train import add_method_arguments, run_config

HELP = "train, export, serve and measure modes end to end (what `make demo` runs)"
DEMO_MIXTURE = ("rot0", "rot45")  # the foundation's pretraining data
DEMO_MODES = ("rot0", "rot45", "rot90")  # rot90: a shift the foundation never saw


def add_arguments(p) -> None:
    p.add_argument("--out", default="out/demo", help="output directory (default out/demo); "
                   "the run lands in OUT/run, the bundle in OUT/bundle")
    p.add_argument("--modes", type=csv_list, default=list(DEMO_MODES),
                   help=f"modes to adapt to (default {','.join(DEMO_MODES)})")
    p.add_argument("--mixture", type=csv_list, default=list(DEMO_MIXTURE),
                   help=f"modes the foundation is pretrained on (default {','.join(DEMO_MIXTURE)}"
                        f"; an adapted mode outside it is a shift the foundation never saw)")
    p.add_argument("--hidden", type=lambda s: [int(v) for v in s.split(",")], default=[128, 128],
                   help="hidden widths (default 128,128)")
    p.add_argument("--epochs", type=int, default=2, help="foundation epochs (default 2)")
    p.add_argument("--lr", type=float, default=0.05, help="foundation SGD lr (default 0.05)")
    p.add_argument("--batch-size", type=int, default=256, help="batch size (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--latency-batch", type=int, default=4096,
                   help="batch size of the latency comparison (default 4096)")
    p.add_argument("--repeats", type=int, default=30,
                   help="at least this many interleaved timing rounds per mode (default 30)")
    p.add_argument("--time-budget", type=float, default=2.0,
                   help="seconds of timing per mode, more rounds if they fit (default 2)")
    add_method_arguments(p)
    p.add_argument("--paper-taugate", dest="sparse", action="store_false",
                   help="train the paper's TauGate (no unit sparsity: every unit is kept)")
    p.set_defaults(sparse=True)
    add_prune_arguments(p)
    add_data_arguments(p)
    add_device_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def run(args) -> int:
    import numpy as np

    from taugate.exporting.pipeline import ExportConfig, export_run
    from taugate.runtime import DENSE, ModeRuntime
    from taugate.summaries import hit_rate
    from taugate.timing import Interleaved, calibrate
    from taugate.training.runs import train_run
    from taugate.training.sources import MNISTModes

    if args.method not in ("taugate", "gain_only"):
        args.sparse = False  # the sparsity recipe is TauGate's (and GainOnly's)
    out = Path(args.out)
    args.foundation, args.foundation_only = None, False
    config = run_config(args, str(out / "run"))
    data = MNISTModes(config.data)
    print(f"data: MNIST from {data.root}; foundation pretrained on {'+'.join(args.mixture)}; "
          f"modes {', '.join(args.modes)}")
    train_run(config, data)
    config = ExportConfig(prune=prune_config(args), allow_worse=args.allow_worse,
                          overwrite=True)
    bundle, reports = export_run(out / "run", out / "bundle", config)
    for r in reports:
        if r.warning:
            print(f"warning: {r.warning}")
    rt = ModeRuntime.open(bundle)
    dense_macs = rt.manifest.dense.macs
    rows = []
    for r in reports:
        test = data.mode(r.entry["data_mode"]).test
        x, y = test.x.numpy(), test.y.numpy()
        onnx_acc = hit_rate(rt.predict(r.name, x), y)
        dense_acc = hit_rate(rt.predict(DENSE, x), y)
        xb = np.resize(x, (args.latency_batch, x.shape[1]))
        timer = Interleaved({"dense": lambda xb=xb: rt.run(DENSE, xb),
                             "mode": lambda xb=xb, name=r.name: rt.run(name, xb)})
        for _ in range(calibrate(timer, args.time_budget, min_rounds=args.repeats)):
            timer.round()
        rows.append([
            r.name, r.units, mac_ratio_text(dense_macs, r.macs),
            f"{r.soft_accuracy:.4f}", f"{r.hard_accuracy:.4f}", f"{onnx_acc:.4f}",
            f"{dense_acc:.4f}", f"{timer.ratio('dense', 'mode'):.2f}x",
        ])
    print()
    print(format_table(["mode", "units kept", "MACs", "acc soft", "acc hard", "acc ONNX",
                        "acc dense", f"speedup@{args.latency_batch}"], rows))
    print(f"\nbundle: {bundle}  (providers {', '.join(rt.providers)}, "
          f"{os.cpu_count()} CPUs; speedup = dense latency / mode latency, median of "
          f">= {args.repeats} interleaved rounds through the runtime)")
    unseen = [m for m in args.modes if m not in args.mixture]
    if unseen:
        print(f"foundation pretrained on {', '.join(args.mixture)} only: for {', '.join(unseen)} "
              f"'acc dense' is the frozen model on a shift it never saw, 'acc ONNX' the mode's")
    return 0
