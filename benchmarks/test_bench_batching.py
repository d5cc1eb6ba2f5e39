"""Dynamic batching under load: 32 concurrent clients send batch-1 requests
(``POST /v2/models/{mode}/infer``, binary tensors or JSON) spread over 8 modes to ``taugate
serve`` (a subprocess, 1 intra-op thread), with batching off and at each ``--batch-delay-ms`` of
:data:`DELAYS`, interleaved over ``rounds`` in one run (off, d1, d2, ..., off, d1, ...).

The clients are one asyncio process of raw keep-alive sockets (benchmarks/loadgen.py, ~0.02 ms
of CPU per request), so the server, not the client, limits throughput; its ceiling against a
trivial server is measured first and reported. Per case: requests/s, p50/p99 latency, the
server's CPU per request (from /proc: robust to the other load on the machine) and, from its
``/metrics``, the time per request of each phase (input: parse and validate; queue; infer; output:
encode); and the time of one batch-1 run and of one full mixed-mode batch run (in this process),
so that p99 can be read against "the delay bound plus two runs" (``p99_bound_ms``). The 32
clients form a closed loop that saturates the server, where latency is queueing (Little's law:
``littles_law_latency_ms``); ``open_fraction`` adds an open loop at a fixed rate below it
(``open_p99_ms``). Workloads: :mod:`batching_workloads`. Optionally the same on ``--engine ray`` (one replica), batching off,
with taugate's batcher and with Ray Serve's ``@serve.batch``.

    PYTHONPATH=. python benchmarks/test_bench_batching.py [workload] [delay ...]
    PYTHONPATH=. python scripts/measure_batching.py    # docs/measured/batching-*.json
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from batching_workloads import MODES, WORKLOADS, body, make_bundle, run_ms
from loadgen import LoadSpec, get, post, run_load

from taugate.runtime import ModeRuntime

ROOT = Path(__file__).resolve().parents[1]
LOADGEN = Path(__file__).parent / "loadgen.py"
CLIENTS = 32
DELAYS = (0, 1, 2)
__all__ = ["WORKLOADS", "make_bundle", "measure"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def start_server(bundle: Path, delay_ms: float, profile: Path | None = None
                 ) -> tuple[subprocess.Popen, int]:
    """``taugate serve bundle --batch-delay-ms delay_ms`` on a free port, once ready;
    ``profile``: under cProfile (its event-loop thread), the stats written there on exit."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    prof = ["-m", "cProfile", "-o", str(profile)] if profile else []
    proc = subprocess.Popen(
        [sys.executable, *prof, "-m", "taugate.cli", "serve", str(bundle), "--port", str(port),
         "--providers", "cpu", "--threads", "1", "--batch-delay-ms", str(delay_ms),
         "--max-in-flight", str(CLIENTS * 2)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("taugate serve exited")
        if _ready(port):
            return proc, port
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError(f"taugate serve not ready on port {port}")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_ceiling(seconds: float = 2.0) -> dict:
    """What the load generator drives against a trivial server (one fixed answer)."""
    port = _free_port()
    server = subprocess.Popen([sys.executable, str(LOADGEN), "--trivial-server", str(port)],
                              stdout=subprocess.PIPE)
    try:
        server.stdout.readline()
        result = run_load(LoadSpec("127.0.0.1", port, [get("/")], CLIENTS, seconds))
    finally:
        server.terminate()
        server.wait(10)
    return {k: result[k] for k in ("requests_per_s", "p50_ms", "p99_ms",
                                   "client_cpu_ms_per_request")}


def _metrics(port: int) -> dict:
    """The server's counters of interest, from its ``/metrics`` page."""
    out: dict = {}
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        if name.startswith("taugate_inference_phase_seconds_total"):
            key = "phase_" + name.split('phase="')[1].split('"')[0]
        elif name.startswith(("taugate_inference_requests_total", "taugate_batch")):
            key = name.split("{")[0]
        else:
            continue
        out[key] = out.get(key, 0.0) + float(value)
    return out


def _case(port: int, requests: list, pid: int | None, seconds: float) -> dict:
    before = cpu_s(pid) if pid else None
    result = run_load(LoadSpec("127.0.0.1", port, requests, CLIENTS, seconds))
    assert result["errors"] == {} and list(result["statuses"]) == ["200"], result
    answered = result.pop("answered_with_warmup")
    out = {k: v for k, v in result.items() if isinstance(v, (int, float))}
    if pid:
        out["server_cpu_ms_per_request"] = (cpu_s(pid) - before) / answered * 1e3
        got = _metrics(port)
        n = got.pop("taugate_inference_requests_total", 0) or 1
        for key in [k for k in got if k.startswith("phase_")]:
            out[f"{key}_ms_per_request"] = got[key] / n * 1e3
        if got.get("taugate_batches_total"):
            out["mean_batch_requests"] = \
                got.get("taugate_batch_requests_total", 0) / got["taugate_batches_total"]
    return out


def _open_loop(port: int, requests: list, rate: float, seconds: float) -> dict:
    """Latency at ``rate`` requests/s offered (an open loop): ``open_*``."""
    result = run_load(LoadSpec("127.0.0.1", port, requests, CLIENTS, seconds, rate=rate))
    assert result["errors"] == {} and list(result["statuses"]) == ["200"], result
    return {f"open_{k}": result[k] for k in ("offered_per_s", "requests_per_s", "p50_ms",
                                              "p99_ms", "late_sends")}


def _merge(runs: list[dict]) -> dict:
    """Rounds of one case: each round's numbers, and the median of each."""
    out = {k: statistics.median(r[k] for r in runs) for k in runs[0]
           if isinstance(runs[0][k], (int, float))}
    out["rounds"] = [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}
                     for r in runs]
    return out


def client_requests(bundle: Path, names, kind: str = "binary") -> list[bytes]:
    """The request bytes of client i (i < 8): mode ``names[i]``, a random sample as ``kind``."""
    rt = ModeRuntime.open(bundle, providers="cpu", lazy=True)
    rng = np.random.default_rng(1)
    out = []
    for mode in names:
        x = rng.random((1, rt.manifest.input.features), np.float32)
        data, headers = body(rt.manifest.input.name, x, kind)
        out.append(post(f"/v2/models/{mode}/infer", data, headers))
    return out


def measure(bundle: Path, delays=DELAYS, seconds: float = 3.0, rounds: int = 2,
            kind: str = "binary", ray_delay: float | None = None,
            profile_dir: Path | None = None, modes: int = len(MODES),
            open_fraction: float | None = None) -> dict:
    """The cases side by side (see the module docstring); ``ray_delay``: also on Ray Serve;
    ``profile_dir``: each server under cProfile, ``<case>-round<r>.prof`` there; ``modes``:
    the clients spread over this many of the bundle's modes (client i: mode i % modes);
    ``open_fraction``: also an open loop at this fraction of the first round's requests/s with
    batching off, on each server (``open_*``: latency below saturation)."""
    names = tuple(m for m in ModeRuntime.open(bundle, providers="cpu", lazy=True).modes
                  if m != "dense")[:modes]
    requests = client_requests(bundle, names, kind)
    out = {"clients": CLIENTS, "modes": len(names), "body": kind, "seconds_per_case": seconds,
           "rounds": rounds, "cpus": os.cpu_count(), "loadavg_before": list(os.getloadavg()),
           "client_ceiling": client_ceiling(min(seconds, 2.0)), **run_ms(bundle, names, CLIENTS),
           "cases": {}}
    runs: dict[str, list] = {}
    rate = None
    for r in range(rounds):
        for delay in delays:
            prof = profile_dir / f"delay_{delay}ms-round{r}.prof" if profile_dir else None
            proc, port = start_server(bundle, delay, prof)
            try:
                case = _case(port, requests, proc.pid, seconds)
                runs.setdefault(f"delay_{delay}ms", []).append(case)
                if open_fraction:
                    rate = rate or open_fraction * case["requests_per_s"]
                    case.update(_open_loop(port, requests, rate, seconds))
                if r == 0 and delay == 0:
                    out["server_health_requests_per_s"] = run_load(LoadSpec(
                        "127.0.0.1", port, [get("/v2/health/ready")], CLIENTS,
                        1.0))["requests_per_s"]
            finally:  # SIGINT: uvicorn re-raises SIGTERM after shutdown, losing a profile
                proc.send_signal(signal.SIGINT if prof else signal.SIGTERM)
                proc.wait(30)
    if ray_delay:
        runs.update(ray_cases(bundle, requests, names, ray_delay, rounds, seconds))
    out["cases"] = {name: _merge(r) for name, r in runs.items()}
    off = out["cases"].get("delay_0ms")
    for name, case in out["cases"].items():
        base = out["cases"].get("ray_off") if name.startswith("ray_") else off
        if base:
            case["throughput_over_off"] = case["requests_per_s"] / base["requests_per_s"]
        # a closed loop of CLIENTS keeps every client waiting: mean latency = clients / rate
        case["littles_law_latency_ms"] = CLIENTS / case["requests_per_s"] * 1e3
        delay = float(name.split("_")[-1].removesuffix("ms")) if name.endswith("ms") else 0
        if delay:
            case["p99_bound_ms"] = delay + 2 * out["run_mixed_batch_ms"]
            case["p99_within_bound"] = case["p99_ms"] <= case["p99_bound_ms"]
            if "open_p99_ms" in case:
                case["open_p99_within_bound"] = case["open_p99_ms"] <= case["p99_bound_ms"]
    out["loadavg_after"] = list(os.getloadavg())
    return out


def ray_cases(bundle: Path, requests, names, delay: float, rounds: int,
              seconds: float) -> dict:
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
        port = int(srv.url.rsplit(":", 1)[1].strip("/"))
        for _ in range(rounds):
            for name, cfg in cases.items():
                srv.deploy(cfg, timeout=300)
                runs.setdefault(name, []).append(_case(port, requests, None, seconds))
    finally:
        srv.stop()
    return runs


def test_batching_under_load(benchmark, tmp_path):
    bundle = make_bundle(tmp_path / "bundle")
    seconds = 0.3 if benchmark.disabled else 3.0
    result = benchmark.pedantic(measure, args=(bundle, DELAYS, seconds, 1), rounds=1,
                                iterations=1)
    if result:
        benchmark.extra_info.update(result)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        workload = sys.argv[1] if len(sys.argv) > 1 else "small"
        delays = [int(d) if float(d).is_integer() else float(d) for d in sys.argv[2:]] or DELAYS
        print(json.dumps(measure(make_bundle(Path(tmp) / "b", workload), delays), indent=1))
