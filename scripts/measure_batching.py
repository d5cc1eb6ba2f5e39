"""Dynamic batching side by side (issue 19.4): for each workload, ``taugate serve`` with batching
off and on (interleaved rounds), optionally ``--engine ray`` off / taugate's batcher / Ray
Serve's ``@serve.batch``; writes docs/measured/batching-<workload>.json with the machine's load.

    PYTHONPATH=. python scripts/measure_batching.py [--workloads small,w1024,w2048]
        [--delays 0,2] [--requests 20] [--rounds 2] [--ray small] [--out docs/measured]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from test_bench_batching import WORKLOADS, make_bundle, measure  # noqa: E402


def _numbers(text: str) -> list:
    return [int(v) if float(v).is_integer() else float(v) for v in text.split(",") if v]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--delays", default="0,2", help="batch delays in ms, 0 (off) first")
    p.add_argument("--requests", type=int, default=20, help="requests per client per round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--ray", default="", help="workloads also measured on --engine ray")
    p.add_argument("--out", default=str(ROOT / "docs" / "measured"))
    args = p.parse_args(argv)
    delays = _numbers(args.delays)
    ray = set(filter(None, args.ray.split(",")))
    for workload in filter(None, args.workloads.split(",")):
        if workload not in WORKLOADS:
            raise SystemExit(f"--workloads: unknown {workload!r}; valid: {', '.join(WORKLOADS)}")
        with tempfile.TemporaryDirectory() as tmp:
            bundle = make_bundle(Path(tmp) / "b", workload)
            t0 = time.perf_counter()
            result = measure(bundle, delays, args.requests, args.rounds,
                             ray_delay=max(delays) if workload in ray else None)
        result = {"workload": workload,
                  "command": f"python scripts/measure_batching.py --workloads {workload} "
                             f"--delays {args.delays} --requests {args.requests} --rounds "
                             f"{args.rounds}" + (f" --ray {workload}" if workload in ray else ""),
                  "seconds": time.perf_counter() - t0, **result}
        path = Path(args.out) / f"batching-{workload}.json"
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(f"{path.name}: " + ", ".join(
            f"{name} {case['requests_per_s']:.0f} req/s x{case.get('throughput_over_off', 1):.2f}"
            f" p99 {case['p99_ms']:.0f} ms" for name, case in result["cases"].items()),
            file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
