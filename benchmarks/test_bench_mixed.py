"""Several modes in one call (issue 18): a mixed batch of 256 rows spread evenly over 16 modes
beside the same rows in one mode, and every mode on 64 rows (``run_all``) beside 16 separate
calls; a 784-1024-1024-10 shared-layout bundle of 16 synthetic modes (``shared_backbone.py``;
``--tiny``: widths 64). Ratios are medians of interleaved rounds (``taugate.timing``).

Goals (docs/runtime.md, "Several modes in one call"): mixed / one mode <= 1.25,
run_all / separate calls <= 0.5.
"""

from __future__ import annotations

import numpy as np
import pytest
from _bench_build import side_by_side, synthetic_bundle

N_MODES = 16


@pytest.fixture(scope="module")
def runtime(request, tmp_path_factory):
    from taugate.runtime import ModeRuntime

    path = synthetic_bundle(request, tmp_path_factory, "mixed", N_MODES, (1024, 1024))
    rt = ModeRuntime.open(path, providers="cpu")
    yield rt
    rt.close()


def test_mixed_batch_vs_one_mode(benchmark, runtime):
    rng = np.random.default_rng(0)
    x = rng.random((256, 784), dtype=np.float32)
    modes = np.array([runtime.modes[i % N_MODES] for i in range(256)])
    rng.shuffle(modes)
    result = side_by_side(benchmark, {"one_mode": lambda: runtime.run(runtime.modes[0], x),
                                      "mixed": lambda: runtime.run_mixed(modes, x)},
                          "one_mode", "mixed")
    benchmark.extra_info.update(result, goal=1.25)
    benchmark.pedantic(lambda: runtime.run_mixed(modes, x), rounds=1 if benchmark.disabled else 20)


def test_run_all_vs_separate_calls(benchmark, runtime):
    x = np.random.default_rng(1).random((64, 784), dtype=np.float32)
    modes = runtime.modes
    result = side_by_side(benchmark, {"separate": lambda: [runtime.run(m, x) for m in modes],
                                      "run_all": lambda: runtime.run_all(x)},
                          "separate", "run_all")
    benchmark.extra_info.update(result, goal=0.5)
    benchmark.pedantic(lambda: runtime.run_all(x), rounds=1 if benchmark.disabled else 20)
