"""Peers in the benchmark: from a training run's TauGate mode, train and measure in the same run
what a user would pick instead, at the units the mode keeps: structured pruning with
fine-tuning (Torch-Pruning, Taylor importance, cosine), a small MLP of that shape from scratch,
and dense int8. Writes peers.json and peers.png and prints one table: accuracy on the mode and
on the other mode, parameters stored per mode, MACs, measured speedup against dense fp32."""

from __future__ import annotations

from taugate.commands._common import add_data_arguments, add_device_argument, int_list

HELP = "train and measure the peers (Torch-Pruning, small MLP, dense int8) beside a TauGate mode"


def add_arguments(p) -> None:
    p.add_argument("run", help="run directory written by `taugate train` (with --sparse)")
    p.add_argument("--out", required=True, help="folder for peers.json and peers.png")
    p.add_argument("--mode", default="rot45", help="the TauGate mode to compare (default rot45)")
    p.add_argument("--other", default="rot0", help="the other mode (default rot0)")
    p.add_argument("--finetune-epochs", type=int, default=5,
                   help="Torch-Pruning fine-tuning epochs (default 5)")
    p.add_argument("--scratch-epochs", type=int, default=5,
                   help="small-MLP-from-scratch epochs (default 5)")
    p.add_argument("--batch", type=int_list, default=[1, 256], help="timing batch sizes")
    p.add_argument("--repeats", type=int, default=30, help="interleaved timing rounds")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    p.add_argument("--quiet", action="store_true")
    add_data_arguments(p)
    add_device_argument(p)


HEADERS = ["model", "acc mode", "acc other", "stored/mode", "graph params", "MACs", "MAC ratio"]


def run(args) -> int:
    import json
    import os
    from pathlib import Path

    from taugate.bundle.atomic import write_text
    from taugate.commands._common import data_config, format_table
    from taugate.lab.peers import PeersConfig, run_peers
    from taugate.lab.peers_plot import write_peers_plot
    from taugate.timing import TimingConfig
    from taugate.training.devices import resolve_device
    from taugate.training.sources import MNISTModes

    config = PeersConfig(args.finetune_epochs, args.scratch_epochs)
    timing = TimingConfig(batch_sizes=tuple(args.batch), repeats=args.repeats,
                          threads=args.threads)
    data = MNISTModes(data_config(args))
    result = run_peers(args.run, args.mode, args.other, data, config, timing,
                       resolve_device(args.device), progress=not args.quiet)
    rows = [[r["model"], f"{r['acc_mode']:.4f}", f"{r['acc_other']:.4f}", r["stored_per_mode"],
             r["graph_params"], r["macs"], f"{r['mac_ratio']:.2f}x",
             *(f"{r[f'speedup_b{b}']:.2f}x" for b in timing.batch_sizes)] for r in result.rows]
    print(format_table(HEADERS + [f"speedup b{b}" for b in timing.batch_sizes], rows))
    load = os.getloadavg()
    out = Path(args.out)
    doc = {"mode": result.mode, "other": result.other, "rows": result.rows,
           "machine": {**result.machine, "loadavg_at_end": [round(v, 2) for v in load]},
           "timing": {"batches": list(timing.batch_sizes), "repeats": timing.repeats,
                      "threads": timing.threads},
           "config": vars(config)}
    write_text(out / "peers.json", json.dumps(doc, indent=2))
    write_peers_plot(out / "peers.png", doc)
    print(f"{args.mode} vs {args.other}; speedup = dense fp32 median / model median, "
          f"{timing.repeats} interleaved rounds, {timing.threads} thread(s); load average "
          f"{load[0]:.2f}; wrote {out / 'peers.json'}, {out / 'peers.png'}")
    return 0
