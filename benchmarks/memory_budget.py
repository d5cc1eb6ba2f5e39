"""Many resident modes under a byte budget (issue 19.3): a bundle of synthetic width-1024 modes
(``shared_backbone.build``), served under a Zipf workload at batch 1 through one
``ModeRuntime.open(..., memory_budget=B, lazy=True)`` with one onnxruntime thread per session.

    PYTHONPATH=. python benchmarks/memory_budget.py --modes 1000 --budget 64M --out out/mem

Reported: resident memory above onnxruntime's baseline (RSS once a one-operator onnxruntime
session has run in the process, before any bundle is opened; the harness's input and sampler
are made before it) at the end and at its peak, split by kind of mapping, against the dense
model's weights; the runtime's own accounting (``rt.memory()``); a cold mode's first call
(load + run) p50/p99; a hot mode against the same mode's standalone compacted graph, interleaved
at batch 1. Run each budget in its own process: freed memory is not always returned to the OS.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from taugate.runtime import ModeRuntime
from taugate.runtime.budget import parse_size, rss_bytes
from taugate.timing import Interleaved, calibrate


def zipf_modes(n_modes: int, n_requests: int, s: float, seed: int = 0) -> list[int]:
    """Mode indices drawn with P(rank k) proportional to 1 / k**s (rank 1 = mode 0)."""
    p = 1.0 / np.arange(1, n_modes + 1) ** s
    rng = np.random.default_rng(seed)
    return rng.choice(n_modes, n_requests, p=p / p.sum()).tolist()


def ort_baseline() -> int:
    """RSS once onnxruntime has set itself up: after one session of a one-operator graph ran."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), opts,
                                   providers=["CPUExecutionProvider"])
    session.run(None, {"x": np.ones((1, 4), np.float32)})
    return rss_bytes()


def resident_by_kind() -> dict:
    """Resident KiB by kind of mapping (``/proc/self/smaps``): the C heap, anonymous mappings
    (Python's object arenas, large buffers) and file-backed pages (code of the loaded
    libraries), so the growth above the baseline can be told apart. Empty where unreadable."""
    out, kind = {}, None
    try:
        with open("/proc/self/smaps") as f:
            for line in f:
                head = line.split(maxsplit=6)
                if not head[0].endswith(":") or "-" in head[0]:  # a mapping's header line
                    name = head[5].strip() if len(head) > 5 else ""
                    kind = "heap" if name == "[heap]" else "files" if name.startswith("/") \
                        else "anon"
                elif head[0] == "Rss:":
                    out[kind] = out.get(kind, 0) + int(head[1])
    except (OSError, IndexError, ValueError):
        return {}
    return out


def workload(rt, names: list[str], order: list[int], x) -> dict:
    cold, hot, cold_cpu, peak = [], [], [], 0
    for i, k in enumerate(order):
        mode = names[k]
        was_loaded = mode in rt._sessions
        c0, t0 = time.thread_time(), time.perf_counter()
        rt.run(mode, x)
        (hot if was_loaded else cold).append(time.perf_counter() - t0)
        if not was_loaded:  # the CPU time this thread got: the wall time less the waiting
            cold_cpu.append(time.thread_time() - c0)
        if i % 50 == 0:
            peak = max(peak, rss_bytes() or 0)

    def pct(s, q):
        return 1e3 * float(np.percentile(s, q)) if s else None

    return {"requests": len(order), "cold_calls": len(cold), "hot_calls": len(hot),
            "cold_ms_p50": pct(cold, 50), "cold_ms_p99": pct(cold, 99),
            "cold_cpu_ms_p50": pct(cold_cpu, 50), "cold_cpu_ms_p99": pct(cold_cpu, 99),
            "hot_us_p50": hot and 1e3 * pct(hot, 50), "peak_rss": peak}


def hot_vs_standalone(rt, standalone: Path, mode: str, budget_s: float) -> dict:
    """The hot mode in the many-mode runtime against its standalone graph, batch 1."""
    alone = ModeRuntime.open(standalone, providers="cpu", lazy=True, memory_budget="none",
                             intra_op_num_threads=1)
    x = np.random.default_rng(1).random((1, 784), dtype=np.float32)
    assert np.array_equal(rt.run(mode, x), alone.run(mode, x))
    timer = Interleaved({"resident": lambda: rt.run(mode, x),
                         "standalone": lambda: alone.run(mode, x)})
    for _ in range(calibrate(timer, budget_s)):
        timer.round()
    ratios = [a / b for a, b in zip(timer.samples["resident"], timer.samples["standalone"])]
    med = timer.summary()
    return {"time_ratio": statistics.median(ratios), "resident_us": med["resident"]["median_us"],
            "standalone_us": med["standalone"]["median_us"], "rounds": len(ratios)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", required=True, help="bundle of many modes (shared layout)")
    p.add_argument("--standalone", required=True, help="bundle holding m0000 standalone")
    p.add_argument("--budget", default="auto")
    p.add_argument("--requests", type=int, default=5000)
    p.add_argument("--zipf", type=float, default=1.1)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    # the harness's own input and sampler are made (their code paged in) before the baseline
    x = np.random.default_rng(0).random((1, 784), dtype=np.float32)
    zipf_modes(2, 2, args.zipf)
    baseline = ort_baseline()
    kinds_at_baseline = resident_by_kind()
    rt = ModeRuntime.open(args.shared, providers="cpu", lazy=True, intra_op_num_threads=1,
                          memory_budget=args.budget)
    names = rt.modes
    rt.run("dense", x)
    dense_weights = (Path(args.shared) / "backbone.safetensors").stat().st_size
    t0 = time.perf_counter()
    stats = workload(rt, names, zipf_modes(len(names), args.requests, args.zipf), x)
    stats["workload_s"] = time.perf_counter() - t0
    end = rss_bytes()
    kinds = resident_by_kind()
    report = {"modes": len(names), "budget": args.budget,
              "budget_bytes": None if args.budget == "auto" else parse_size(args.budget),
              "zipf_s": args.zipf, **stats, "memory": rt.memory(),
              "loaded": len(rt.loaded_modes), "baseline_rss": baseline,
              "above_baseline_end": end - baseline,
              "above_baseline_peak": max(stats["peak_rss"], end) - baseline,
              "dense_weight_bytes": dense_weights,
              "above_baseline_kib_by_kind": {k: v - kinds_at_baseline.get(k, 0)
                                             for k, v in kinds.items()},
              "hot_vs_standalone": hot_vs_standalone(rt, Path(args.standalone), "m0000", 2.0),
              "loadavg": os.getloadavg()}
    report["end_over_dense_weights"] = report["above_baseline_end"] / dense_weights
    text = json.dumps(report, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
