"""Runtime benchmarks: overhead of ModeRuntime.run over a bare InferenceSession.run on the same
model, and the cost of switching modes with 1, 10 and 100 modes loaded.

Ratios are measured side by side in one process (interleaved blocks, medians), never from lone
absolute times; they land in ``benchmark.extra_info``. Goals: overhead within 15% at batch 1
and under 2% at batch 256; mode switching flat in the number of modes.
"""

from __future__ import annotations

import itertools
import statistics
import time

import numpy as np
import onnxruntime as ort
import pytest

from taugate.runtime import ModeRuntime

CPU = ["CPUExecutionProvider"]


def interleaved(fns: dict, rounds: int = 21, block_s: float = 0.01) -> dict:
    """Median seconds per call of each function, timed in alternating blocks."""
    for fn in fns.values():  # warm up and size the blocks
        fn()
    t0 = time.perf_counter()
    first = next(iter(fns.values()))
    for _ in range(10):
        first()
    per_call = (time.perf_counter() - t0) / 10
    n = max(1, int(block_s / max(per_call, 1e-9)))
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - t0) / n)
    return {name: statistics.median(s) for name, s in samples.items()}, samples


def paired_ratio(samples: dict, num: str, den: str) -> float:
    """Median over rounds of num/den measured in adjacent blocks: robust to load drifting on a
    shared machine, which shifts both sides of a pair alike."""
    return statistics.median(a / b for a, b in zip(samples[num], samples[den]))


@pytest.mark.parametrize("validate", [True, False], ids=["validate", "no-validate"])
@pytest.mark.parametrize("batch", [1, 256])
def test_overhead_vs_bare_session(benchmark, bench_bundle, batch, validate):
    rt = ModeRuntime.open(bench_bundle, providers="cpu", validate=validate)
    mode = rt.modes[-1]
    bare = ort.InferenceSession(str(bench_bundle / rt.manifest.modes[mode].file), providers=CPU)
    x = np.random.default_rng(0).random((batch, rt.manifest.input.features), dtype=np.float32)
    feed, outputs = {rt.manifest.input.name: x}, [rt.manifest.output.name]

    def bare_call():
        return bare.run(outputs, feed)[0]

    def runtime_call():
        return rt.run(mode, x)

    np.testing.assert_allclose(runtime_call(), bare_call(), rtol=1e-6)
    benchmark.extra_info.update(batch=batch, validate=validate, mode=mode)
    if not benchmark.disabled:
        med, samples = interleaved({"bare": bare_call, "runtime": runtime_call})
        benchmark.extra_info.update(
            bare_median_us=med["bare"] * 1e6, runtime_median_us=med["runtime"] * 1e6,
            overhead_ratio=paired_ratio(samples, "runtime", "bare"),
            goal_ratio=1.15 if batch == 1 else 1.02)
    benchmark(runtime_call)


@pytest.fixture(scope="module")
def many_modes_bundle(tmp_path_factory, build_bundle):
    """100 tiny modes (the switch cost should not depend on how many are loaded)."""
    return build_bundle(tmp_path_factory.mktemp("many") / "bundle",
                        modes=[f"rot{i}" for i in range(100)])


@pytest.mark.parametrize("loaded", [1, 10, 100])
def test_mode_switch_cost(benchmark, many_modes_bundle, loaded):
    rt = ModeRuntime.open(many_modes_bundle, providers="cpu", lazy=True, intra_op_num_threads=1)
    names = rt.modes[:loaded]
    rt.warmup(names)
    assert len(rt.loaded_modes) == loaded
    x = np.random.default_rng(0).random((1, 784), dtype=np.float32)
    switching, same = itertools.cycle(names), itertools.cycle(names[:1])
    # Bare sessions cycling over the same models: switching between many models costs cache
    # misses on their weights whoever does it; the runtime's own part is the ratio to this.
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    bare = itertools.cycle([ort.InferenceSession(
        str(many_modes_bundle / rt.manifest.modes[m].file), opts, providers=CPU) for m in names])
    feed, outputs = {rt.manifest.input.name: x}, [rt.manifest.output.name]

    def switch_call():  # a different mode on every call (when loaded > 1)
        return rt.run(next(switching), x)

    def same_call():  # the baseline: always the first mode
        return rt.run(next(same), x)

    def bare_switch_call():
        return next(bare).run(outputs, feed)[0]

    benchmark.extra_info.update(modes_loaded=loaded, bundle_modes=len(rt.modes))
    if not benchmark.disabled:
        med, samples = interleaved({"same": same_call, "switch": switch_call,
                                    "bare_switch": bare_switch_call})
        benchmark.extra_info.update(
            same_mode_median_us=med["same"] * 1e6, switching_median_us=med["switch"] * 1e6,
            bare_switching_median_us=med["bare_switch"] * 1e6,
            switch_vs_same_ratio=paired_ratio(samples, "switch", "same"),
            switch_vs_bare_switch_ratio=paired_ratio(samples, "switch", "bare_switch"))
    benchmark(switch_call)
