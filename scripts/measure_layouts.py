"""Measure a trained run in both bundle layouts and both precisions (the README's table).

    python scripts/measure_layouts.py tabular DIR        # a user's tabular model + two modes
    python scripts/measure_layouts.py measure RUN OUT    # export 2 layouts, bench, table

``tabular`` writes what a user brings (``DIR/model.py:build`` with ``DIR/weights.safetensors``,
pretrained here on the clean mode only, and ``DIR/modes/{clean,shifted}``); train it with
``taugate train --model DIR/model.py:build --weights DIR/weights.safetensors --modes-dir
DIR/modes --sparse ...``. ``measure`` exports RUN with ``--precision fp32,int8`` in the shared and
the standalone layout (``taugate export``), measures every mode against the dense model at batch
1 and 256 with ``taugate bench`` (one thread, interleaved medians, both precisions), and prints a
markdown table: bundle bytes, test accuracy beside the dense model's, MAC ratio, speedups.

The README's table came from these runs (seed 0, TAUGATE_DATA set):

    taugate train --modes rot0,rot45 --sparse --out runs/mlp
    python scripts/measure_layouts.py tabular runs/tab
    taugate train --model runs/tab/model.py:build --weights runs/tab/weights.safetensors \
        --modes-dir runs/tab/modes --adapt-epochs 10 --batch-size 64 --out runs/tab/run
    taugate train --family vit --modes rot0,rot45 --limit-train 12000 --calibration-size 2000 \
        --sparse --unit-l1 0.05 --retune-epochs 2 --out runs/vit05
    python scripts/measure_layouts.py measure runs/mlp out/mlp   # and runs/tab/run, runs/vit05
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

MODEL_PY = '''import torch


def build():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(),
                               torch.nn.Linear(128, 128), torch.nn.ReLU(),
                               torch.nn.Linear(128, 10))
'''


def tabular(out: Path) -> None:
    """Teacher-labelled 64-feature data; the shifted mode scales and offsets half the features."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(64, 10)).astype(np.float32)

    def rows(n, shifted):
        x = rng.normal(size=(n, 64)).astype(np.float32)
        y = (x @ teacher).argmax(1).astype(np.int64)
        if shifted:
            x[:, ::2] = 1.8 * x[:, ::2] + 0.6
        return x, y

    for name, shifted in (("clean", False), ("shifted", True)):
        (out / "modes" / name).mkdir(parents=True, exist_ok=True)
        for split, n in (("train", 6000), ("test", 2000)):
            x, y = rows(n, shifted)
            np.savez(out / "modes" / name / f"{split}.npz", x=x, y=y)
    (out / "model.py").write_text(MODEL_PY)
    sys.path.insert(0, str(out))
    from model import build

    model = build()
    x, y = (torch.from_numpy(a) for a in rows(12000, False))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(15):
        for i in range(0, len(x), 128):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i:i + 128]), y[i:i + 128]).backward()
            opt.step()
    save_file(model.state_dict(), str(out / "weights.safetensors"))


def taugate(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "taugate.cli", *map(str, args)], check=True)


def bundle_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure(run: Path, out: Path, budget: float) -> list[dict]:
    rows = []
    for layout in ("shared", "standalone"):
        bundle = out / f"bundle-{layout}"
        taugate("export", run, "--out", bundle, "--layout", layout, "--precision", "fp32,int8",
                "--force", "--allow-worse")
        report = out / f"bench-{layout}.json"
        taugate("bench", bundle, "--batch", "1,256", "--threads", "1", "--budget", budget,
                "--json", report, "--quiet", *data_args(run))
        manifest = json.loads((bundle / "manifest.json").read_text())
        bench = json.loads(report.read_text())
        int8 = sum((bundle / v["variants"]["int8"]["file"]).stat().st_size
                   for v in [manifest["dense"], *manifest["modes"].values()])
        for precision, size in (("fp32", bundle_bytes(bundle) - int8), ("int8", int8)):
            rows.append({"layout": layout, "precision": precision, "bytes": size,
                         "modes": per_mode(manifest, bench, precision)})
    return rows


def data_args(run: Path) -> list[str]:
    """``--data MODE=FILE.npz`` for a run of mode folders (bench finds MNIST by itself)."""
    meta = json.loads((run / "run.json").read_text())
    source = meta["source"]
    if source.get("kind") != "folder":
        return []
    root = Path(source["root"])
    return [a for m in meta["modes"] for a in ("--data", f"{m}={root / m / 'test.npz'}")]


def per_mode(manifest: dict, bench: dict, precision: str) -> dict:
    out = {}
    for name, entry in manifest["modes"].items():
        acc = entry["test_accuracy"] if precision == "fp32" else \
            entry["variants"]["int8"]["test_accuracy"]
        speed = {c["batch"]: c["speedup"][precision] for c in bench["cells"]
                 if c["mode"] == name and precision in c["speedup"]}
        out[name] = {"accuracy": acc, "dense": entry["dense_test_accuracy"],
                     "mac_ratio": manifest["dense"]["macs"] / entry["macs"],
                     "speedup_b1": speed.get(1), "speedup_b256": speed.get(256)}
    return out


def _joined(modes: dict, key: str, form: str) -> str:
    return " / ".join(form.format(m[key]) for m in modes.values())


def table(name: str, rows: list[dict]) -> str:
    return "\n".join(
        f"| {name} | {r['layout']} | {r['precision']} | {r['bytes'] / 1024:,.0f} KiB | "
        f"{_joined(r['modes'], 'accuracy', '{:.4f}')} ({_joined(r['modes'], 'dense', '{:.4f}')}) | "
        f"{_joined(r['modes'], 'mac_ratio', '{:.2f}×')} | "
        f"{_joined(r['modes'], 'speedup_b1', '{:.2f}×')} | "
        f"{_joined(r['modes'], 'speedup_b256', '{:.2f}×')} |"
        for r in rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    t = sub.add_parser("tabular")
    t.add_argument("out", type=Path)
    m = sub.add_parser("measure")
    m.add_argument("run", type=Path)
    m.add_argument("out", type=Path)
    m.add_argument("--name", default=None)
    m.add_argument("--budget", type=float, default=1.0)
    args = p.parse_args()
    if args.what == "tabular":
        tabular(args.out)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    rows = measure(args.run, args.out, args.budget)
    (args.out / "layouts.json").write_text(json.dumps(rows, indent=1))
    print(table(args.name or args.run.name, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
