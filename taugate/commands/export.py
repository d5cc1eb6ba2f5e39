"""Export a training run (foundation + adapters) to a bundle: the one pipeline
(taugate/exporting/pipeline.py) for every family (mlp, vit, a user's --model).

Per mode: harden the gates, fold the gains, prune the units that fire on at most --prune-below
of the calibration split (rounded with --round-to), compact in torch, lower to ONNX, check
parity, and write it in the chosen --layout beside the dense frozen model and manifest.json.
Three guards share --max-accuracy-drop: pruned vs unpruned, the mode vs the dense frozen model
on the mode's own test set (--allow-worse: exported with a warning instead), and int8 vs fp32.
--into adds the modes to an existing bundle (its layout), one export at a time (a lock)."""

from __future__ import annotations

import argparse
from pathlib import Path

from taugate.commands._common import csv_list, facts_text, format_table, mac_ratio_text

HELP = "export a run's adapters to a bundle of compacted per-mode ONNX subnetworks"

LAYOUT_HELP = ("shared (default): the backbone's weights stored once, each mode only its kept "
               "indices, thresholds and gains (kilobytes per mode; the runtime materializes the "
               "same compacted weights, so the numbers are identical); standalone: every mode "
               "graph carries its own weights. With --into: the bundle's layout")


def add_prune_arguments(p) -> None:
    g = p.add_argument_group("pruning and accuracy guards")
    g.add_argument("--prune-below", type=float, default=0.0, metavar="RATE",
                   help="prune units whose calibration firing rate is <= RATE "
                        "(default 0: only units that never fire, which is exact)")
    g.add_argument("--max-accuracy-drop", type=float, default=0.005, metavar="DROP",
                   help="refuse a mode whose test accuracy is below the dense frozen model's, "
                        "a pruning that loses against the unpruned hard-gated model, or an int8 "
                        "variant that loses against the fp32 graph, by more than DROP "
                        "(default 0.005)")
    g.add_argument("--allow-worse", action="store_true",
                   help="export a mode worse than the dense frozen model anyway, with a warning")
    g.add_argument("--round-to", type=int, default=1, metavar="N",
                   help="round each layer's kept units up to a multiple of N, keeping the next "
                        "most active units (default 1: no rounding)")


class _Removed(argparse.Action):
    """A flag that went away: refused by name, with what replaces it."""

    INSTEAD = {"--engine": "use --layout shared|standalone (every family has one exporter)",
               "--standalone": "use --layout standalone"}

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string}: removed; {self.INSTEAD[option_string]}")


def add_arguments(p) -> None:
    p.add_argument("run", help="run directory written by `taugate train`")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="bundle directory to write")
    where.add_argument("--into", metavar="BUNDLE",
                       help="add the modes to this existing bundle (same foundation, its "
                            "layout), keeping its modes; rewritten atomically, one export at a "
                            "time")
    p.add_argument("--modes", type=csv_list, default=None, help="modes to export (default all)")
    p.add_argument("--no-measure", action="store_true",
                   help="skip the short timing after writing (the speedup b1 / b256 columns)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing bundle (with --into: replace modes it has)")
    p.add_argument("--layout", choices=["shared", "standalone"], default=None, help=LAYOUT_HELP)
    p.add_argument("--data-root", default=None,
                   help="where the run's mode source lives now (the MNIST root or the modes "
                        "folder), when it moved since training")
    p.add_argument("--router", action="store_true",
                   help="then fit the bundle's router (mode 'auto', unknown inputs) from the "
                        "run's calibration splits, as `taugate route BUNDLE --run RUN` does "
                        "with its defaults; with --into the run must hold every mode of the "
                        "bundle")
    p.add_argument("--engine", nargs="?", action=_Removed, help=argparse.SUPPRESS)
    p.add_argument("--standalone", nargs=0, action=_Removed, help=argparse.SUPPRESS)
    add_prune_arguments(p)
    add_precision_arguments(p)


def add_precision_arguments(p) -> None:
    from taugate.exporting.quantize import DEFAULT_SCHEME, SCHEMES

    g = p.add_argument_group("precision")
    g.add_argument("--precision", type=csv_list, default=["fp32"], metavar="LIST",
                   help="fp32, int8 or fp32,int8: int8 adds modes/<m>.int8.onnx (and "
                        "dense.int8.onnx) beside the fp32 graphs, which are always written "
                        "(default fp32)")
    g.add_argument("--quantization", default=DEFAULT_SCHEME, choices=SCHEMES,
                   help=f"int8 scheme (onnxruntime.quantization; default {DEFAULT_SCHEME}; "
                        "static calibrates on the calibration split)")


def prune_config(args):
    from taugate.exporting.prune import PruneConfig

    return PruneConfig(below=args.prune_below, round_to=args.round_to,
                       max_accuracy_drop=args.max_accuracy_drop)


