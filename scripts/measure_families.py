"""Measure every model family on one footing (the README's table of families).

    python scripts/measure_families.py cnn DIR          # pretrain examples/mnist_cnn.py
    python scripts/measure_families.py swiglu DIR       # pretrain examples/mnist_swiglu.py
    python scripts/measure_families.py measure NAME=RUN [NAME=RUN ...] --out OUT
    python scripts/measure_families.py table OUT/families-*.json   # the table again

``cnn`` and ``swiglu`` pretrain the example CNN (``examples/mnist_cnn.py``) or the example
SwiGLU model (``examples/mnist_swiglu.py``) on the 50/50 mixture of 0° and 45°
MNIST (Adam 1e-3, batch 128, 2 epochs, seed 0) and writes ``DIR/weights.safetensors``. ``measure``
exports each run (``taugate export``, shared layout, fp32), times every mode against the dense
model at batch 1 and 256 with ``taugate bench`` (one intra-op thread, interleaved medians),
and writes ``OUT/families-NAME.json`` per run (units kept per site, whole-model and FFN MAC
ratios, accuracies, speedups, the load average before and after) and prints a markdown table.
*FFN MACs* are those of the layers a gated site touches (its producer, ``up`` and consumer):
the part of the model taugate can shrink.

The README's table came from these runs (seed 0, TAUGATE_DATA set; see docs/byom.md):

    taugate train --modes rot0,rot45 --sparse --out runs/mlp
    python scripts/measure_layouts.py tabular runs/tab   # then train runs/tab/run (its docstring)
    taugate train --family vit --modes rot0,rot45 --limit-train 12000 --calibration-size 2000 \\
        --sparse --unit-l1 0.05 --retune-epochs 2 --out runs/vit05
    python scripts/measure_families.py cnn runs/cnn --limit-train 30000 --epochs 4
    taugate train --model examples/mnist_cnn.py:build --weights runs/cnn/weights.safetensors \\
        --modes rot0,rot45 --limit-train 8000 --calibration-size 2000 --limit-test 5000 \\
        --sparse --adapt-lr 0.001 --retune-epochs 2 --target-mac-ratio 2 --out runs/cnn/run
    python scripts/measure_families.py swiglu runs/swiglu --limit-train 20000
    taugate train --model examples/mnist_swiglu.py:build \\
        --weights runs/swiglu/weights.safetensors --modes rot0,rot45 --limit-train 20000 \\
        --calibration-size 2000 --sparse --out runs/swiglu/run
    python scripts/measure_families.py measure mlp=runs/mlp tabular=runs/tab/run \\
        vit=runs/vit05 cnn=runs/cnn/run swiglu=runs/swiglu/run --out docs/measured

The CNN's adapters use a 50× smaller ``--adapt-lr`` than the MLP's: a channel's gain gathers the
gradient of every position of its feature map (784 at 28×28); at 0.005 the first steps of this
foundation diverge.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {"mnist_cnn": "cnn", "mnist_swiglu": "swiglu"}  # examples/<file>.py -> subcommand


def pretrain(example: str, out: Path, epochs: int = 2, limit_train: int | None = None,
             seed: int = 0) -> None:
    """Train ``examples/<example>.py:build()`` on the 0°/45° MNIST mixture (Adam 1e-3, batch
    128; the first ``limit_train`` training images of each mode, less the calibration split)
    and save its weights as ``out/weights.safetensors``."""
    from safetensors.torch import save_file

    from taugate.training.loop import TrainConfig, train
    from taugate.training.sources.mnist import DataConfig, MNISTModes

    sys.path.insert(0, str(ROOT / "examples"))
    model = __import__(example).build()
    data = MNISTModes(DataConfig(limit_train=limit_train)).mixture(["rot0", "rot45"])
    train(model, model.parameters(), data, TrainConfig(epochs=epochs, batch_size=128, lr=1e-3,
                                                       optimizer="adam", seed=seed),
          label=f"{example} foundation")
    out.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), str(out / "weights.safetensors"))


def ffn_macs(targets, kept: dict[str, int] | None = None) -> int:
    """MACs per sample of the layers the sites touch (producers, ``up``s, consumers), with
    ``kept[producer]`` units left at each site; dense when None."""
    kept = kept or {}
    layers = {p for s in targets.sites for p in (s.producer, s.up, s.consumer) if p}
    ins = {s.consumer: kept.get(s.producer, s.units) for s in targets.sites}
    outs = {s.producer: kept.get(s.producer, s.units) for s in targets.sites}
    outs.update({s.up: kept.get(s.producer, s.units) for s in targets.sites if s.up})
    return int(sum(rows * ins.get(p, i) * outs.get(p, o) * (k[0] if k else 1)
                   for p, (rows, i, o, *k) in targets.linears.items() if p in layers))


def soft_accuracies(run_dir: Path) -> dict[str, float]:
    """Each mode's soft-gated adapted model (before hardening and pruning) on its test set."""
    import torch

    from taugate.training.gating import set_hard
    from taugate.training.loaded import load_run

    out = {}
    for name, mode in load_run(run_dir).modes.items():
        model = set_hard(mode.adapter.model, False).eval()
        x, y = mode.test
        with torch.no_grad():
            out[name] = float((model(x).argmax(1) == y).float().mean())
    return out


