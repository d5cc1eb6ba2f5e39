"""Benchmark a bundle: every mode (or --modes) against the dense model, fp32 and int8 where the
bundle has int8 variants, at several batch sizes and thread counts. Dense and mode run
interleaved through the runtime (medians over the same rounds); the MAC ratio stands beside
each measured speedup. Accuracy is measured when test data is given (--data, or the MNIST test
sets of an MNIST bundle when taugate[train] is installed). Needs only numpy + onnxruntime
(+ matplotlib for --plot)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from taugate.commands._common import csv_list, format_table, int_list

HELP = "benchmark a bundle: each mode against the dense model (fp32, int8), speedup and accuracy"


def add_arguments(p) -> None:
    p.add_argument("bundle", help="bundle directory")
    p.add_argument("--modes", type=csv_list, default=None, help="modes to measure (default all)")
    p.add_argument("--batch", type=int_list, default=None, metavar="LIST",
                   help="batch sizes (default 1,16,256,4096; 256 with --mixed/--auto)")
    p.add_argument("--threads", type=int_list, default=None, metavar="LIST",
                   help="onnxruntime intra-op thread counts (default 1,2; 1 with "
                        "--mixed/--auto)")
    p.add_argument("--mixed", action="store_true",
                   help="instead: mixed-mode batches (rows spread evenly over the modes) beside "
                        "one mode, and every mode on the same rows (run_all) beside one call "
                        "per mode")
    p.add_argument("--auto", action="store_true",
                   help="instead: the router (route) and routed runs (run_auto) beside one "
                        "mode's run, on the modes' test rows (--data, or MNIST's) where given")
    p.add_argument("--precision", type=csv_list, default=["fp32", "int8"], metavar="LIST",
                   help="precisions to measure where the bundle has them (default fp32,int8)")
    p.add_argument("--budget", type=float, default=0.4, metavar="SECONDS",
                   help="timed seconds per cell; rounds are sized to fit, at least 15 "
                        "(default 0.4)")
    p.add_argument("--providers", default="cpu",
                   help="runtime providers: cpu (default), auto, cuda, directml")
    p.add_argument("--data", action="append", default=[], metavar="[MODE=]FILE.npz",
                   help="test data for accuracy: an .npz with x (inputs) and y (labels), for "
                        "every mode or for MODE only; repeatable")
    p.add_argument("--data-root", default=None,
                   help="MNIST root for an MNIST bundle's test sets (default $TAUGATE_DATA); "
                        "needs taugate[train]")
    p.add_argument("--json", default=None, metavar="FILE", help="write all results as JSON")
    p.add_argument("--plot", default=None, metavar="FILE.png",
                   help="speedup vs batch size figure (needs matplotlib)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def load_npz_data(specs: list[str], modes: list[str]) -> dict:
    """``[MODE=]FILE.npz`` specs -> mode -> (x float32, y int64); no pickles."""
    import numpy as np

    out = {}
    for spec in specs:
        mode, _, file = spec.rpartition("=") if "=" in spec else ("", "", spec)
        if mode and mode not in modes:
            raise ValueError(f"--data {spec!r}: mode {mode!r} is not benchmarked; modes: {modes}")
        try:
            with np.load(file, allow_pickle=False) as z:
                if "x" not in z or "y" not in z:
                    raise ValueError(f"--data {file!r}: expected arrays 'x' and 'y', got "
                                     f"{sorted(z.files)}")
                x, y = np.asarray(z["x"]), np.asarray(z["y"])
        except (OSError, EOFError) as exc:
            raise ValueError(f"--data {file!r}: cannot read an .npz: {exc}") from exc
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(f"--data {file!r}: x and y must hold the same number (>= 1) of rows, "
                             f"got {len(x)} and {len(y)}")
        for m in ([mode] if mode else modes):
            out[m] = (x, y.astype(np.int64).reshape(-1))
    return out


def mnist_data(manifest, modes: list[str], root: str | None) -> tuple[dict, str | None]:
    """The MNIST test set of each rotation mode (``facts.angle``); needs torch."""
    def fact(m, key):  # the mode's own facts (format 2: entry["facts"]), else the entry's
        entry = manifest.modes[m]
        return entry.mode_facts.get(key, entry.facts.get(key))

    angles = {m: fact(m, "angle") for m in modes}
    if manifest.input.features != 784 or any(a is None for a in angles.values()):
        return {}, "accuracy: not an MNIST-rotation bundle; pass --data FILE.npz"
    try:
        from taugate.training.sources import DataConfig, MNISTModes, Mode
    except ImportError:
        return {}, "accuracy: MNIST test sets need taugate[train] (torch); or pass --data"
    data = MNISTModes(DataConfig(root=root, download=False))  # read at the first mode
    out = {}
    try:
        for m in modes:
            test = data.mode(Mode(fact(m, "data_mode") or m, float(angles[m]))).test
            out[m] = (test.x.numpy(), test.y.numpy())
    except FileNotFoundError:
        return {}, ("accuracy: MNIST not found (set --data-root or $TAUGATE_DATA); or pass "
                    "--data FILE.npz")
    return out, None


def table_rows(result) -> list[list]:
    rows = []
    for c in result.cells:
        for p, s in c.speedup.items():
            same = c.speedup_same.get(p)
            rows.append([c.mode, p, c.batch, c.threads, f"{c.mac_ratio:.2f}x",
                         f"{c.median_us[f'{c.mode}/{p}']:.1f}", f"{s:.2f}x",
                         f"{same:.2f}x" if same is not None else "-",
                         f"{same / c.mac_ratio:.2f}" if same is not None else "-",
                         f"{c.floor_us:.1f}" if c.floor_us else "-",
                         f"{c.ceiling:.1f}x" if c.ceiling else "-", c.rounds])
    return rows


HEADERS = ["mode", "prec", "batch", "threads", "MAC ratio", "mode us", "vs dense fp32",
           "vs dense same prec", "same / MAC", "floor us", "ceiling", "rounds"]


def headline_lines(result) -> list[str]:
    """One line per (mode, threads, precision): the speedup at the smallest and the largest
    batch, with the MAC ratio and the ceiling the per-call floor allows."""
    def part(h):
        ceiling = f", ceiling {h['ceiling']:.1f}x" if h["ceiling"] else ""
        return f"batch {h['batch']} {h['speedup']:.2f}x{ceiling}"

    return [f"{h['mode']} {h['precision']} ({h['threads']} thread{'s' if h['threads'] > 1 else ''}"
            f", MACs {h['mac_ratio']:.2f}x fewer): {part(h['small'])}; {part(h['large'])}"
            for h in result.headline() if h["small"]["speedup"] is not None]


def accuracy_rows(result) -> list[list]:
    rows = []
    for mode, accs in result.accuracy.items():
        for p in result.config.precisions:
            if f"{mode}/{p}" in accs:
                d = accs.get(f"dense/{p}")
                rows.append([mode, p, f"{accs[f'{mode}/{p}']:.4f}",
                             f"{d:.4f}" if d is not None else "-"])
    return rows


def run(args) -> int:
    from taugate.bench import BenchConfig, run_bench
    from taugate.bundle.manifest import load_manifest

    _, manifest = load_manifest(args.bundle)
    modes = list(args.modes or manifest.modes)
    data, note = (load_npz_data(args.data, modes), None) if args.data else \
        mnist_data(manifest, modes, args.data_root)
    if args.mixed or args.auto:
        from taugate.commands.bench_many import run_many_modes

        return run_many_modes(args, data, note)
    config = BenchConfig(tuple(args.modes) if args.modes else None,
                         tuple(args.batch or (1, 16, 256, 4096)), tuple(args.threads or (1, 2)),
                         tuple(args.precision), args.budget, providers=args.providers)

    def progress(done, total, cell):
        if not args.quiet:
            speed = ", ".join(f"{p} {s:.2f}x" for p, s in cell.speedup.items())
            print(f"[{done}/{total}] {cell.mode} batch {cell.batch} threads {cell.threads}: "
                  f"{speed} (MACs {cell.mac_ratio:.2f}x)", file=sys.stderr, flush=True)

    result = run_bench(args.bundle, config, data, progress)
    print(format_table(HEADERS, table_rows(result)))
    print()
    for line in headline_lines(result):
        print(line)
    if result.accuracy:
        print()
        print(format_table(["mode", "prec", "accuracy", "dense"], accuracy_rows(result)))
    for line in result.notes + ([note] if note else []):
        print(line)
    load = result.machine.get("loadavg_at_start")
    print(f"providers used: {result.providers}; {result.machine.get('cpu')}, "
          f"{result.machine.get('cpu_count')} CPUs, onnxruntime "
          f"{result.machine.get('onnxruntime')}, load average at start {load}")
    print("speedup = dense median / mode median over the same interleaved rounds; "
          "'same prec' compares with the dense model in the mode's precision; floor = a bare "
          "onnxruntime call doing no work, ceiling = dense fp32 / floor")
    if args.json:
        from taugate.bundle.atomic import write_text

        write_text(args.json, json.dumps(result.to_json(), indent=2))
        print(f"json: {args.json}")
    if args.plot:
        from taugate.lab.bench_plot import plot_speedup

        plot_speedup(result, Path(args.plot))
        print(f"plot: {args.plot}")
    return 0
