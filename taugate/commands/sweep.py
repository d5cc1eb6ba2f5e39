"""Sweep the per-mode sparsity strength (cost-weighted L1 on the TauGate gains) for one mode and
one or more hidden widths; write sweep.csv, sweep.json and pareto.png: accuracy, MACs and the
onnxruntime CPU speedup of each pruned subnetwork against the dense frozen model."""

from __future__ import annotations

import argparse

from taugate.commands._common import (
    add_data_arguments,
    add_device_argument,
    data_config,
    float_list,
    int_list,
)
from taugate.training.recipes import SPARSE_RECIPE

# the sparsity recipe's defaults (docs/speedup.md); 0 is the paper's TauGate, for reference
DEFAULT_STRENGTHS = (0.0, 0.06, 0.08, 0.09, 0.1, 0.12)
HELP = "accuracy vs MACs vs measured speedup over sparsity strengths and widths"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="out/sweep", help="output folder (default out/sweep); "
                   "foundations are saved there and reused")
    p.add_argument("--mode", default="rot45", help="mode to specialize (default rot45)")
    p.add_argument("--other", default="rot0", help="the other mode of the mixture (default rot0)")
    p.add_argument("--widths", type=int_list, default=[128],
                   help="hidden widths w (foundation hidden (w, w)), e.g. 128,512,1024")
    p.add_argument("--strengths", type=float_list, default=list(DEFAULT_STRENGTHS),
                   help="unit_l1 strengths (0 = the paper's TauGate); default "
                        + ",".join(f"{v:g}" for v in DEFAULT_STRENGTHS))
    p.add_argument("--reference-width", type=int, default=128,
                   help="unit_l1 = strength x REF / width, so one grid fits every width "
                        "(default 128; 0: use the strengths as they are)")
    p.add_argument("--epochs", type=int, default=1, help="sparse (L1) adaptation epochs")
    p.add_argument("--retune-epochs", type=int, default=SPARSE_RECIPE["retune_epochs"],
                   help="epochs retraining tau/gamma without L1, zeroed units frozen (default "
                        f"{SPARSE_RECIPE['retune_epochs']})")
    p.add_argument("--lr", type=float, default=0.05, help="adaptation learning rate")
    p.add_argument("--gain-lr-scale", type=float, default=SPARSE_RECIPE["gain_lr_scale"],
                   help=f"gains' lr multiplier (default {SPARSE_RECIPE['gain_lr_scale']:g})")
    p.add_argument("--retune-lr-scale", type=float, default=SPARSE_RECIPE["retune_lr_scale"],
                   help=f"retune lr = --lr * this (default {SPARSE_RECIPE['retune_lr_scale']:g})")
    p.add_argument("--retune-schedule", choices=("constant", "cosine"),
                   default=SPARSE_RECIPE["retune_schedule"],
                   help=f"retune lr schedule (default {SPARSE_RECIPE['retune_schedule']})")
    p.add_argument("--target-mac-ratio", type=float, default=0.0,
                   help="before retuning, zero the least important units until dense/kept MACs "
                        ">= this (default 0: off)")
    p.add_argument("--round-units", type=int, default=1,
                   help="with --target-mac-ratio: round layer 1's kept units down to a multiple "
                        "of this (default 1)")
    p.add_argument("--distill", choices=("none", "taugate", "foundation"), default="none",
                   help="retune with distillation from this teacher (default none)")
    p.add_argument("--distill-temperature", type=float, default=4.0)
    p.add_argument("--distill-alpha", type=float, default=0.5,
                   help="loss = (1 - a) CE + a T^2 KL (default 0.5)")
    p.add_argument("--prune-below", type=float, default=0.0,
                   help="also prune units firing on <= this fraction of calibration (default 0)")
    p.add_argument("--round-to", type=int, default=1,
                   help="round kept units per layer up to a multiple of this (default 1)")
    p.add_argument("--threads", type=int, default=1,
                   help="onnxruntime intra-op threads for timing (default 1; 0 = ORT default)")
    p.add_argument("--repeats", type=int, default=15, help="interleaved timing rounds")
    p.add_argument("--seed", type=int, default=0)
    add_data_arguments(p)
    add_device_argument(p)


def run(args) -> int:
    from taugate.commands._common import format_table
    from taugate.exporting.prune import PruneConfig
    from taugate.lab.sweep import SweepConfig, run_sweep
    from taugate.timing import TimingConfig
    from taugate.training.devices import resolve_device

    config = SweepConfig(
        out=args.out, mode=args.mode, other=args.other, widths=tuple(args.widths),
        strengths=tuple(args.strengths), reference_width=args.reference_width or None,
        epochs=args.epochs, retune_epochs=args.retune_epochs,
        lr=args.lr, gain_lr_scale=args.gain_lr_scale, seed=args.seed,
        retune_lr_scale=args.retune_lr_scale, retune_schedule=args.retune_schedule,
        target_mac_ratio=args.target_mac_ratio, round_units=args.round_units,
        distill=args.distill, distill_temperature=args.distill_temperature,
        distill_alpha=args.distill_alpha,
        prune=PruneConfig(below=args.prune_below, round_to=args.round_to, max_accuracy_drop=1.0),
        timing=TimingConfig(threads=args.threads, repeats=args.repeats),
    )
    rows = run_sweep(config, data_config(args), device=resolve_device(args.device))
    headers = ["width", "strength", "units", "MACs x", "acc", "dense acc", "other", "b1", "b64",
               "b256", "b4096"]
    table = [[r["width"], f"{r['strength']:g}", r["units_kept"], f"{r['mac_ratio']:.2f}",
              f"{r['acc_mode']:.4f}", f"{r['dense_acc_mode']:.4f}", f"{r['acc_other']:.4f}",
              *(f"{r[f'speedup_b{b}']:.2f}" for b in (1, 64, 256, 4096))] for r in rows]
    print(format_table(headers, table))
    print(f"wrote {config.out}/sweep.csv, sweep.json, pareto.png")
    return 0
