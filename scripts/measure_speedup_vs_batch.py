"""Speedup against batch size for one bundle (issue 19, "close to the floor"): dense fp32, dense
int8, every mode in fp32 and int8, and the per-call floor, all through ``ModeRuntime`` in the
same interleaved rounds (``taugate.bench``), plus what the machine offers: a numpy copy rate
(memory bandwidth) and an int8 compute peak (one large onnxruntime ``MatMulInteger``), and each
callable served alone in blocks of back-to-back calls (``steady_state``).

Writes docs/measured/<name>.json (every cell, the machine, the load before and after, the
fractions of bandwidth at batch 1 and of the int8 peak at the largest batch) and
docs/figures/<name>.png (``taugate bench --plot``'s figure, the floor's ceiling drawn in, from
the interleaved medians; ``--figure best`` draws each callable's fastest single call instead,
for a machine loaded by other jobs, where the median of a 7 MB dense model suffers far more
from the neighbours than the modes and median ratios overstate).

    python scripts/measure_speedup_vs_batch.py BUNDLE --name speedup_vs_batch_w1024

``--baseline OLD``: another export of the same modes (e.g. before a change to the export) whose
modes run in the same interleaved rounds, as ``<mode>/<precision>@baseline``: the JSON's
``baseline`` lists, per cell, both medians and the median over rounds of baseline / this
bundle's time (> 1: this bundle is faster), the only fair before/after on a shared machine.
With a baseline every round runs in a seeded random order (``Interleaved(shuffle=...)``): in
the rotated order each callable always follows the same neighbour, and two copies of one graph
measured 1-3% apart.

Needs taugate[train] (onnx, to read weight sizes and build the peak's graph) and matplotlib.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from taugate.bench import (
    BenchConfig,
    BenchResult,
    cell_result,
    cell_timer,
    floor_session,
    open_runtimes,
)
from taugate.bundle.manifest import load_manifest, variant_entry
from taugate.lab.bench_plot import plot_speedup
from taugate.timing import Interleaved, calibrate, machine_info

ROOT = Path(__file__).resolve().parent.parent


def weight_bytes(path: Path) -> int:
    """Bytes of a graph's initializers: what a batch-1 call reads."""
    model = onnx.load(path)
    return int(sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer))


def copy_rate(nbytes: int, reps: int = 200) -> float:
    """Memory traffic of a numpy copy between two buffers of ``nbytes``, STREAM-style (bytes
    read + bytes written per second, best of rounds): the bandwidth a model reading its weights
    once per call is compared with."""
    src = np.ones(max(nbytes, 4096), np.uint8)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best


