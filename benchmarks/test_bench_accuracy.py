"""Accuracy of the dense model and of every exported method and mode, through the runtime.

One test per model. Each model classifies the test set of every data mode in the bundle
(its own and the others'); the accuracies land in ``extra_info`` beside what the exporter
measured (numpy, before and after pruning). The timed part is one pass over the model's own
test set, in batches of 4096, through ``ModeRuntime.predict``.
"""

from __future__ import annotations

import numpy as np

from taugate.runtime import DENSE
from taugate.summaries import hit_rate

BATCH = 4096


def _predict_all(rt, model: str, x: np.ndarray) -> np.ndarray:
    return np.concatenate([rt.predict(model, x[i:i + BATCH]) for i in range(0, len(x), BATCH)])


def test_accuracy(benchmark, bench_session, runtime_for, bench_model):
    rt = runtime_for(1)
    accuracy = {mode: hit_rate(_predict_all(rt, bench_model, x), y)
                for mode, (x, y) in bench_session.test_sets.items()}
    own = bench_session.data_mode(bench_model)
    x_own = bench_session.test_sets[own or next(iter(bench_session.test_sets))][0]
    rounds = 1 if benchmark.disabled else 3
    benchmark.pedantic(_predict_all, args=(rt, bench_model, x_own), rounds=rounds, iterations=1,
                       warmup_rounds=0 if benchmark.disabled else 1)

    entry, dense = bench_session.entry(bench_model), rt.manifest.dense
    facts = entry.facts
    info = {
        "kind": "accuracy", "model": bench_model, "method": facts.get("method", "frozen"),
        "data_mode": own, "accuracy": accuracy, "n_test": len(x_own), "data": bench_session.data,
        "bundle_source": bench_session.source, "macs": entry.macs, "dense_macs": dense.macs,
        "mac_ratio": dense.macs / entry.macs,
        "units_kept": facts.get("units_kept", facts.get("units")),
        "units_total": facts.get("units_total", facts.get("units")),
    }
    if bench_model != DENSE:
        info.update(accuracy_own=accuracy[own],
                    export_test_accuracy=facts.get("test_accuracy"),
                    export_unpruned_test_accuracy=facts.get("unpruned_test_accuracy"))
        if bench_session.source == "trained":
            # Same test set as the exporter's numpy measure: onnxruntime may flip a handful of
            # predictions at exact ties (float32 summation order), never more.
            assert abs(accuracy[own] - facts["test_accuracy"]) <= 2e-3, info
    benchmark.extra_info.update(info)
