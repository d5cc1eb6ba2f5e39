"""Latency of each mode's compacted subnetwork against the dense model, side by side.

One test per (mode, batch, threads). Each pytest-benchmark round calls four things once, in a
rotated order: the dense model and the mode, each through the runtime (``ModeRuntime.run``,
input checks included) and through a bare onnxruntime session with the same options. The
speedups are ratios of medians over those same rounds, so they come from one process and one
stretch of time; ``mac_ratio`` (dense MACs / mode MACs) is the ideal they are compared with.
Runtime overhead and mode-switch cost have their own suite (test_bench_runtime.py).
"""

from __future__ import annotations

import numpy as np

from taugate.runtime import DENSE
from taugate.timing import Interleaved, calibrate

MIN_ROUNDS = 15


def test_latency_vs_dense(benchmark, request, bench_session, runtime_for, bare_session_for,
                          bench_mode, bench_batch, bench_threads):
    rt = runtime_for(bench_threads)
    x = bench_session.inputs(bench_mode, bench_batch)
    in_name, out_names = rt.manifest.input.name, [rt.manifest.output.name]
    feed = {in_name: x}
    bare = {m: bare_session_for(bench_threads, m) for m in (DENSE, bench_mode)}
    timer = Interleaved({
        "dense_runtime": lambda: rt.run(DENSE, x),
        "mode_runtime": lambda: rt.run(bench_mode, x),
        "dense_ort": lambda: bare[DENSE].run(out_names, feed),
        "mode_ort": lambda: bare[bench_mode].run(out_names, feed),
    })
    # the runtime must compute exactly what the bare session computes
    np.testing.assert_array_equal(rt.run(bench_mode, x), bare[bench_mode].run(out_names, feed)[0])

    budget = request.config.getoption("--bench-budget")
    rounds = 1 if benchmark.disabled else calibrate(timer, budget, min_rounds=MIN_ROUNDS)
    benchmark.pedantic(timer.round, rounds=rounds, iterations=1, warmup_rounds=0)

    dense, mode = rt.manifest.dense, rt.manifest.modes[bench_mode]
    s = timer.summary()
    benchmark.extra_info.update(
        kind="latency", mode=bench_mode, method=mode.facts.get("method"),
        data_mode=bench_session.data_mode(bench_mode), batch=bench_batch, threads=bench_threads,
        rounds=len(timer.samples["mode_ort"]), calls_per_measurement=timer.number,
        units_kept=mode.facts.get("units_kept"), units_total=mode.facts.get("units_total"),
        macs=mode.macs, dense_macs=dense.macs, mac_ratio=dense.macs / mode.macs,
        medians_us={k: v["median_us"] for k, v in s.items()},
        q1_us={k: v["q1_us"] for k, v in s.items()},
        q3_us={k: v["q3_us"] for k, v in s.items()},
        speedup_ort=timer.ratio("dense_ort", "mode_ort"),
        speedup_runtime=timer.ratio("dense_runtime", "mode_runtime"),
        runtime_overhead=s["mode_runtime"]["median_us"] / s["mode_ort"]["median_us"],
        bundle_source=bench_session.source,
    )
