"""The workloads of the batching benchmark (test_bench_batching.py): 8-mode bundles whose
batch-1 run ranges from ~0.06 ms to several ms, the time of their runs, and the request bytes
the load generator sends (binary tensors or JSON, one mode per client).

``small``: random 784-256-128-10 modes. ``w1024``: the paper-like width-1024 backbone, 27% of
units kept, shared layout. ``w2048``: random full 2048-2048 modes. Two sweeps of run cost:
``fullW`` (W in :data:`FULL_WIDTHS`): random full W-W modes, each mode its own weights, so a
mixed batch shares a weight read only between the rows of one mode; ``sharedW`` (W in
:data:`SHARED_WIDTHS`): modes of one W-W backbone, 27% of units kept, shared layout, so a mixed
batch runs as one graph over the union of the modes' units.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from taugate.exporting.synthetic import build_random_bundle
from taugate.runtime import ModeRuntime

MODES = tuple(f"m{i}" for i in range(8))
FULL_WIDTHS = (1024, 1536, 3072, 4096)
SHARED_WIDTHS = (2048, 4096, 6144)
WORKLOADS = ("small", "w1024", "w2048", *(f"full{w}" for w in FULL_WIDTHS),
             *(f"shared{w}" for w in SHARED_WIDTHS))
BODIES = ("binary", "json")
HEADER = "Inference-Header-Content-Length"


def make_bundle(path: Path, workload: str = "small") -> Path:
    """The bundle of ``workload`` (:data:`WORKLOADS`), 8 modes."""
    if workload == "small":
        return build_random_bundle(path, modes=MODES, widths=(256, 128), seed=0)
    if workload == "w2048":
        return build_random_bundle(path, modes=MODES, widths=(2048, 2048), seed=0)
    if workload.startswith("full") and workload[4:].isdigit() \
            and int(workload[4:]) in FULL_WIDTHS:
        width = int(workload[4:])
        return build_random_bundle(path, modes=MODES, widths=(width, width), seed=0)
    shared = {"w1024": 1024, **{f"shared{w}": w for w in SHARED_WIDTHS}}.get(workload)
    if shared:
        sys.path.insert(0, str(Path(__file__).parent))
        from shared_backbone import build

        return Path(build(path, len(MODES), widths=(shared, shared), keep=0.27)[0])
    raise ValueError(f"workload: expected one of {', '.join(WORKLOADS)}, got {workload!r}")


def body(name: str, x: np.ndarray, kind: str = "binary") -> tuple[bytes, dict]:
    """An Open Inference Protocol request body for ``x``: ``binary`` (a JSON header, then the
    raw little-endian tensor, as tritonclient sends it) or ``json`` (values as JSON numbers)."""
    if kind == "json":
        return json.dumps({"inputs": [{"name": name, "datatype": "FP32", "shape": list(x.shape),
                                       "data": x.ravel().tolist()}]}).encode(), \
            {"Content-Type": "application/json"}
    if kind != "binary":
        raise ValueError(f"body: expected one of {BODIES}, got {kind!r}")
    head = json.dumps({"inputs": [{"name": name, "datatype": "FP32", "shape": list(x.shape),
                                   "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    return head + x.astype("<f4").tobytes(), {HEADER: str(len(head)),
                                              "Content-Type": "application/octet-stream"}


def run_ms(bundle: Path, names=MODES, rows: int = 32) -> dict:
    """Median ms of one batch-1 run and of one run_mixed over ``rows`` rows spread over the
    modes (1 thread), interleaved."""
    rt = ModeRuntime.open(bundle, providers="cpu", intra_op_num_threads=1, lazy=True)
    x = np.random.default_rng(0).random((rows, rt.manifest.input.features), np.float32)
    modes = [names[i % len(names)] for i in range(rows)]
    rt.run_mixed(modes, x)
    one, mixed = [], []
    for i in range(30):
        t0 = time.perf_counter()
        rt.run(names[i % len(names)], x[:1])
        t1 = time.perf_counter()
        rt.run_mixed(modes, x)
        one.append(t1 - t0)
        mixed.append(time.perf_counter() - t1)
    return {"run_batch1_ms": statistics.median(one) * 1e3,
            "run_mixed_batch_ms": statistics.median(mixed) * 1e3}
