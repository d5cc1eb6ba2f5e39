"""Where a request's CPU goes on ``--engine ray`` (issue 19.4): one local Ray Serve (one model
replica, every mode loaded, batching off), 32 load-generator connections sending batch-1
binary-tensor requests over the workload's 8 modes, and the CPU time each Ray process spent
per answered request, read from /proc before and after (Ray's HTTP proxy, taugate's ingress,
the model replica, the rest). Writes docs/measured/ray-request-profile.json.

    PYTHONPATH=. python scripts/profile_ray_request.py [--workload small] [--seconds 8]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from batching_workloads import MODES, WORKLOADS, make_bundle  # noqa: E402
from loadgen import LoadSpec, run_load  # noqa: E402
from test_bench_batching import CLIENTS, client_requests, cpu_s  # noqa: E402

from taugate.server.ray_app import RayServeConfig  # noqa: E402
from taugate.server.ray_local import LocalRayServe, descendants  # noqa: E402

# a Ray process's role, from its command line (Ray names its workers ray::<Actor>...)
ROLES = (("ProxyActor", "Ray's HTTP proxy"), ("TaugateIngress", "taugate's ingress"),
         ("TaugateModel", "the model replica"))


def _role(cmdline: str) -> str:
    return next((role for key, role in ROLES if key in cmdline), "the rest of Ray")


def cpu_by_role() -> dict[str, float]:
    """CPU seconds (user + system) so far of this process's descendants, summed by role."""
    out: dict[str, float] = {}
    for pid in descendants():
        try:
            seconds = cpu_s(pid)
            with open(f"/proc/{pid}/cmdline") as f:
                cmdline = f.read().replace("\0", " ")
        except OSError:  # gone meanwhile
            continue
        role = _role(cmdline)
        out[role] = out.get(role, 0.0) + seconds
    return out


def measure(workload: str, seconds: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        bundle = make_bundle(Path(tmp) / "bundle", workload)
        config = RayServeConfig(bundle, replicas=1, max_modes_per_replica=len(MODES) + 1,
                                replica_cpus=1)
        with LocalRayServe(config, num_cpus=2) as srv:
            port = int(srv.url.rsplit(":", 1)[1].strip("/"))
            requests = client_requests(bundle, MODES)
            run_load(LoadSpec("127.0.0.1", port, requests, CLIENTS, 2.0))  # every mode loaded
            load_before = list(os.getloadavg())
            before = cpu_by_role()
            result = run_load(LoadSpec("127.0.0.1", port, requests, CLIENTS, seconds))
            after = cpu_by_role()
    answered = result["answered_with_warmup"]
    per_request = {role: round((after.get(role, 0.0) - before.get(role, 0.0)) / answered * 1e3,
                               3) for role in after}
    return {"workload": workload, "clients": CLIENTS, "modes": len(MODES), "seconds": seconds,
            "command": " ".join(sys.argv), "cpus": os.cpu_count(),
            "loadavg_before": load_before, "loadavg_after": list(os.getloadavg()),
            "requests_per_s": result["requests_per_s"], "p50_ms": result["p50_ms"],
            "p99_ms": result["p99_ms"], "statuses": result["statuses"],
            "cpu_ms_per_request": dict(sorted(per_request.items(), key=lambda kv: -kv[1]))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", default="small", choices=WORKLOADS)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--out", default=str(ROOT / "docs" / "measured" / "ray-request-profile.json"))
    args = p.parse_args()
    out = measure(args.workload, args.seconds)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
