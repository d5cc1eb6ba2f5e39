"""Export a training run (foundation + adapters) to a bundle (format 2): harden the gates, fold
the gains, prune the units that never fire on the calibration split, write one compacted ONNX
graph per mode plus the dense frozen model and manifest.json.

Two paths: the paper's chain MLP (``family: mlp``, the default ``--engine auto``) keeps the
numpy graph builder (identical numbers); any other family (``vit``, user models) is compacted
in torch, exported with ``torch.onnx.export`` and written as a shared-backbone bundle
(``taugate.exporting.gated``); ``--engine torch`` forces that path for an mlp run too.

Every mode is measured beside the dense frozen model on the mode's own test set; a mode worse
than it by more than --max-accuracy-drop is refused (the error names the mode, both accuracies
and the flags) unless --allow-worse lets it through with a warning."""

from __future__ import annotations

from pathlib import Path

from taugate.commands._common import (
    add_data_arguments,
    csv_list,
    fewer_macs,
    format_table,
    mac_ratio_text,
)

HELP = "export a run's adapters to a bundle of compacted per-mode ONNX subnetworks"


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
    p.add_argument("--engine", choices=["auto", "numpy", "torch"], default="auto",
                   help="auto: numpy graph builder for mlp runs, torch export (shared backbone) "
                        "for the other families; numpy / torch: force one")
    p.add_argument("--standalone", action="store_true",
                   help="torch engine: write every mode graph with its own weights instead of "
                        "a shared backbone")
    add_prune_arguments(p)
    add_precision_arguments(p)
    add_data_arguments(p)


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


def precision_config(args):
    from taugate.training.pipeline import PrecisionConfig

    return PrecisionConfig(tuple(args.precision), args.quantization, args.max_accuracy_drop)


def prune_config(args):
    from taugate.exporting.prune import PruneConfig

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
    from taugate.summaries import hit_rate

    with ModeRuntime.open(bundle, providers="cpu") as rt:
        out = {}
        for r in reports:
            test = data.mode(r.mode).test
            out[r.name] = hit_rate(rt.predict(r.name, test.x.numpy()), test.y.numpy())
    return out


def _run_family(run_dir: str) -> str:
    """The run's model family from its run file (format 1 runs: mlp)."""
    import json
    from pathlib import Path

    from taugate.training import runs

    name = getattr(runs, "RUN_FILE", None)
    path = Path(run_dir) / name if name else None
    if path is None or not path.is_file():
        return "mlp"
    return json.loads(path.read_text("utf-8")).get("family", "mlp")


def generic_rows(reports, dense_macs: int) -> list[list]:
    from taugate.commands._common import facts_text

    rows = []
    for r in reports:
        e = r.entry
        units = " ".join(f"{k}/{t}" for k, t in zip(e["units_kept"], e["units_total"]))
        rows.append([r.name, e["method"], facts_text(e["facts"]), units,
                     mac_ratio_text(dense_macs, e["macs"]), f"{e['dense_test_accuracy']:.4f}",
                     f"{e['unpruned_test_accuracy']:.4f}", f"{e['test_accuracy']:.4f}",
                     f"{r.onnx_max_diff:.1e}"])
    return rows


GENERIC_HEADERS = ["mode", "method", "facts", "units kept", "MAC ratio", "acc dense",
                   "acc hard", "acc pruned", "ONNX diff"]


def run_generic(args) -> int:
    """The torch engine: any family, through ``load_run`` (i9train's run reader)."""
    import json

    from taugate.exporting.gated import export_run_bundle

    try:
        from taugate.training.loaded import load_run
    except ImportError as exc:  # the training side of issue 9 lands separately
        raise RuntimeError(f"--engine torch needs taugate.training.loaded.load_run, which this "
                           f"installation lacks ({exc}); use --engine numpy for mlp runs") from None

    run = load_run(args.run, args.data_root, args.modes)
    path, reports = export_run_bundle(run, args.out, shared=not args.standalone,
                                      overwrite=args.force)
    dense_macs = json.loads((path / "manifest.json").read_text("utf-8"))["dense"]["macs"]
    print(format_table(GENERIC_HEADERS, generic_rows(reports, dense_macs)))
    print(f"bundle: {path}")
    return 0


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



def run(args) -> int:
    engine = args.engine
    if engine == "auto":
        engine = "numpy" if _run_family(args.run) == "mlp" else "torch"
    if engine == "torch":
        if args.into:
            raise ValueError("--into: adding modes to a bundle is supported for mlp runs "
                             "(--engine numpy) only; export the run with --out instead")
        return run_generic(args)
    from taugate.commands._common import data_config
    from taugate.training.runs import export_run
    from taugate.training.sources import MNISTModes

    if args.into:
        return run_into(args)
    precision = precision_config(args)  # validated before any work
    if Path(args.out).exists() and not args.force:  # before minutes of work, not after
        raise FileExistsError(f"{args.out} already exists; pass --force to replace it")
    data = MNISTModes(data_config(args))
    path, reports = export_run(args.run, args.out, data, prune_config(args), args.modes,
                               overwrite=args.force, allow_worse=args.allow_worse,
                               precision=precision)
    print(format_table(REPORT_HEADERS, report_rows(reports, onnx_accuracies(path, reports, data))))
    if precision.int8:
        print(int8_summary(path))
    print(f"bundle: {path}")
    return 0


def run_into(args) -> int:
    """``--into BUNDLE``: export the modes to a temporary bundle beside it, then merge."""
    import shutil
    import tempfile

    from taugate.commands._common import data_config
    from taugate.exporting.merge import merge_into
    from taugate.runtime import ModeRuntime
    from taugate.training.runs import export_run
    from taugate.training.sources import MNISTModes

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
