"""Where one batch-1 inference request's server time goes (issue 19.4), each step timed alone in
one process (medians of interleaved repeats, one onnxruntime thread): parsing and validating the
body (binary tensors and JSON), the model run at batch 1 and per row of a mixed 32-row batch, the
handoff to a batch worker and back to the event loop, encoding the answer; and the HTTP stack
(uvicorn, Starlette/FastAPI, the limits middlewares, the access log) from what a ``taugate
serve`` subprocess answers on its cheapest route (``GET /v2/health/ready``, event loop only, 32
load-generator connections). Writes docs/measured/batching-request-profile.json.

    PYTHONPATH=. python scripts/profile_batching_request.py [--workload small] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from batching_workloads import WORKLOADS, body, make_bundle  # noqa: E402
from loadgen import LoadSpec, get, run_load  # noqa: E402
from test_bench_batching import CLIENTS, start_server  # noqa: E402

from taugate.runtime import ModeRuntime  # noqa: E402
from taugate.server.batcher import Batcher, BatchPolicy  # noqa: E402
from taugate.server.messages import HttpRequest  # noqa: E402
from taugate.server.protocol import ProtocolHandler  # noqa: E402


def _us(fn, repeat: int = 300) -> float:
    """Median microseconds of ``fn()``."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1e3


def _handoff_us(repeat: int = 300) -> float:
    """Median microseconds from ``Batcher.run_async`` to its result with a run that does nothing
    and the smallest delay: the enqueue, a worker's wake-up, and the event loop's."""
    batcher = Batcher(lambda modes, x: x, BatchPolicy(delay_ms=0.001, workers=1))
    x = np.zeros((1, 4), np.float32)

    async def go():
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter_ns()
            await batcher.run_async("m", x)
            times.append(time.perf_counter_ns() - t0)
        return statistics.median(times) / 1e3

    try:
        return asyncio.run(go())
    finally:
        batcher.close()


def steps(bundle: Path) -> dict:
    rt = ModeRuntime.open(bundle, providers="cpu", intra_op_num_threads=1)
    handler = ProtocolHandler(rt)
    mode = next(m for m in rt.modes if m != "dense")
    names = [m for m in rt.modes if m != "dense"][:8]
    x = np.random.default_rng(0).random((1, rt.manifest.input.features), np.float32)
    batch = np.random.default_rng(1).random((CLIENTS, x.shape[1]), np.float32)
    rows = [names[i % len(names)] for i in range(CLIENTS)]
    reqs = {}
    for kind in ("binary", "json"):
        data, headers = body(rt.manifest.input.name, x, kind)
        reqs[kind] = HttpRequest("POST", f"/v2/models/{mode}/infer",
                                 {k.lower(): v for k, v in headers.items()}, data)
    routed = handler.route(reqs["binary"])
    logits = rt.run(mode, x)
    return {
        "parse_validate_binary_us": _us(lambda: handler.route(reqs["binary"])),
        "parse_validate_json_us": _us(lambda: handler.route(reqs["json"])),
        "json_body_bytes": len(reqs["json"].body),
        "validate_only_us": _us(lambda: rt.checker.coerce(x)),
        "run_batch1_us": _us(lambda: rt.run(mode, x)),
        "run_mixed_per_row_us": _us(lambda: rt.run_mixed(rows, batch), 50) / CLIENTS,
        "encode_answer_us": _us(lambda: routed.respond(logits)),
        "batch_handoff_us": _handoff_us(),
    }


def http_stack(bundle: Path, seconds: float = 2.0) -> dict:
    proc, port = start_server(bundle, 0)
    try:
        from test_bench_batching import cpu_s

        before = cpu_s(proc.pid)
        result = run_load(LoadSpec("127.0.0.1", port, [get("/v2/health/ready")], CLIENTS,
                                   seconds))
        cpu = (cpu_s(proc.pid) - before) / result.pop("answered_with_warmup") * 1e3
    finally:
        proc.terminate()
        proc.wait(30)
    return {"health_requests_per_s": result["requests_per_s"],
            "health_server_cpu_us_per_request": cpu * 1e3}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", default="small", choices=WORKLOADS)
    p.add_argument("--out", default=str(ROOT / "docs" / "measured" /
                                        "batching-request-profile.json"))
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = make_bundle(Path(tmp) / "b", args.workload)
        out = {"workload": args.workload,
               "command": f"python scripts/profile_batching_request.py --workload "
                          f"{args.workload}",
               "loadavg_before": list(os.getloadavg()), **steps(bundle), **http_stack(bundle),
               "loadavg_after": list(os.getloadavg())}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
