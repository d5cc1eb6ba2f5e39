"""Dynamic batching under load: 32 concurrent clients send batch-1 requests (binary tensors,
``POST /v2/models/{mode}/infer``) spread over 8 modes of a small random bundle to ``taugate
serve`` (a subprocess, 1 intra-op thread), with batching off and at each ``--batch-delay-ms``
of :data:`DELAYS`, side by side in one run. Reported: requests/s, p50/p99 latency, and the time
of one full mixed-mode batch run (in this process) so that p99 can be read against "the delay
bound plus two runs". Bounded: a few seconds of load per case.

    PYTHONPATH=. python benchmarks/test_bench_batching.py    # prints the table as JSON
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

try:
    import httpx
except ImportError:  # pragma: no cover
    httpx = None

from taugate.exporting.synthetic import build_random_bundle
from taugate.runtime import ModeRuntime

ROOT = Path(__file__).resolve().parents[1]
HEADER = "Inference-Header-Content-Length"
MODES = tuple(f"m{i}" for i in range(8))
CLIENTS = 32
DELAYS = (0, 1, 2, 5)


def _body(name: str, x: np.ndarray) -> tuple[bytes, dict]:
    head = json.dumps({"inputs": [{"name": name, "datatype": "FP32", "shape": list(x.shape),
                                   "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    return head + x.astype("<f4").tobytes(), {HEADER: str(len(head))}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(bundle: Path, delay_ms: float) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "taugate.cli", "serve", str(bundle), "--port", str(port),
         "--providers", "cpu", "--threads", "1", "--batch-delay-ms", str(delay_ms),
         "--max-in-flight", str(CLIENTS * 2)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("taugate serve exited")
        try:
            if httpx.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError(f"taugate serve not ready on {url}")


def load(url: str, bodies: list, requests: int) -> dict:
    """Each of CLIENTS threads sends ``requests`` requests, client i to mode i % 8."""

    def worker(i):
        mode = MODES[i % len(MODES)]
        body, headers = bodies[i % len(bodies)]
        lat = []
        with httpx.Client(base_url=url, timeout=60) as client:
            for _ in range(requests):
                t0 = time.perf_counter()
                r = client.post(f"/v2/models/{mode}/infer", content=body, headers=headers)
                lat.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text[:300]
        return lat

    t0 = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        lat = sorted(x for chunk in pool.map(worker, range(CLIENTS)) for x in chunk)
    wall = time.perf_counter() - t0
    return {"requests_per_s": len(lat) / wall, "p50_ms": statistics.median(lat) * 1e3,
            "p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1e3, "requests": len(lat)}


def batch_run_ms(bundle: Path) -> float:
    """Median time of one run_mixed over CLIENTS rows spread over the 8 modes (1 thread)."""
    rt = ModeRuntime.open(bundle, providers="cpu", intra_op_num_threads=1)
    x = np.random.default_rng(0).random((CLIENTS, rt.manifest.input.features), np.float32)
    modes = [MODES[i % len(MODES)] for i in range(CLIENTS)]
    rt.run_mixed(modes, x)
    times = []
    for _ in range(50):
        t0 = time.perf_counter()
        rt.run_mixed(modes, x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def measure(bundle: Path, delays=DELAYS, requests: int = 40) -> dict:
    rt = ModeRuntime.open(bundle, providers="cpu", lazy=True)
    rng = np.random.default_rng(1)
    bodies = [_body(rt.manifest.input.name, rng.random((1, rt.manifest.input.features),
                                                        np.float32)) for _ in range(8)]
    out = {"clients": CLIENTS, "modes": len(MODES), "requests_per_client": requests,
           "batch_run_ms": batch_run_ms(bundle), "cpus": os.cpu_count(),
           "loadavg_before": list(os.getloadavg()), "cases": {}}
    for delay in delays:
        proc, url = start_server(bundle, delay)
        try:
            load(url, bodies, 3)  # warm up connections and sessions
            out["cases"][f"delay_{delay}ms"] = load(url, bodies, requests)
            if delay:
                page = httpx.get(url + "/metrics").text
                get = {ln.split()[0]: float(ln.split()[1]) for ln in page.splitlines()
                       if ln.startswith("taugate_batch")}
                batches = get.get("taugate_batches_total", 0) or 1
                out["cases"][f"delay_{delay}ms"]["mean_batch_requests"] = \
                    get.get("taugate_batch_requests_total", 0) / batches
        finally:
            proc.terminate()
            proc.wait(30)
    off = out["cases"]["delay_0ms"]["requests_per_s"]
    for case in out["cases"].values():
        case["throughput_over_off"] = case["requests_per_s"] / off
    out["loadavg_after"] = list(os.getloadavg())
    return out


def make_bundle(path: Path) -> Path:
    return build_random_bundle(path, modes=MODES, widths=(256, 128), seed=0)


def test_batching_under_load(benchmark, tmp_path):
    import pytest

    if httpx is None:
        pytest.skip("httpx is not installed")
    bundle = make_bundle(tmp_path / "bundle")
    requests = 2 if benchmark.disabled else 40
    result = benchmark.pedantic(measure, args=(bundle, DELAYS, requests), rounds=1,
                                iterations=1)
    if result:
        benchmark.extra_info.update(result)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        delays = [int(d) if float(d).is_integer() else float(d) for d in sys.argv[1:]] or DELAYS
        print(json.dumps(measure(make_bundle(Path(tmp) / "b"), delays), indent=1))
