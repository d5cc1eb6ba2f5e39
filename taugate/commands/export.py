"""Export a training run (foundation + adapters) to a bundle: harden the gates, fold the gains,
prune the units that never fire on the calibration split, write one compacted ONNX graph per
mode plus the dense frozen model and manifest.json."""

from __future__ import annotations

from taugate.commands._common import add_data_arguments, csv_list, format_table

HELP = "export a run's adapters to a bundle of compacted per-mode ONNX subnetworks"


def add_prune_arguments(p) -> None:
    g = p.add_argument_group("pruning")
    g.add_argument("--prune-below", type=float, default=0.0, metavar="RATE",
                   help="prune units whose calibration firing rate is <= RATE "
                        "(default 0: only units that never fire, which is exact)")
    g.add_argument("--max-accuracy-drop", type=float, default=0.005, metavar="DROP",
                   help="refuse a pruning that loses more than DROP test accuracy against the "
                        "unpruned hard-gated model, and an int8 variant that loses more than "
                        "DROP against the fp32 graph (default 0.005)")
    g.add_argument("--round-to", type=int, default=1, metavar="N",
                   help="round each layer's kept units up to a multiple of N, keeping the next "
                        "most active units (default 1: no rounding)")


def add_arguments(p) -> None:
    p.add_argument("run", help="run directory written by `taugate train`")
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.add_argument("--modes", type=csv_list, default=None, help="modes to export (default all)")
    p.add_argument("--force", action="store_true", help="replace an existing bundle")
    add_prune_arguments(p)
    add_precision_arguments(p)
    add_data_arguments(p)


def add_precision_arguments(p) -> None:
    from taugate.export.quantize import DEFAULT_SCHEME, SCHEMES

    g = p.add_argument_group("precision")
    g.add_argument("--precision", type=csv_list, default=["fp32"], metavar="LIST",
                   help="fp32, int8 or fp32,int8: int8 adds modes/<m>.int8.onnx (and "
                        "dense.int8.onnx) beside the fp32 graphs, which are always written "
                        "(default fp32)")
    g.add_argument("--quantization", default=DEFAULT_SCHEME, choices=SCHEMES,
                   help=f"int8 scheme (onnxruntime.quantization; default {DEFAULT_SCHEME}; "
                        "static calibrates on the calibration split)")


def precision_config(args):
    from taugate.training.pipeline import PrecisionConfig

    return PrecisionConfig(tuple(args.precision), args.quantization, args.max_accuracy_drop)


def prune_config(args):
    from taugate.export.prune import PruneConfig

    return PruneConfig(below=args.prune_below, round_to=args.round_to,
                       max_accuracy_drop=args.max_accuracy_drop)


def report_rows(reports, dense_macs: int) -> list[list]:
    rows = []
    for r in reports:
        p = r.pruned
        rows.append([r.name, r.method, r.units, f"{dense_macs / p.model.macs:.2f}x",
                     f"{r.soft_accuracy:.4f}", f"{r.hard_accuracy:.4f}",
                     f"{p.unpruned_test_accuracy:.4f}", f"{p.test_accuracy:.4f}"])
    return rows


def int8_summary(path) -> str:
    """One line per int8 variant written: accuracy beside fp32."""
    import json

    manifest = json.loads((path / "manifest.json").read_text("utf-8"))
    lines = []
    for name, m in manifest["modes"].items():
        v = m.get("variants", {}).get("int8")
        if v:
            lines.append(f"int8 {name}: test accuracy {v['test_accuracy']:.4f} (fp32 "
                         f"{m['test_accuracy']:.4f}, {v['quantization']})")
    return "\n".join(lines)


REPORT_HEADERS = ["mode", "method", "units kept", "MAC ratio", "acc soft", "acc hard",
                  "acc hard (numpy)", "acc pruned (numpy)"]


def run(args) -> int:
    from taugate.commands._common import data_config
    from taugate.training.data import MNISTModes
    from taugate.training.runs import export_run

    precision = precision_config(args)  # validated before any work
    data = MNISTModes(data_config(args))
    path, reports = export_run(args.run, args.out, data, prune_config(args), args.modes,
                               overwrite=args.force, precision=precision)
    dense_macs = reports[0].pruned.unpruned.macs
    print(format_table(REPORT_HEADERS, report_rows(reports, dense_macs)))
    if precision.int8:
        print(int8_summary(path))
    print(f"bundle: {path}")
    return 0