def int8_peak(m: int = 256, k: int = 2048, n: int = 2048, reps: int = 20) -> float:
    """Int8 multiply-adds x 2 per second of one large MatMulInteger, one intra-op thread."""
    rng = np.random.default_rng(0)
    b = numpy_helper.from_array(rng.integers(-127, 128, (k, n), dtype=np.int8), "B")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "peak",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [m, k])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [m, n])], [b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    a = {"A": rng.integers(0, 256, (m, k), dtype=np.uint8)}
    sess.run(None, a)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        sess.run(None, a)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * m * k * n / best


QUIET = 0.25  # the quietest quarter of rounds


def quiet_medians(samples: dict) -> dict:
    """Medians (us) over the rounds where the machine was quietest (see the JSON's note)."""
    names = list(samples)
    arr = np.array([samples[n] for n in names])  # [callables, rounds]
    score = (arr / np.median(arr, axis=1, keepdims=True)).sum(0)
    keep = score <= np.quantile(score, QUIET)
    return {n: float(np.median(arr[i, keep]) * 1e6) for i, n in enumerate(names)}


def best_single_calls(calls: dict, rounds: int) -> dict:
    """Each callable's fastest single call (us) over ``rounds`` interleaved rounds: on a shared
    machine, the closest a timing gets to the same call on an idle one."""
    best = dict.fromkeys(calls, float("inf"))
    clock = time.perf_counter
    for _ in range(rounds):
        for name, call in calls.items():
            t0 = clock()
            call()
            best[name] = min(best[name], clock() - t0)
    return {k: v * 1e6 for k, v in best.items()}


def steady_state(calls: dict, batch: int, rounds: int = 15, seconds: float = 0.01) -> dict:
    """Each callable served alone for a while, as a process running one model would: per round,
    every callable in turn runs a block of calls (a few untimed first, so its weights are as
    warm as back-to-back calls leave them), timed together; medians over ``rounds`` (us per
    call). Beside the interleaved cells, where the calls in between evict each other's weights
    from the caches: the 7.4 MB dense model does not stay cached either way, a mode's smaller
    weights do only here."""
    per = {}
    for name, call in calls.items():  # calls per block: about ``seconds`` of work each
        t0 = time.perf_counter()
        call()
        per[name] = max(3, min(1000, int(seconds / max(time.perf_counter() - t0, 1e-6))))
    samples = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            for _ in range(3):
                call()
            t0 = time.perf_counter()
            for _ in range(per[name]):
                call()
            samples[name].append((time.perf_counter() - t0) / per[name])
    med = {k: float(np.median(v) * 1e6) for k, v in samples.items()}
    return {"batch": batch, "median_us": med,
            "speedup": {k: med["dense/fp32"] / v for k, v in med.items() if k != "floor"}}


BASELINE = "@baseline"


def baseline_rows(timer, mode: str, batch: int) -> list:
    """Per precision timed against the baseline bundle: both medians (us) and the median over
    rounds of baseline time / this bundle's time."""
    rows = []
    for key, samples in timer.samples.items():
        if not key.endswith(BASELINE):
            continue
        mine = key[: -len(BASELINE)]
        a, b = np.asarray(samples), np.asarray(timer.samples[mine])
        rows.append({"mode": mode, "batch": batch, "model": mine,
                     "median_us": float(np.median(b) * 1e6),
                     "baseline_median_us": float(np.median(a) * 1e6),
                     "baseline_over_this": float(np.median(a / b))})
    return rows


def measure(bundle: Path, config: BenchConfig, baseline: Path | None = None
            ) -> tuple[BenchResult, list, list, list]:
    """``taugate bench``'s cells at one intra-op thread, plus each cell's quiet-round medians
    (and, with ``baseline``, that bundle's modes in the same rounds)."""
    rts, notes = open_runtimes(bundle, 1, config.precisions)
    old = open_runtimes(baseline, 1, config.precisions)[0] if baseline is not None else {}
    manifest = rts["fp32"].manifest
    floor = floor_session(manifest.input.features, manifest.output.classes, 1)
    result = BenchResult(str(bundle), config, notes=notes, machine=machine_info(1))
    result.machine["loadavg_at_start"] = [round(v, 2) for v in os.getloadavg()]
    rng = np.random.default_rng(config.seed)
    quiet, steady, compared = [], [], []
    for batch in config.batches:
        x = rng.random((batch, *manifest.input.shape), dtype=np.float32)
        for mode in rts["fp32"].modes:
            timer = cell_timer(rts, mode, x, floor)
            extra = {f"{mode}/{p}{BASELINE}": (lambda rt=rt, mode=mode, x=x: rt.run(mode, x))
                     for p, rt in old.items() if mode in rt.modes}
            if extra:
                # a random order per round: in the rotated one each callable always follows
                # the same neighbour, which biases a before/after pair by a few percent
                timer = Interleaved({**timer.calls, **extra}, shuffle=config.seed)
            for _ in range(calibrate(timer, config.budget_s, min_rounds=config.min_rounds)):
                timer.round()
            cell = cell_result(timer, rts, mode, batch, 1)
            result.cells.append(cell)
            compared.extend(baseline_rows(timer, mode, batch))
            for row in compared[len(compared) - len(extra):]:
                print(f"{mode} b{batch}: {row['model']} {row['median_us']:.1f} us, baseline "
                      f"{row['baseline_median_us']:.1f} us, baseline / this over rounds "
                      f"{row['baseline_over_this']:.3f}", flush=True)
            q = quiet_medians(timer.samples)
            dense = q["dense/fp32"]
            best = best_single_calls(timer.calls, 2000 if batch <= 16 else 200)
            quiet.append({"mode": mode, "batch": batch, "median_us": q,
                          "speedup": {k: dense / v for k, v in q.items() if k != "floor"},
                          "ceiling": dense / q["floor"], "mac_ratio": cell.mac_ratio,
                          "best_single_call_us": best,
                          "best_speedup": {k: best["dense/fp32"] / v for k, v in best.items()
                                           if k != "floor"}})
            print(f"{mode} b{batch}: " + ", ".join(f"{k} {v:.2f}x" for k, v in cell.speedup.items())
                  + " (quiet rounds: " + ", ".join(
                      f"{k} {v:.2f}x" for k, v in quiet[-1]["speedup"].items()) + ")"
                  + " (best single calls: " + ", ".join(
                      f"{k} {v:.2f}x" for k, v in quiet[-1]["best_speedup"].items()) + ")",
                  flush=True)
            steady.append({"mode": mode, **steady_state(timer.calls, batch)})
            print(f"{mode} b{batch} steady state: " + ", ".join(
                f"{k} {v:.2f}x" for k, v in steady[-1]["speedup"].items()), flush=True)
    result.providers = {p: rt.providers for p, rt in rts.items()}
    for rt in (*rts.values(), *old.values()):
        rt.close()
    return result, quiet, steady, compared


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundle")
    p.add_argument("--name", default="speedup_vs_batch")
    p.add_argument("--batch", default="1,4,16,64,256")
    p.add_argument("--budget", type=float, default=1.5, help="timed seconds per cell")
    p.add_argument("--baseline", default=None, metavar="BUNDLE",
                   help="another export of the same modes, timed in the same rounds (JSON "
                        "'baseline': its medians and baseline / this over rounds)")
    p.add_argument("--figure", choices=("median", "best"), default="median",
                   help="the figure's times: interleaved medians, or each callable's fastest "
                        "single call (on a machine loaded by other jobs)")
    args = p.parse_args()
    bundle = Path(args.bundle)
    root, manifest = load_manifest(bundle)
    load_before = os.getloadavg()
    config = BenchConfig(batches=tuple(int(b) for b in args.batch.split(",")), threads=(1,),
                         budget_s=args.budget, min_rounds=31)
    baseline = Path(args.baseline) if args.baseline else None
    result, quiet, steady, compared = measure(bundle, config, baseline)
    rates, peak = {}, int8_peak()
    models = {"dense/fp32": manifest.dense, "dense/int8": variant_entry(manifest.dense, "int8")}
    for m, e in manifest.modes.items():
        models[f"{m}/fp32"], models[f"{m}/int8"] = e, variant_entry(e, "int8")
    sizes = {k: weight_bytes(root / e.file) for k, e in models.items() if e is not None}
    for k, size in sizes.items():
        rates[k] = copy_rate(size)
    small, large = min(config.batches), max(config.batches)
    fractions = {}
    for c in result.cells:
        for k, med in c.median_us.items():
            if k not in sizes:
                continue
            if c.batch == small:
                fractions.setdefault(k, {})["bandwidth_batch1"] = \
                    sizes[k] / (med * 1e-6) / rates[k]
            if c.batch == large and k.endswith("/int8"):
                name = k.split("/")[0]
                macs = (manifest.dense if name == "dense" else manifest.modes[name]).macs
                fractions.setdefault(k, {})[f"int8_peak_batch{large}"] = \
                    2.0 * macs * large / (med * 1e-6) / peak
    result.bundle = bundle.name
    doc = result.to_json()
    doc.update(
        quiet_rounds=quiet, quiet_rounds_note=(
            "per cell, the quarter of rounds with the smallest summed time (each callable's "
            "time over its median): what the cell measures when the neighbours are quietest; "
            "speedup = dense fp32 / model over those rounds' medians; best_single_call_us: "
            "each callable's fastest single call over many interleaved rounds"),
        steady_state=steady, steady_state_note=(
            "each callable timed in blocks of back-to-back calls (warm), in turn, 15 rounds: "
            "what a process serving that one model sees; speedup = dense fp32 / model"),
        load_average_before=[round(v, 2) for v in load_before],
        **({"baseline": compared, "baseline_bundle": baseline.name} if baseline else {}),
        load_average_after=[round(v, 2) for v in os.getloadavg()],
        weight_bytes=sizes, copy_rate_bytes_per_s={k: round(v) for k, v in rates.items()},
        int8_peak_ops_per_s=round(peak), fractions=fractions,
        accuracy_from_manifest={k: e.facts.get("test_accuracy") for k, e in models.items()
                                if e is not None})
    out_json = ROOT / "docs" / "measured" / f"{args.name}.json"
    out_json.write_text(json.dumps(doc, indent=1) + "\n")
    figure = copy.deepcopy(result)
    figure.bundle = bundle.name  # no local paths in a published figure
    how = "dense fp32 / model, interleaved medians"
    if args.figure == "best":  # the least disturbed by a loaded machine's neighbours
        how = "dense fp32 / model, each its fastest single call over interleaved rounds"
        best = {(q["mode"], q["batch"]): q["best_single_call_us"] for q in quiet}
        for c in figure.cells:
            b = best[(c.mode, c.batch)]
            c.median_us = {k: v for k, v in b.items() if k != "floor"}
            c.speedup = {p: b["dense/fp32"] / b[f"{c.mode}/{p}"] for p in c.speedup}
            c.dense_int8_speedup = (b["dense/fp32"] / b["dense/int8"] if "dense/int8" in b
                                    else None)
            c.floor_us, c.ceiling = b["floor"], b["dense/fp32"] / b["floor"]
    plot_speedup(figure, ROOT / "docs" / "figures" / f"{args.name}.png", how)
    print(json.dumps({"headline": doc["headline"], "fractions": fractions,
                      "load": [doc["load_average_before"], doc["load_average_after"]]},
                     indent=1))
    print(f"wrote {out_json.relative_to(ROOT)} and docs/figures/{args.name}.png")


if __name__ == "__main__":
    main()
