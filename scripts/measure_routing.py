"""Measure automatic routing (issue 18): accuracy, unknown inputs, and what the router costs.

    python scripts/measure_routing.py accuracy BUNDLE RUN NAME [--unseen invert]
    python scripts/measure_routing.py cost BUNDLE NAME [--data-run RUN]
    python scripts/measure_routing.py wide OUT          # a width-1024 bundle, then its cost
    python scripts/measure_routing.py sizes BUNDLE RUN NAME [--unseen invert]
    python scripts/measure_routing.py parts BUNDLE RUN NAME

``accuracy`` fits BUNDLE's router from RUN's calibration splits (``taugate route``'s defaults),
evaluates it on an even mixture of the modes' test sets (taugate/lab/routing.py: oracle routing,
the dense model, ``auto``, the unknown threshold sweep over ``--unseen`` modes) and writes
docs/measured/routing-NAME.json and, with ``--unseen``, the figure
docs/figures/routing-threshold.png. ``cost`` times ``route`` and ``run_auto`` beside one mode's
run at batch 256 on one onnxruntime thread (taugate/lab/bench_many.py, interleaved medians; the
test rows of RUN when given, as routing random rows flags them all) into
docs/measured/routing-cost-NAME.json; ``wide`` builds a 784-1024-1024-10 bundle of 3 synthetic
modes (benchmarks/shared_backbone.py), fits a router on 3 distinguishable input distributions
and times it the same way. ``sizes`` fits routers of several (components, hidden) sizes into
copies of BUNDLE (a temporary folder), evaluates each like ``accuracy`` and times their ``route``
beside one mode's run, all interleaved in one loop, into docs/measured/routing-sizes-NAME.json.
``parts`` splits BUNDLE's ``route`` at batch 256 into the input check, the router graph alone,
the graph cut after its projection, and single ``Gemm`` nodes reading the input into 1, 4 and 16
columns, interleaved beside one mode's run, into docs/measured/routing-parts-NAME.json.
Every JSON holds the machine's load average.

The numbers in docs/bundle-format.md ("What routing costs") came from (TAUGATE_DATA set, seed 0):

    taugate train --modes rot0,rot45,rot90 --sparse --limit-train 15000 --out runs/rot
    taugate export runs/rot --out runs/rotb
    python scripts/measure_routing.py accuracy runs/rotb runs/rot rot --unseen invert
    python scripts/measure_routing.py accuracy out/tab/bundle-shared runs/tab/run tab
    python scripts/measure_routing.py cost runs/rotb rot --data-run runs/rot
    python scripts/measure_routing.py cost out/tab/bundle-shared tab --data-run runs/tab/run
    python scripts/measure_routing.py wide /tmp/wide
    python scripts/measure_routing.py sizes runs/rotb runs/rot rot --unseen invert
    python scripts/measure_routing.py sizes out/tab/bundle-shared runs/tab/run tab
(runs/tab/run and its bundle: scripts/measure_layouts.py.)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MEASURED = ROOT / "docs" / "measured"
FIGURE = ROOT / "docs" / "figures" / "routing-threshold.png"


def _write(name: str, doc: dict) -> None:
    doc["loadavg_at_end"] = [round(v, 2) for v in os.getloadavg()]
    MEASURED.mkdir(parents=True, exist_ok=True)
    path = MEASURED / f"routing-{name}.json"
    path.write_text(json.dumps(doc, indent=1), "utf-8")
    print(f"wrote {path.relative_to(ROOT)}")


def accuracy(bundle: str, run: str, name: str, unseen: list) -> None:
    from taugate.commands.route import fit_into_bundle
    from taugate.lab.routing import evaluate, plot, table
    from taugate.runtime import ModeRuntime
    from taugate.training.sources import open_source

    start = [round(v, 2) for v in os.getloadavg()]
    loaded, fitted = fit_into_bundle(bundle, run)
    source = open_source(json.loads((loaded.path / "run.json").read_text("utf-8"))["source"],
                         None)
    tests = {m: tuple(t.numpy() for t in loaded.modes[m].test) for m in fitted.modes}
    away = {u: source.mode(u).test.x.numpy() for u in unseen}
    with ModeRuntime.open(bundle, providers="cpu", intra_op_num_threads=1) as rt:
        report = evaluate(rt, tests, away, timing_s=1.0)
    print(table(report))
    if unseen:
        plot(report, FIGURE)
        print(f"wrote {FIGURE.relative_to(ROOT)}")
    _write(name, {"bundle": Path(bundle).name, "router": fitted.facts,
                  "threshold": fitted.threshold, "percentile": fitted.percentile,
                  "report": asdict(report), "loadavg_at_start": start})


def _test_rows(run: str | None):
    if run is None:
        return None
    from taugate.training.loaded import load_run

    loaded = load_run(run, None)
    return np.concatenate([loaded.modes[m].test[0].numpy()[:512] for m in loaded.modes])


def cost(bundle: str, name: str, run: str | None, budget_s: float = 4.0) -> None:
    from taugate.lab.bench_many import run_many, table_rows

    rows = _test_rows(run)
    if rows is not None:
        rows = rows[np.random.default_rng(0).permutation(len(rows))]
    result = run_many(bundle, ["auto"], (256,), (1,), budget_s, "cpu", rows)
    for row in table_rows(result):
        print(row)
    _write(f"cost-{name}", result.to_json())


def wide(out: str) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import shared_backbone as sb

    from taugate.exporting.router import fit_router
    from taugate.exporting.router_bundle import write_router

    path, _ = sb.build(Path(out) / "bundle", 3, widths=(1024, 1024))
    rng = np.random.default_rng(0)

    def rows_of(k: int, n: int) -> np.ndarray:
        x = rng.uniform(0, 0.2, (n, 784)).astype(np.float32)
        x[:, k * 261:(k + 1) * 261] += rng.uniform(0.3, 0.8, (n, 261)).astype(np.float32)
        return x

    modes = list(json.loads((path / "manifest.json").read_text())["modes"])
    write_router(path, fit_router({m: rows_of(k, 600) for k, m in enumerate(modes)}))
    # timed on fresh rows: the fitting rows themselves are not what a router is served
    rows = np.concatenate([rows_of(k, 256) for k in range(len(modes))])
    rows = rows[rng.permutation(len(rows))]
    np.save(Path(out) / "rows.npy", rows)
    from taugate.lab.bench_many import run_many, table_rows

    result = run_many(path, ["auto"], (256,), (1,), 4.0, "cpu", rows)
    for row in table_rows(result):
        print(row)
    _write("cost-w1024", result.to_json())


SIZES = ((16, 64), (16, 32), (16, 16), (12, 32), (8, 32), (8, 16), (16, 0))  # (components, hidden)


def sizes(bundle: str, run: str, name: str, unseen: list, budget_s: float = 8.0) -> None:
    import shutil
    import tempfile

    from taugate.exporting.router import RouterConfig
    from taugate.exporting.router_bundle import fit_for_bundle, write_router
    from taugate.lab.routing import evaluate
    from taugate.runtime import ModeRuntime
    from taugate.timing import Interleaved
    from taugate.training.loaded import load_run
    from taugate.training.sources import open_source

    start = [round(v, 2) for v in os.getloadavg()]
    loaded = load_run(run, None)
    tests = {m: tuple(t.numpy() for t in loaded.modes[m].test) for m in loaded.modes}
    source = open_source(json.loads((loaded.path / "run.json").read_text("utf-8"))["source"],
                         None)
    away = {u: source.mode(u).test.x.numpy() for u in unseen}
    rows, calls = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for c, h in SIZES:
            path = Path(tmp) / f"c{c}h{h}"
            shutil.copytree(bundle, path)
            fitted = fit_for_bundle(path, loaded, RouterConfig(components=c, hidden=h))
            write_router(path, fitted)
            rt = ModeRuntime.open(path, providers="cpu", intra_op_num_threads=1)
            rep = evaluate(rt, {m: tests[m] for m in rt.manifest.modes}, away, timing_s=0.1)
            rows.append({"components": c, "hidden": h, "oracle": rep.oracle, "dense": rep.dense,
                         "auto": rep.auto, "auto_minus_oracle_points":
                         round(100 * (rep.auto - rep.oracle), 2),
                         "routed_right": rep.routed_right, "known_flagged": rep.known_flagged,
                         "unseen_flagged": rep.unseen_flagged,
                         "multiply_adds_per_row": fitted.facts["multiply_adds_per_row"]})
            calls[f"c{c}h{h}"] = rt
            print(rows[-1], flush=True)
        every = _test_rows(run)
        x = every[np.random.default_rng(0).permutation(len(every))][:256]
        x = np.ascontiguousarray(x.reshape(256, *rt.manifest.input.shape), np.float32)
        mode = rt.modes[0]
        timer = Interleaved({"one_mode": lambda: rt.run(mode, x),
                             **{k: (lambda r=r: r.route(x)) for k, r in calls.items()}})
        end = time.perf_counter() + budget_s
        while time.perf_counter() < end:
            timer.round()
        med = timer.summary()
        for row, key in zip(rows, calls):
            row["route_us"] = round(med[key]["median_us"], 1)
            row["one_mode_us"] = round(med["one_mode"]["median_us"], 1)
            row["ratio"] = round(row["route_us"] / row["one_mode_us"], 3)
            print(row)
        for r in calls.values():
            r.close()
    _write(f"sizes-{name}", {"bundle": Path(bundle).name, "batch": 256, "threads": 1,
                             "sizes": rows, "loadavg_at_start": start})


def _session(proto):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


def parts(bundle: str, run: str, name: str, budget_s: float = 8.0) -> None:
    import onnx
    from onnx import helper, numpy_helper

    from taugate.runtime import ModeRuntime
    from taugate.timing import Interleaved

    start = [round(v, 2) for v in os.getloadavg()]
    every = _test_rows(run)
    rt = ModeRuntime.open(bundle, providers="cpu", intra_op_num_threads=1)
    x = every[np.random.default_rng(0).permutation(len(every))][:256]
    x = np.ascontiguousarray(x.reshape(256, *rt.manifest.input.shape), np.float32)
    flat = rt._coerce(x).reshape(256, -1)
    proto = onnx.load(Path(bundle) / rt.manifest.router.file)
    cut = onnx.ModelProto()
    cut.CopyFrom(proto)
    last = "white" if any(n.output[0] == "white" for n in proto.graph.node) else "projected"
    keep = [n for n in cut.graph.node if n.op_type in ("Mul", "Gemm") and n.output[0] in
            ("squares", "projected_x", "white_x", last)]
    del cut.graph.node[:]
    cut.graph.node.extend(keep)
    used = {i for n in keep for i in n.input}
    inits = [t for t in cut.graph.initializer if t.name in used]
    del cut.graph.initializer[:]
    cut.graph.initializer.extend(inits)
    del cut.graph.output[:]
    cut.graph.output.append(helper.make_tensor_value_info(last, onnx.TensorProto.FLOAT, None))
    calls = {"one_mode": lambda: rt.run(rt.modes[0], x), "route": lambda: rt.route(x),
             "input_check": lambda: rt._coerce(x)}
    router, projection = _session(proto), _session(cut)
    calls["router_graph"] = lambda: router.run(None, {"features": flat})
    calls["projection_only"] = lambda: projection.run(None, {"features": flat})
    rng = np.random.default_rng(1)
    for k in (1, 4, 16):
        w = numpy_helper.from_array(rng.normal(0, 1, (flat.shape[1], k)).astype(np.float32), "w")
        g = helper.make_graph([helper.make_node("Gemm", ["features", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("features", 1, ["b", flat.shape[1]])],
                              [helper.make_tensor_value_info("y", 1, None)], [w])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        sess = _session(m)
        calls[f"gemm_{k}_columns"] = (lambda s=sess: s.run(None, {"features": flat}))
    timer = Interleaved(calls)
    end = time.perf_counter() + budget_s
    while time.perf_counter() < end:
        timer.round()
    med = {k: round(v["median_us"], 1) for k, v in timer.summary().items()}
    for k, v in med.items():
        print(f"{k:18s} {v:8.1f} us  {v / med['one_mode']:.3f}x")
    rt.close()
    _write(f"parts-{name}", {"bundle": Path(bundle).name, "batch": 256, "threads": 1,
                             "router": rt.manifest.router.facts, "median_us": med,
                             "loadavg_at_start": start})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for cmd in ("accuracy", "sizes", "parts"):  # BUNDLE RUN NAME
        a = sub.add_parser(cmd)
        a.add_argument("bundle")
        a.add_argument("run")
        a.add_argument("name")
        if cmd != "parts":
            a.add_argument("--unseen", default="")
    c = sub.add_parser("cost")
    c.add_argument("bundle")
    c.add_argument("name")
    c.add_argument("--data-run", default=None)
    w = sub.add_parser("wide")
    w.add_argument("out")
    args = p.parse_args(argv)
    if args.cmd == "accuracy":
        accuracy(args.bundle, args.run, args.name, [u for u in args.unseen.split(",") if u])
    elif args.cmd == "parts":
        parts(args.bundle, args.run, args.name)
    elif args.cmd == "sizes":
        sizes(args.bundle, args.run, args.name, [u for u in args.unseen.split(",") if u])
    elif args.cmd == "cost":
        cost(args.bundle, args.name, args.data_run)
    else:
        wide(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
