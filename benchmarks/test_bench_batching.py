"""Dynamic batching under load: 32 concurrent clients send batch-1 requests (binary tensors,
``POST /v2/models/{mode}/infer``) spread over 8 modes to ``taugate serve`` (a subprocess, 1
intra-op thread), with batching off and at each ``--batch-delay-ms`` of :data:`DELAYS`,
interleaved over ``rounds`` in one run (off, d1, d2, ..., off, d1, ...). Reported per case:
requests/s, p50/p99 latency, the server's CPU time per request (from /proc: robust to the other
load on the machine), and the time of one batch-1 run and of one full mixed-mode batch run (in
this process) so that p99 can be read against "the delay bound plus two runs". Workloads
(:data:`WORKLOADS`): ``small`` (random 784-256-128-10 modes), ``w1024`` (the paper-like
width-1024 backbone, 27% of units kept, shared layout), ``w2048`` (random full 2048-2048 modes:
a run long against the HTTP handling). Optionally the same on ``--engine ray`` (one replica),
batching off, with taugate's batcher and with Ray Serve's ``@serve.batch``.

    PYTHONPATH=. python benchmarks/test_bench_batching.py [small|w1024|w2048] [delay ...]
    PYTHONPATH=. python scripts/measure_batching.py    # docs/measured/batching-*.json
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
WORKLOADS = ("small", "w1024", "w2048")


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


def load(url: str, bodies: list, requests: int, modes=MODES) -> dict:
    """Each of CLIENTS threads sends ``requests`` requests, client i to mode i % 8."""

    def worker(i):
        mode = modes[i % len(modes)]
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


def run_ms(bundle: Path, names=MODES) -> dict:
    """Median ms of one batch-1 run and of one run_mixed over CLIENTS rows spread over the
    modes (1 thread), interleaved."""
    rt = ModeRuntime.open(bundle, providers="cpu", intra_op_num_threads=1, lazy=True)
    x = np.random.default_rng(0).random((CLIENTS, rt.manifest.input.features), np.float32)
    modes = [names[i % len(names)] for i in range(CLIENTS)]
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


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _case(url: str, bodies, requests: int, modes, pid: int | None, delay) -> dict:
    load(url, bodies, 3, modes)  # warm up connections and sessions
    before = cpu_s(pid) if pid else None
    result = load(url, bodies, requests, modes)
    if pid:
        result["server_cpu_ms_per_request"] = (cpu_s(pid) - before) / result["requests"] * 1e3
    if delay:
        page = httpx.get(url + "/metrics").text
        get = {ln.split()[0]: float(ln.split()[1]) for ln in page.splitlines()
               if ln.startswith("taugate_batch")}
        if get.get("taugate_batches_total"):
            result["mean_batch_requests"] = \
                get.get("taugate_batch_requests_total", 0) / get["taugate_batches_total"]
    return result


def _merge(runs: list[dict]) -> dict:
    """Rounds of one case: their requests/s and latencies, and the median of each."""
    out = {k: statistics.median(r[k] for r in runs) for k in runs[0]
           if isinstance(runs[0][k], float)}
    out["rounds"] = [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}
                     for r in runs]
    return out


def measure(bundle: Path, delays=DELAYS, requests: int = 40, rounds: int = 2,
            ray_delay: float | None = None) -> dict:
    """The cases side by side (see the module docstring); ``ray_delay``: also on Ray Serve."""
    rt = ModeRuntime.open(bundle, providers="cpu", lazy=True)
    names = tuple(m for m in rt.modes if m != "dense")[:len(MODES)]
    rng = np.random.default_rng(1)
    bodies = [_body(rt.manifest.input.name, rng.random((1, rt.manifest.input.features),
                                                        np.float32)) for _ in range(8)]
    out = {"clients": CLIENTS, "modes": len(names), "requests_per_client": requests,
           "rounds": rounds, **run_ms(bundle, names), "cpus": os.cpu_count(),
           "loadavg_before": list(os.getloadavg()), "cases": {}}
    runs: dict[str, list] = {}
    for _ in range(rounds):
        for delay in delays:
            proc, url = start_server(bundle, delay)
            try:
                runs.setdefault(f"delay_{delay}ms", []).append(
                    _case(url, bodies, requests, names, proc.pid, delay))
            finally:
                proc.terminate()
                proc.wait(30)
    if ray_delay:
        runs.update(ray_cases(bundle, bodies, requests, names, ray_delay, rounds))
    out["cases"] = {name: _merge(r) for name, r in runs.items()}
    for prefix in ("delay_", "ray_"):
        off = out["cases"].get(f"{prefix}0ms" if prefix == "delay_" else "ray_off")
        for name, case in out["cases"].items():
            if off and name.startswith(prefix):
                case["throughput_over_off"] = case["requests_per_s"] / off["requests_per_s"]
    out["loadavg_after"] = list(os.getloadavg())
    return out


def ray_cases(bundle: Path, bodies, requests: int, names, delay: float, rounds: int) -> dict:
    """``--engine ray`` (one replica, all modes loaded): batching off, taugate's batcher and
    Ray Serve's ``@serve.batch`` at ``delay`` ms, interleaved; one Ray for all of them."""
    from taugate.server.ray_app import RayServeConfig
    from taugate.server.ray_local import LocalRayServe

    def config(**kw):
        return RayServeConfig(bundle, replicas=1, max_modes_per_replica=len(names) + 1,
                              replica_cpus=1, **kw)

    cases = {"ray_off": config(), f"ray_taugate_{delay}ms": config(batch_delay_ms=delay),
             f"ray_serve_batch_{delay}ms": config(batch_delay_ms=delay, batcher="serve")}
    runs: dict[str, list] = {}
    srv = LocalRayServe(cases["ray_off"], num_cpus=2)
    try:
        srv.start(timeout=300)
        for _ in range(rounds):
            for name, cfg in cases.items():
                srv.deploy(cfg, timeout=300)
                runs.setdefault(name, []).append(
                    _case(srv.url, bodies, requests, names, None, 0))
    finally:
        srv.stop()
    return runs


def make_bundle(path: Path, workload: str = "small") -> Path:
    """The bundle of ``workload`` (:data:`WORKLOADS`), 8 modes."""
    if workload == "small":
        return build_random_bundle(path, modes=MODES, widths=(256, 128), seed=0)
    if workload == "w2048":
        return build_random_bundle(path, modes=MODES, widths=(2048, 2048), seed=0)
    if workload == "w1024":
        sys.path.insert(0, str(Path(__file__).parent))
        from shared_backbone import build

        return Path(build(path, len(MODES), widths=(1024, 1024), keep=0.27)[0])
    raise ValueError(f"workload: expected one of {WORKLOADS}, got {workload!r}")


def test_batching_under_load(benchmark, tmp_path):
    import pytest

    if httpx is None:
        pytest.skip("httpx is not installed")
    bundle = make_bundle(tmp_path / "bundle")
    requests = 2 if benchmark.disabled else 40
    result = benchmark.pedantic(measure, args=(bundle, DELAYS, requests, 1), rounds=1,
                                iterations=1)
    if result:
        benchmark.extra_info.update(result)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        workload = sys.argv[1] if len(sys.argv) > 1 else "small"
        delays = [int(d) if float(d).is_integer() else float(d) for d in sys.argv[2:]] or DELAYS
        print(json.dumps(measure(make_bundle(Path(tmp) / "b", workload), delays), indent=1))
