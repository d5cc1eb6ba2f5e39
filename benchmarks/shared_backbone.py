"""Shared-backbone bundles at scale (issue 12.1): build a bundle of many synthetic modes of the
784-1024-1024-10 MLP backbone through the real exporter, and measure what docs/bundle-format.md reports:
bundle size against the dense model alone, mode load time, and a materialized mode against its
standalone compacted graph (same outputs; interleaved speed at batch 1 and 256, 1 thread).

    PYTHONPATH=. python benchmarks/shared_backbone.py --modes 1000 --out out/shared1000

The modes are synthetic (random thresholds; gains exactly 0 on ``1 - keep`` of the units, as
the sparse recipe's prox-L1 leaves them), so the sizes and times are those of real modes with
that many kept units; the accuracies mean nothing. ``test_bench_shared_backbone.py`` calls the
same functions on a few modes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np


def backbone_mlp(widths=(1024, 1024), n_in: int = 784, n_out: int = 10, seed: int = 0):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    dims, layers = (n_in, *widths, n_out), []
    for i, (a, b) in enumerate(zip(dims, dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths):
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).eval()


def synthetic_spec(widths, seed: int, keep: float):
    from taugate.spec import GatedSpec, GatedUnits

    rng = np.random.default_rng(seed)
    units = []
    for i, n in enumerate(widths):
        t = (rng.random(n) * 0.05).astype(np.float32)
        t[rng.random(n) < 0.5] = 0
        g = (0.5 + rng.random(n)).astype(np.float32)
        g[rng.random(n) >= keep] = 0
        units.append(GatedUnits(str(2 * i), str(2 * i + 2), "relu", t, g))
    return GatedSpec(tuple(units))


def build(out: str | Path, n_modes: int, widths=(1024, 1024), keep: float = 0.27,
          shared: bool = True, n_cal: int = 64, progress: bool = False,
          precisions=("fp32",)):
    """A bundle of ``n_modes`` synthetic modes; returns (path, seconds)."""
    import torch

    from taugate.bundle.schema import InputSpec, OutputSpec
    from taugate.exporting.pipeline import ExportConfig, ModeInput, export_modes
    from taugate.exporting.prune import PruneConfig

    model = backbone_mlp(widths)
    x = torch.rand(n_cal, 784)
    y = torch.zeros(n_cal, dtype=torch.int64)
    modes = {f"m{i:04d}": ModeInput(synthetic_spec(widths, i, keep), (x, y), (x, y),
                                    facts={"synthetic": i}) for i in range(n_modes)}
    spec_in = {"name": "input", "dtype": "float32", "shape": ["batch", 784], "range": [0.0, 1.0],
               "layout": {"kind": "image", "channels": 1, "height": 28, "width": 28}}
    start = time.perf_counter()
    spec_out = {"name": "logits", "dtype": "float32", "shape": ["batch", 10],
                "labels": [str(i) for i in range(10)]}
    config = ExportConfig(layout="shared" if shared else "standalone", allow_worse=True,
                          prune=PruneConfig(max_accuracy_drop=1.0), overwrite=True,
                          precision={"precisions": tuple(precisions)})
    path, _ = export_modes(out, model, modes, family="mlp", input_spec=InputSpec.from_dict(spec_in),
                           output_spec=OutputSpec.from_dict(spec_out), config=config)
    return path, time.perf_counter() - start


def sizes(bundle: Path) -> dict:
    """Bytes on disk: the whole bundle, and the dense model alone (self-contained graph = its
    weights + graph; here the backbone plus the weightless dense graph)."""
    files = [p for p in Path(bundle).rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    dense = (Path(bundle) / "dense.onnx").stat().st_size
    backbone = Path(bundle) / "backbone.safetensors"
    dense_alone = dense + (backbone.stat().st_size if backbone.exists() else 0)
    modes = len([p for p in (Path(bundle) / "modes").glob("*.onnx")])
    return {"bundle_bytes": total, "dense_model_bytes": dense_alone, "modes": modes,
            "ratio_to_dense": total / dense_alone,
            "per_mode_bytes": (total - dense_alone) / max(modes, 1)}


def load_times(bundle: Path, modes: list[str]) -> list[float]:
    """Seconds to load each mode (read + hash + materialize + session), backbone already read."""
    from taugate.runtime import ModeRuntime

    rt = ModeRuntime.open(bundle, providers="cpu", lazy=True, intra_op_num_threads=1)
    rt.run("dense", np.zeros((1, *rt.manifest.input.shape), np.float32))  # reads the backbone
    out = []
    for m in modes:
        start = time.perf_counter()
        rt._load(m)
        out.append(time.perf_counter() - start)
    rt.close()
    return out


def parity(shared_bundle: Path, standalone_bundle: Path, mode: str, batches=(1, 256),
           budget_s: float = 1.0) -> dict:
    """A materialized mode vs the same mode's standalone graph: max abs output difference and
    the interleaved median time ratio (materialized / standalone) per batch, 1 thread."""
    from taugate.runtime import ModeRuntime
    from taugate.timing import Interleaved, calibrate

    a = ModeRuntime.open(shared_bundle, providers="cpu", lazy=True, intra_op_num_threads=1)
    b = ModeRuntime.open(standalone_bundle, providers="cpu", lazy=True, intra_op_num_threads=1)
    rng = np.random.default_rng(0)
    result = {}
    for batch in batches:
        x = rng.random((batch, *a.manifest.input.shape), dtype=np.float32)
        diff = float(np.abs(a.run(mode, x) - b.run(mode, x)).max())
        timer = Interleaved({"materialized": lambda x=x: a.run(mode, x),
                             "standalone": lambda x=x: b.run(mode, x)})
        for _ in range(calibrate(timer, budget_s)):
            timer.round()
        ratios = [m / s for m, s in zip(timer.samples["materialized"],
                                         timer.samples["standalone"])]
        med = timer.summary()
        result[batch] = {"max_abs_diff": diff, "time_ratio": statistics.median(ratios),
                         "materialized_us": med["materialized"]["median_us"],
                         "standalone_us": med["standalone"]["median_us"], "rounds": len(ratios)}
    a.close()
    b.close()
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--modes", type=int, default=1000)
    p.add_argument("--keep", type=float, default=0.27, help="fraction of units with gain != 0")
    p.add_argument("--out", default="out/shared_backbone")
    p.add_argument("--load-samples", type=int, default=200)
    args = p.parse_args(argv)
    out = Path(args.out)
    shared, t_shared = build(out / "shared", args.modes, keep=args.keep)
    few = min(args.modes, 4)
    standalone, _ = build(out / "standalone", few, keep=args.keep, shared=False)
    names = [f"m{i:04d}" for i in range(args.modes)]
    step = max(1, args.modes // args.load_samples)
    loads = load_times(shared, names[::step])
    report = {"modes": args.modes, "keep": args.keep, "export_seconds": t_shared,
              **sizes(shared),
              "load_ms_median": 1e3 * statistics.median(loads),
              "load_ms_p90": 1e3 * float(np.percentile(loads, 90)), "load_samples": len(loads),
              "parity": {m: parity(shared, standalone, m) for m in names[:2]},
              "loadavg": os.getloadavg()}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
