"""Export a training run (foundation + adapters) to a bundle: harden the gates, fold the gains,
prune the units that never fire on the calibration split, write one compacted ONNX graph per
mode plus the dense frozen model and manifest.json.

Every mode is measured beside the dense frozen model on the mode's own test set; a mode worse
than it by more than --max-accuracy-drop is refused (the error names the mode, both accuracies
and the flags) unless --allow-worse lets it through with a warning."""

from __future__ import annotations

from pathlib import Path

from taugate.commands._common import add_data_arguments, csv_list, fewer_macs, format_table

HELP = "export a run's adapters to a bundle of compacted per-mode ONNX subnetworks"


def add_prune_arguments(p) -> None:
    g = p.add_argument_group("pruning and accuracy guards")
    g.add_argument("--prune-below", type=float, default=0.0, metavar="RATE",
                   help="prune units whose calibration firing rate is <= RATE "
                        "(default 0: only units that never fire, which is exact)")
    g.add_argument("--max-accuracy-drop", type=float, default=0.005, metavar="DROP",
                   help="refuse a mode whose test accuracy is below the dense frozen model's, "
                        "or a pruning that loses against the unpruned hard-gated model, by more "
                        "than DROP (default 0.005)")
    g.add_argument("--allow-worse", action="store_true",
                   help="export a mode worse than the dense frozen model anyway, with a warning")
    g.add_argument("--round-to", type=int, default=1, metavar="N",
                   help="round each layer's kept units up to a multiple of N, keeping the next "
                        "most active units (default 1: no rounding)")


def add_arguments(p) -> None:
    p.add_argument("run", help="run directory written by `taugate train`")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="bundle directory to write")
    where.add_argument("--into", metavar="BUNDLE",
                       help="add the modes to this existing bundle (same foundation), keeping "
                            "its modes; rewritten atomically")
    p.add_argument("--modes", type=csv_list, default=None, help="modes to export (default all)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing bundle (with --into: replace modes it has)")
    add_prune_arguments(p)
    add_data_arguments(p)


def prune_config(args):
    from taugate.export.prune import PruneConfig

    return PruneConfig(below=args.prune_below, round_to=args.round_to,
                       max_accuracy_drop=args.max_accuracy_drop)


REPORT_HEADERS = ["mode", "method", "units kept", "MACs", "acc dense", "acc soft", "acc hard",
                  "acc ONNX"]


def report_rows(reports, onnx_accuracy: dict | None = None) -> list[list]:
    """One row per mode: the dense frozen model's accuracy beside the mode's (soft, hard,
    ONNX compacted; ONNX falls back to the numpy compacted model when not measured)."""
    onnx_accuracy = onnx_accuracy or {}
    rows = []
    for r in reports:
        p = r.pruned
        dense = "-" if r.dense_accuracy is None else f"{r.dense_accuracy:.4f}"
        rows.append([r.name, r.method, r.units, fewer_macs(p.unpruned.macs / p.model.macs), dense,
                     f"{r.soft_accuracy:.4f}", f"{r.hard_accuracy:.4f}",
                     f"{onnx_accuracy.get(r.name, p.test_accuracy):.4f}"])
    return rows


def onnx_accuracies(bundle, reports, data) -> dict[str, float]:
    """Test accuracy of each mode's compacted graph, run through the runtime."""
    from taugate.runtime import ModeRuntime

    with ModeRuntime.open(bundle, providers="cpu") as rt:
        out = {}
        for r in reports:
            test = data.mode(r.mode).test
            out[r.name] = float((rt.predict(r.name, test.x.numpy()) == test.y.numpy()).mean())
    return out


def run(args) -> int:
    from taugate.commands._common import data_config
    from taugate.training.data import MNISTModes
    from taugate.training.runs import export_run

    if args.into:
        return run_into(args)
    if Path(args.out).exists() and not args.force:  # before minutes of work, not after
        raise FileExistsError(f"{args.out} already exists; pass --force to replace it")
    data = MNISTModes(data_config(args))
    path, reports = export_run(args.run, args.out, data, prune_config(args), args.modes,
                               overwrite=args.force, allow_worse=args.allow_worse)
    print(format_table(REPORT_HEADERS, report_rows(reports, onnx_accuracies(path, reports, data))))
    print(f"bundle: {path}")
    return 0


def run_into(args) -> int:
    """``--into BUNDLE``: export the modes to a temporary bundle beside it, then merge."""
    import shutil
    import tempfile

    from taugate.commands._common import data_config
    from taugate.export.merge import merge_into
    from taugate.runtime import ModeRuntime
    from taugate.training.data import MNISTModes
    from taugate.training.runs import export_run

    bundle = Path(args.into)
    if not (bundle / "manifest.json").is_file():
        raise FileNotFoundError(f"--into {bundle}: no manifest.json there (expected a bundle "
                                f"written by `taugate export`; to write a new one use --out)")
    data = MNISTModes(data_config(args))
    scratch = Path(tempfile.mkdtemp(prefix=f".{bundle.name}.add.", dir=bundle.parent))
    try:
        path, reports = export_run(args.run, scratch / "bundle", data, prune_config(args),
                                   args.modes, allow_worse=args.allow_worse)
        onnx = onnx_accuracies(path, reports, data)
        added = merge_into(bundle, path, replace=args.force,
                           verify=lambda p: ModeRuntime.open(p, providers="cpu").close())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(format_table(REPORT_HEADERS, report_rows(reports, onnx)))
    print(f"bundle: {bundle} (added {', '.join(added)})")
    return 0
