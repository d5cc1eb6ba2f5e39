"""Serving benchmark: requests/s and p50/p99 latency of the Open Inference Protocol endpoint
(``POST /v2/models/{mode}/infer``) on loopback, JSON tensors vs binary tensors, at batch 1 and 64,
for three engines:

* ``single``: ``taugate serve`` (FastAPI + uvicorn, one process, 1 intra-op thread), run as a
  subprocess so that the load generator does not share its interpreter;
* ``ray-1`` / ``ray-2``: ``taugate.server.ray_app`` on a private local Ray (2 CPUs), 1 or 2 model
  replicas at 0.5 CPU and 1 intra-op thread each.

JSON and binary runs alternate round by round on the same server (the ratio is side by side);
the client threads send pre-encoded bodies, so client-side encoding is not measured. Results go
to ``benchmark.extra_info``: per body kind the median requests/s over rounds, p50/p99 over all
requests, and ``binary_over_json``. Bounded: a few seconds of load per case.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from taugate.runtime import ModeRuntime

HEADER = "Inference-Header-Content-Length"
CASES = [(engine, batch) for engine in ("single", "ray-1", "ray-2") for batch in (1, 64)]
CLIENTS = 4
ROOT = Path(__file__).resolve().parents[1]


def bodies(input_name: str, x: np.ndarray) -> dict:
    """The same request as JSON tensors and as binary tensors: (body, headers)."""
    shape = list(x.shape)
    as_json = json.dumps({"inputs": [{"name": input_name, "datatype": "FP32", "shape": shape,
                                      "data": x.ravel().tolist()}]}).encode()
    head = json.dumps({"inputs": [{"name": input_name, "datatype": "FP32", "shape": shape,
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "parameters": {"binary_data_output": True}}).encode()
    return {"json": (as_json, {"content-type": "application/json"}),
            "binary": (head + x.astype("<f4").tobytes(), {HEADER: str(len(head))})}


def load_run(url: str, path: str, body: bytes, headers: dict, clients: int,
             requests: int) -> dict:
    """``clients`` threads each POST ``body`` ``requests`` times; latencies in seconds."""

    def worker(_):
        latencies = []
        with httpx.Client(base_url=url, timeout=60) as client:
            for _ in range(requests):
                t0 = time.perf_counter()
                r = client.post(path, content=body, headers=headers)
                latencies.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text[:500]
        return latencies

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [lat for chunk in pool.map(worker, range(clients)) for lat in chunk]
    return {"latencies": latencies, "requests_per_s": len(latencies) / (time.perf_counter() - t0)}


def side_by_side(url: str, path: str, kinds: dict, rounds: int, requests: int) -> dict:
    """Alternate the body kinds round by round; summarize each kind."""
    runs: dict = {k: [] for k in kinds}
    for i in range(rounds):
        order = list(kinds) if i % 2 == 0 else list(reversed(kinds))
        for kind in order:
            runs[kind].append(load_run(url, path, *kinds[kind], CLIENTS, requests))
    out = {}
    for kind, results in runs.items():
        lat = sorted(x for r in results for x in r["latencies"])
        out[kind] = {"requests_per_s": statistics.median(r["requests_per_s"] for r in results),
                     "p50_ms": statistics.median(lat) * 1e3,
                     "p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1e3,
                     "requests": len(lat)}
    out["binary_over_json"] = out["binary"]["requests_per_s"] / out["json"]["requests_per_s"]
    return out


class Engines:
    """Starts each engine on first use; one single-process server, one private Ray."""

    def __init__(self, bundle: Path):
        self.bundle = bundle
        self.single = None
        self.ray = None

    def url(self, engine: str) -> str:
        if engine == "single":
            return self._single()
        return self._ray(int(engine.split("-")[1]))

    def _single(self) -> str:
        if self.single is None:
            port = _free_port()
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(
                [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
            proc = subprocess.Popen(
                [sys.executable, "-m", "taugate.cli", "serve", str(self.bundle), "--port",
                 str(port), "--providers", "cpu", "--threads", "1"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            self.single = (proc, f"http://127.0.0.1:{port}")
            _wait_ready(self.single[1], proc)
        return self.single[1]

    def _ray(self, replicas: int) -> str:
        pytest.importorskip("ray.serve", reason="Ray Serve is not installed")
        from taugate.server.ray_app import RayServeConfig
        from taugate.server.ray_local import LocalRayServe

        config = RayServeConfig(self.bundle, replicas=replicas, replica_cpus=0.5)
        if self.ray is None:
            self.ray = LocalRayServe(config, num_cpus=2)
            try:
                self.ray.start(timeout=240)
            except Exception as exc:  # reported as the skip reason
                self.ray.stop()
                self.ray = None
                pytest.skip(f"Ray Serve did not start: {exc!r}")
        elif self.ray.config.replicas != replicas:
            self.ray.deploy(config, timeout=240)
        return self.ray.url

    def close(self) -> None:
        if self.single is not None:
            proc = self.single[0]
            proc.terminate()
            proc.wait(30)
        if self.ray is not None:
            self.ray.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"taugate serve exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"taugate serve not ready on {url} within {timeout} s")


@pytest.fixture(scope="module")
def engines(bench_bundle):
    e = Engines(Path(bench_bundle))
    yield e
    e.close()


@pytest.mark.parametrize("engine,batch", CASES, ids=[f"{e}-b{b}" for e, b in CASES])
def test_serving_json_vs_binary(benchmark, engines, bench_bundle, engine, batch):
    rt = ModeRuntime.open(bench_bundle, providers="cpu", lazy=True)
    mode = rt.modes[-1]
    x = np.random.default_rng(0).random((batch, rt.manifest.input.features),
                                        dtype=np.float32)
    kinds = bodies(rt.manifest.input.name, x)
    url, path = engines.url(engine), f"/v2/models/{mode}/infer"
    if benchmark.disabled:
        rounds, requests = 1, 2
    else:
        rounds, requests = 3, (60 if batch == 1 else 15)
    side_by_side(url, path, kinds, 1, 2)  # warm up connections, sessions, replicas
    stats = benchmark.pedantic(side_by_side, args=(url, path, kinds, rounds, requests),
                               rounds=1, iterations=1) or {}
    benchmark.extra_info.update(engine=engine, batch=batch, clients=CLIENTS,
                                requests_per_client_per_round=requests, rounds=rounds,
                                body_bytes={k: len(v[0]) for k, v in kinds.items()},
                                loadavg=list(os.getloadavg()), **stats)