def export_config(args):
    """The command line as an :class:`~taugate.exporting.pipeline.ExportConfig` (validated
    before any work)."""
    from taugate.exporting.pipeline import DEFAULT_LAYOUT, ExportConfig, PrecisionConfig

    return ExportConfig(layout=args.layout or DEFAULT_LAYOUT, prune=prune_config(args),
                        allow_worse=args.allow_worse,
                        precision=PrecisionConfig(tuple(args.precision), args.quantization),
                        overwrite=args.force, modes=args.modes)


HEADERS = ["mode", "method", "facts", "units kept", "MAC ratio", "acc dense", "acc hard",
           "acc pruned", "ONNX diff"]


def report_rows(reports, dense_macs: int) -> list[list]:
    """One row per mode: the dense frozen model's accuracy beside the mode's (hard-gated
    unpruned, compacted), MACs against dense, and the ONNX vs torch parity."""
    rows = []
    for r in reports:
        e = r.entry
        rows.append([r.name, r.method, facts_text(e["facts"]), r.units,
                     mac_ratio_text(dense_macs, r.macs), f"{r.dense_accuracy:.4f}",
                     f"{e['unpruned_test_accuracy']:.4f}", f"{r.test_accuracy:.4f}",
                     f"{r.onnx_max_diff:.1e}"])
    return rows


def int8_summary(path) -> str:
    """One line per int8 variant written: accuracy beside fp32."""
    import json

    manifest = json.loads((Path(path) / "manifest.json").read_text("utf-8"))
    lines = []
    for name, m in manifest["modes"].items():
        v = m.get("variants", {}).get("int8")
        if v:
            lines.append(f"int8 {name}: test accuracy {v['test_accuracy']:.4f} (fp32 "
                         f"{m['test_accuracy']:.4f}, {v['quantization']})")
    return "\n".join(lines)


def print_reports(path, reports, config, measure: bool = True) -> None:
    import json

    from taugate.commands import _speedup

    dense_macs = json.loads((Path(path) / "manifest.json").read_text("utf-8"))["dense"]["macs"]
    rows = report_rows(reports, dense_macs)
    headers = list(HEADERS)
    if measure:  # right after writing: what the MAC ratio is worth on this machine
        timed = _speedup.measure(path, [r.name for r in reports])
        at = headers.index("MAC ratio") + 1
        headers[at:at] = _speedup.headers()
        rows = [row[:at] + _speedup.cells(timed, r.name) + row[at:]
                for row, r in zip(rows, reports)]
    print(format_table(headers, rows))
    if measure:
        print(_speedup.NOTE)
    for r in reports:
        if r.warning:
            print(f"warning: {r.warning}")
    if config.precision.int8:
        print(int8_summary(path))


def run(args) -> int:
    from taugate.exporting.pipeline import export_run

    config = export_config(args)  # validated before any work
    if args.into:
        if args.router:
            _check_router_modes(args)
        code = run_into(args, config)
        path = args.into
    else:
        if Path(args.out).exists() and not args.force:  # before minutes of work, not after
            raise FileExistsError(f"{args.out} already exists; pass --force to replace it")
        path, reports = export_run(args.run, args.out, config, args.data_root)
        print_reports(path, reports, config, not args.no_measure)
        print(f"bundle: {path} ({config.layout} layout)")
        code = 0
    if args.router:
        from taugate.commands.route import fit_into_bundle

        fit_into_bundle(path, args.run, args.data_root)
    return code


def _check_router_modes(args) -> None:
    """``--into B --router``: the router is fitted on every mode of the bundle, so the run
    must hold them all; checked before the export, not after."""
    import json

    from taugate.training.runs import ADAPTER_DIR

    bundle, run = Path(args.into), Path(args.run)
    try:
        have = set(json.loads((bundle / "manifest.json").read_text("utf-8"))["modes"])
    except (OSError, ValueError, KeyError, TypeError):
        return  # export_into names what is wrong with the bundle
    found = {p.stem for p in (run / ADAPTER_DIR).glob("*.json")}
    missing = sorted(have - found)
    if missing:
        raise ValueError(f"--router with --into {bundle.name}: the run {run.name!r} has no "
                         f"modes {missing} of the bundle, and the router is fitted on every "
                         f"mode's calibration rows; export without --router, then fit it with "
                         f"`taugate route {bundle.name} --run RUN` from a run holding them all")


def run_into(args, config) -> int:
    """``--into BUNDLE``: export into a scratch bundle beside it, then merge (under a lock)."""
    import sys

    from taugate.exporting.into import bundle_layout, export_into
    from taugate.runtime import ModeRuntime

    bundle = Path(args.into)

    def on_wait():
        print(f"waiting for another export into {bundle.name} to finish", file=sys.stderr)

    reports, added = export_into(args.run, bundle, config, args.data_root,
                                 layout_given=args.layout is not None, on_wait=on_wait,
                                 verify=lambda p: ModeRuntime.open(p, providers="cpu").close())
    print_reports(bundle, reports, config, not args.no_measure)
    print(f"bundle: {bundle} ({bundle_layout(bundle)} layout; added {', '.join(added)})")
    return 0
