"""Shared-backbone bundles (issue 12.1): mode load time, and a materialized mode against its
standalone compacted graph (same outputs bit for bit; interleaved speed ratio at batch 1 and
256, 1 thread). Both bundles are written by the real exporter from the same synthetic modes
(``shared_backbone.py``: 784-1024-1024-10, 27% of the units kept; ``--tiny``: 784-64-64-10).

Goals (docs/bundle-format.md, "Shared backbone, measured"): a mode loads in <= 10 ms (median); ``time_ratio``
(materialized / standalone, median over interleaved rounds) ~1.0. The 1,000-mode bundle size is
measured by ``python benchmarks/shared_backbone.py --modes 1000`` (minutes, not a test).
"""

from __future__ import annotations

import statistics

import numpy as np
import pytest
import shared_backbone as sb

N_MODES = 4


@pytest.fixture(scope="module")
def bundles(request, tmp_path_factory):
    widths = (64, 64) if request.config.getoption("--tiny") else (1024, 1024)
    root = tmp_path_factory.mktemp("shared")
    shared, _ = sb.build(root / "shared", N_MODES, widths=widths)
    alone, _ = sb.build(root / "alone", N_MODES, widths=widths, shared=False)
    return shared, alone, widths


def test_mode_load_time(benchmark, bundles):
    from taugate.runtime import ModeRuntime

    shared, _, widths = bundles
    rt = ModeRuntime.open(shared, providers="cpu", lazy=True, intra_op_num_threads=1)
    rt.run("dense", np.zeros((1, 784), np.float32))  # the backbone is read once, up front
    names = iter(range(10**9))

    def load():  # a mode not loaded yet, each call
        name = f"m{next(names) % N_MODES:04d}"
        rt._sessions.pop(name, None)
        rt._load(name)

    benchmark.pedantic(load, rounds=1 if benchmark.disabled else 40, iterations=1,
                       warmup_rounds=0 if benchmark.disabled else 2)
    sizes = sb.sizes(shared)
    benchmark.extra_info.update(widths=list(widths), goal_ms=10.0, **sizes)
    if not benchmark.disabled:
        benchmark.extra_info["load_ms_median"] = 1e3 * statistics.median(benchmark.stats.stats.data)
    rt.close()


@pytest.mark.parametrize("batch", [1, 256], ids=["b1", "b256"])
def test_materialized_vs_standalone(benchmark, bundles, batch):
    shared, alone, _ = bundles
    result = sb.parity(shared, alone, "m0001", batches=(batch,),
                       budget_s=0.05 if benchmark.disabled else 1.0)[batch]
    assert result["max_abs_diff"] == 0.0  # the same initializers, bit for bit
    benchmark.extra_info.update(result)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
