"""HTTP benchmark: a bounded load run against a real uvicorn server on loopback, reporting
requests/s and p50/p99 latency in ``benchmark.extra_info``."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from test_bench_serving import load_run as serving_load_run

from taugate.runtime import ModeRuntime
from taugate.server import BackgroundServer


def load_run(url: str, path: str, body: bytes, clients: int, requests: int) -> dict:
    """``clients`` threads each send ``requests`` POSTs of the pre-encoded JSON ``body`` (so the
    client's own JSON encoding is not measured): requests/s, p50/p99 latency."""
    run = serving_load_run(url, path, body, {"content-type": "application/json"}, clients,
                           requests)
    latencies = sorted(run["latencies"])
    return {"requests": len(latencies), "requests_per_s": run["requests_per_s"],
            "p50_ms": statistics.median(latencies) * 1e3,
            "p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1e3}


@pytest.mark.parametrize("batch", [1, 32])
def test_http_load(benchmark, bench_bundle, batch):
    rt = ModeRuntime.open(bench_bundle, providers="cpu")
    x = np.random.default_rng(0).random((batch, 784)).round(4)  # ~7 characters per pixel
    body, path = json.dumps({"inputs": x.tolist()}).encode(), f"/modes/{rt.modes[-1]}/predict"
    clients, requests = (2, 3) if benchmark.disabled else (8, 25)
    with BackgroundServer(rt) as server:
        load_run(server.url, path, body, 2, 3)  # warm up connections and sessions
        stats = benchmark.pedantic(load_run, args=(server.url, path, body, clients, requests),
                                   rounds=1, iterations=1)
    stats = stats or {}
    benchmark.extra_info.update(batch=batch, body_bytes=len(body), clients=clients,
                                requests_per_client=requests,
                                **{k: v for k, v in stats.items()})
