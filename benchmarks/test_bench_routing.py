"""Automatic routing (issue 18) beside a single-mode call: ``route`` (the router alone) and
``run_auto`` (route, then each row in its mode) on 256 rows, against ``run`` of one mode on the
same rows. The bundle mirrors the paper's MLP (784-128-128-10, 3 synthetic modes keeping ~35%
of the units; ``--tiny``: widths 64) with a router of the default size (a learned 16-column
projection read by both heads, 64 hidden units) fitted on 3 distinguishable input
distributions. Ratios are medians of interleaved rounds (``taugate.timing``).

Goal (issue 18): route / one mode <= 0.2 at batch 256.
"""

from __future__ import annotations

import numpy as np
import pytest
from _bench_build import side_by_side, synthetic_bundle

N_MODES = 3
BATCH = 256


def _rows(k: int, n: int, seed: int) -> np.ndarray:
    """Mode k: light in its own third of the image."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 0.2, (n, 784)).astype(np.float32)
    x[:, k * 261:(k + 1) * 261] += rng.uniform(0.3, 0.8, (n, 261)).astype(np.float32)
    return x


@pytest.fixture(scope="module")
def runtime(request, tmp_path_factory):
    from taugate.exporting.router import RouterConfig, fit_router
    from taugate.exporting.router_bundle import write_router
    from taugate.runtime import ModeRuntime

    path = synthetic_bundle(request, tmp_path_factory, "routing", N_MODES, (128, 128),
                            keep=0.35)
    with ModeRuntime.open(path, providers="cpu", validate=False) as rt:
        modes = rt.modes
    data = {m: _rows(k, 400, k) for k, m in enumerate(modes)}
    write_router(path, fit_router(data, RouterConfig(steps=200)))
    rt = ModeRuntime.open(path, providers="cpu", intra_op_num_threads=1)
    yield rt
    rt.close()


@pytest.fixture(scope="module")
def batch(runtime):
    x = np.concatenate([_rows(k, BATCH // N_MODES + 1, 100 + k) for k in range(N_MODES)])
    return x[np.random.default_rng(0).permutation(len(x))[:BATCH]]


def test_route_vs_one_mode(benchmark, runtime, batch):
    one = runtime.modes[0]
    result = side_by_side(benchmark, {"one_mode": lambda: runtime.run(one, batch),
                                       "route": lambda: runtime.route(batch)},
                           "one_mode", "route")
    benchmark.extra_info.update(result, goal=0.2)
    benchmark.pedantic(lambda: runtime.route(batch), rounds=1 if benchmark.disabled else 20)


def test_auto_vs_one_mode(benchmark, runtime, batch):
    one = runtime.modes[0]

    def auto():
        return runtime.run_auto(batch, unknown="dense")

    result = side_by_side(benchmark, {"one_mode": lambda: runtime.run(one, batch),
                                       "auto": auto}, "one_mode", "auto")
    benchmark.extra_info.update(result)
    benchmark.pedantic(auto, rounds=1 if benchmark.disabled else 20)
