"""Several modes in one call (issue 18): a mixed batch of 256 rows spread evenly over 16 modes
beside the same rows in one mode, and every mode on 64 rows (``run_all``) beside 16 separate
calls; a 784-1024-1024-10 shared-layout bundle of 16 synthetic modes (``shared_backbone.py``;
``--tiny``: widths 64). Ratios are medians of interleaved rounds (``taugate.timing``).

Goals (docs/runtime.md, "Several modes in one call"): mixed / one mode <= 1.25,
run_all / separate calls <= 0.5.
"""

from __future__ import annotations

import os
import statistics

import numpy as np
import pytest
import shared_backbone as sb

N_MODES = 16


@pytest.fixture(scope="module")
def runtime(request, tmp_path_factory):
    from taugate.runtime import ModeRuntime

    widths = (64, 64) if request.config.getoption("--tiny") else (1024, 1024)
    path, _ = sb.build(tmp_path_factory.mktemp("mixed") / "b", N_MODES, widths=widths)
    rt = ModeRuntime.open(path, providers="cpu")
    yield rt
    rt.close()


def _side_by_side(benchmark, calls: dict, base: str, other: str) -> dict:
    from taugate.timing import Interleaved, calibrate

    timer = Interleaved(calls)
    for _ in range(calibrate(timer, 0.05 if benchmark.disabled else 3.0)):
        timer.round()
    s = timer.samples
    med = timer.summary()
    return {"ratio": statistics.median(o / b for o, b in zip(s[other], s[base])),
            f"{base}_us": med[base]["median_us"], f"{other}_us": med[other]["median_us"],
            "rounds": len(s[base]), "loadavg": os.getloadavg()}


def test_mixed_batch_vs_one_mode(benchmark, runtime):
    rng = np.random.default_rng(0)
    x = rng.random((256, 784), dtype=np.float32)
    modes = np.array([runtime.modes[i % N_MODES] for i in range(256)])
    rng.shuffle(modes)
    result = _side_by_side(benchmark, {"one_mode": lambda: runtime.run(runtime.modes[0], x),
                                       "mixed": lambda: runtime.run_mixed(modes, x)},
                           "one_mode", "mixed")
    benchmark.extra_info.update(result, goal=1.25)
    benchmark.pedantic(lambda: runtime.run_mixed(modes, x), rounds=1 if benchmark.disabled else 20)


def test_run_all_vs_separate_calls(benchmark, runtime):
    x = np.random.default_rng(1).random((64, 784), dtype=np.float32)
    modes = runtime.modes
    result = _side_by_side(benchmark, {"separate": lambda: [runtime.run(m, x) for m in modes],
                                       "run_all": lambda: runtime.run_all(x)},
                           "separate", "run_all")
    benchmark.extra_info.update(result, goal=0.5)
    benchmark.pedantic(lambda: runtime.run_all(x), rounds=1 if benchmark.disabled else 20)