def measure(name: str, run: Path, work: Path, budget: float) -> dict:
    """Export ``run`` (shared layout, fp32), bench it at batch 1 and 256, gather the numbers."""
    from measure_layouts import data_args, taugate

    from taugate.training.targets import Targets

    load_before = list(os.getloadavg())
    bundle, report = work / f"bundle-{name}", work / f"bench-{name}.json"
    taugate("export", run, "--out", bundle, "--force", "--allow-worse", "--no-measure")
    taugate("bench", bundle, "--batch", "1,256", "--threads", "1", "--precision", "fp32",
            "--budget", budget, "--json", report, "--quiet", *data_args(run))
    meta = json.loads((run / "run.json").read_text())
    targets = Targets.from_dict(meta["targets"])
    manifest = json.loads((bundle / "manifest.json").read_text())
    bench = json.loads(report.read_text())
    soft = soft_accuracies(run)
    modes = {}
    for mode, entry in manifest["modes"].items():
        kept = dict(zip(targets.producers, entry["units_kept"]))
        speed = {c["batch"]: c["speedup"]["fp32"] for c in bench["cells"] if c["mode"] == mode}
        modes[mode] = {
            "units_kept": entry["units_kept"], "units_total": entry["units_total"],
            "macs": entry["macs"], "mac_ratio": manifest["dense"]["macs"] / entry["macs"],
            "ffn_macs": ffn_macs(targets, kept),
            "ffn_mac_ratio": ffn_macs(targets) / ffn_macs(targets, kept),
            "accuracy": entry["test_accuracy"], "soft": soft[mode],
            "hard_unpruned": entry.get("unpruned_test_accuracy"),
            "frozen": entry["dense_test_accuracy"],
            "speedup_b1": speed.get(1), "speedup_b256": speed.get(256)}
    return {"name": name, "run": run.name, "family": meta.get("family"),
            "sites": [s.producer for s in targets.sites], "dense_macs": manifest["dense"]["macs"],
            "dense_ffn_macs": ffn_macs(targets), "modes": modes,
            "machine": {**bench["machine"], "loadavg_before": load_before,
                        "loadavg_after": list(os.getloadavg()),
                        "processor": platform.processor() or platform.machine()}}


def _cells(modes: dict, form: str, key: str) -> str:
    return " / ".join(form.format(m[key]) for m in modes.values())


def table(results: list[dict]) -> str:
    """The README's markdown table: one row per family, modes separated by ' / '."""
    lines = ["| family | sites | modes | units kept | whole-model MACs | FFN MACs | accuracy "
             "(soft; frozen) | speedup batch 1 | speedup batch 256 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        m = r["modes"]
        kept = " / ".join(" ".join(map(str, v["units_kept"])) for v in m.values()) + \
            f" (of {' '.join(map(str, next(iter(m.values()))['units_total']))})"
        lines.append(
            f"| {r['name']} | {len(r['sites'])} | {' / '.join(m)} | {kept} | "
            f"{_cells(m, '{:.2f}×', 'mac_ratio')} fewer | {_cells(m, '{:.2f}×', 'ffn_mac_ratio')}"
            f" fewer | {_cells(m, '{:.4f}', 'accuracy')} ({_cells(m, '{:.4f}', 'soft')}; "
            f"{_cells(m, '{:.4f}', 'frozen')}) | {_cells(m, '{:.2f}×', 'speedup_b1')} | "
            f"{_cells(m, '{:.2f}×', 'speedup_b256')} |")
    loads = [r["machine"]["loadavg_before"][0] for r in results] + \
        [r["machine"]["loadavg_after"][0] for r in results]
    lines.append("")
    lines.append(f"{results[0]['machine']['cpu']}, {results[0]['machine']['cpu_count']} CPUs, "
                 f"onnxruntime {results[0]['machine']['onnxruntime']}, one intra-op thread; "
                 f"1-minute load average {min(loads):.1f}–{max(loads):.1f} while measuring")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    for example, what in EXAMPLES.items():
        c = sub.add_parser(what, help=f"pretrain examples/{example}.py on the 0°/45° mixture")
        c.add_argument("out", type=Path)
        c.add_argument("--epochs", type=int, default=2)
        c.add_argument("--limit-train", type=int, default=None,
                       help="the first N MNIST training images per mode (default all)")
    m = sub.add_parser("measure", help="export, bench and tabulate NAME=RUN ...")
    m.add_argument("runs", nargs="+", help="NAME=RUN: a name for the table and a run folder")
    m.add_argument("--out", type=Path, required=True, help="where families-NAME.json go")
    m.add_argument("--work", type=Path, default=None,
                   help="where bundles and bench reports go (default: OUT/../families-work)")
    m.add_argument("--budget", type=float, default=1.0, help="seconds of timing per cell")
    t = sub.add_parser("table", help="the markdown table of families-NAME.json files")
    t.add_argument("files", nargs="+", type=Path)
    args = p.parse_args()
    if args.what == "table":
        print(table([json.loads(f.read_text()) for f in args.files]))
        return 0
    if args.what != "measure":
        pretrain(next(e for e, w in EXAMPLES.items() if w == args.what), args.out, args.epochs,
                 args.limit_train)
        return 0
    pairs = []
    for item in args.runs:
        name, sep, run = item.partition("=")
        if not sep or not name or not (Path(run) / "run.json").is_file():
            p.error(f"{item!r}: expected NAME=RUN with RUN a folder holding run.json")
        pairs.append((name, Path(run)))
    work = args.work or args.out.parent / "families-work"
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT / "scripts"))
    results = []
    for name, run in pairs:
        results.append(measure(name, run, work, args.budget))
        (args.out / f"families-{name}.json").write_text(json.dumps(results[-1], indent=1))
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
