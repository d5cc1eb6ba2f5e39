"""`taugate bench`'s measurement as a pytest-benchmark suite: each mode against the dense
model, fp32 and int8 (where the bundle has int8 variants), through the runtime.

This calls the same code as the command (:func:`taugate.bench.cell_timer` and
:func:`taugate.bench.cell_result`): one pytest-benchmark round is one interleaved round of the
dense model and the mode in every precision; the speedups are ratios of medians over those same
rounds, with the MAC ratio beside them.
"""

from __future__ import annotations

from dataclasses import asdict

import pytest

from taugate.bench import cell_result, cell_timer, open_runtimes
from taugate.timing import calibrate

MIN_ROUNDS = 15


@pytest.fixture(scope="session")
def precision_runtimes(bench_session):
    """``precision_runtimes(threads)``: {precision: ModeRuntime} for every precision present."""
    cache: dict = {}

    def get(threads: int):
        if threads not in cache:
            cache[threads] = open_runtimes(bench_session.path, threads, ("fp32", "int8"))[0]
        return cache[threads]

    yield get
    for rts in cache.values():
        for rt in rts.values():
            rt.close()


def test_bundle_mode_vs_dense(benchmark, request, bench_session, precision_runtimes,
                              bench_mode, bench_batch, bench_threads):
    rts = precision_runtimes(bench_threads)
    x = bench_session.inputs(bench_mode, bench_batch)
    timer = cell_timer(rts, bench_mode, x)
    budget = request.config.getoption("--bench-budget")
    rounds = 1 if benchmark.disabled else calibrate(timer, budget, min_rounds=MIN_ROUNDS)
    benchmark.pedantic(timer.round, rounds=rounds, iterations=1, warmup_rounds=0)
    cell = cell_result(timer, rts, bench_mode, bench_batch, bench_threads)
    assert "fp32" in cell.speedup
    benchmark.extra_info.update(kind="bundle_bench", precisions=sorted(rts),
                                providers={p: rt.providers for p, rt in rts.items()},
                                **asdict(cell))
