"""Reproduce the paper's experiment (arXiv 2602.11726): Tables 1-3 and Figure 1 in one command.

Per seed: pretrain a foundation MLP (784-128-128-10) on the 0 + 45 deg MNIST mixture, specialize
it to 45 deg with every method (Frozen, BitFit, TauGate, LoRA r=8, full fine-tuning; with
--extras also GainOnly, TauOnly, and TauGate to 0 deg for the overlap table), and evaluate each
on the 0 and 45 deg test sets. Writes results.csv, summary.json, tables/*.tex and
figures/mnist_rotation_accuracy.{pdf,png} under --out (see docs/reproduce.md).
"""

from __future__ import annotations

import argparse
import logging

from taugate.commands._common import add_data_arguments, add_device_argument, csv_list, int_list

HELP = "run the paper's experiment (seeds x methods) and write its tables and figure"
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=int_list, default=[0, 1, 2],
                   help="comma-separated seeds, one foundation each (default 0,1,2)")
    p.add_argument("--out", default="experiments/out", help="output directory (default experiments/out)")
    p.add_argument("--extras", action="store_true",
                   help="also the ablations (GainOnly, TauOnly; Table 2) and TauGate specialized to "
                        "the overlap mode (Table 3)")
    p.add_argument("--methods", type=csv_list, default=None,
                   help="Table 1 methods to run (default frozen,bitfit,taugate,lora,full_ft)")
    g = p.add_argument_group("protocol (defaults: the paper's)")
    g.add_argument("--adapt-mode", default="rot45", help="mode every method specializes to (default rot45)")
    g.add_argument("--overlap-mode", default="rot0",
                   help="with --extras: TauGate's second mode for Table 3 (default rot0)")
    g.add_argument("--eval-modes", type=csv_list, default=["rot0", "rot45"],
                   help="test sets to evaluate on (default rot0,rot45)")
    g.add_argument("--mixture", type=csv_list, default=["rot0", "rot45"],
                   help="modes the foundation is pretrained on (default rot0,rot45)")
    g.add_argument("--epochs", type=int, default=2, help="foundation epochs (default 2)")
    g.add_argument("--adapt-epochs", type=int, default=1, help="adaptation epochs (default 1)")
    g.add_argument("--lr", type=float, default=0.05, help="foundation SGD lr (default 0.05)")
    g.add_argument("--adapt-lr", type=float, default=0.05,
                   help="adaptation SGD lr, the same for every method (default 0.05)")
    g.add_argument("--batch-size", type=int, default=256, help="batch size (default 256)")
    g.add_argument("--no-onnx", action="store_true",
                   help="skip the onnxruntime accuracy of every exported graph")
    add_data_arguments(p)
    add_device_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def experiment_config(args):
    """The parsed arguments as an :class:`ExperimentConfig`."""
    from taugate.lab.experiment import ExperimentConfig
    from taugate.lab.experiment.config import TABLE1_METHODS
    from taugate.training.sources import DataConfig

    calibration = args.calibration_size
    if args.limit_train is not None and calibration >= args.limit_train:
        # the calibration split is only held out here; keep a small run runnable
        calibration = max(1, args.limit_train // 10)
        log.info("--limit-train %d: calibration split reduced from %d to %d examples",
                 args.limit_train, args.calibration_size, calibration)
    data = DataConfig(root=args.data_root, calibration_size=calibration,
                      limit_train=args.limit_train, limit_test=args.limit_test)
    return ExperimentConfig(
        out=args.out, seeds=tuple(args.seeds), extras=args.extras,
        methods=tuple(args.methods or TABLE1_METHODS), foundation_modes=tuple(args.mixture),
        adapt_mode=args.adapt_mode, overlap_mode=args.overlap_mode,
        eval_modes=tuple(args.eval_modes), epochs=args.epochs, adapt_epochs=args.adapt_epochs,
        lr=args.lr, adapt_lr=args.adapt_lr, batch_size=args.batch_size, onnx=not args.no_onnx,
        device=args.device, progress=not args.quiet, data=data,
    )


def run(args) -> int:
    from taugate.lab.experiment import run_experiment

    result = run_experiment(experiment_config(args))
    summary = result.summary
    adapt = summary["adapt_mode"]
    for by_mode in summary["methods"].values():
        entry = by_mode.get(adapt)
        if entry is None:
            continue
        accs = "  ".join(f"{ev} {entry['accuracy'][ev]['mean']:.4f}±{entry['accuracy'][ev]['std']:.4f}"
                         for ev in summary["eval_modes"])
        log.info("%-28s %7d params  %s", entry["label"], entry["trainable_params"], accs)
    log.info("wrote %s (%.1f s)", args.out, summary["elapsed_seconds"])
    return 0
