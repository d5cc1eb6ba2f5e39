"""Dynamic batching side by side (issue 19.4): for each workload, ``taugate serve`` with batching
off and on (interleaved rounds), optionally ``--engine ray`` off / taugate's batcher / Ray
Serve's ``@serve.batch``; writes docs/measured/batching-<workload>.json with the machine's load.

    PYTHONPATH=. python scripts/measure_batching.py [--workloads small,w1024,w2048]
        [--delays 0,1,2] [--seconds 3] [--rounds 2] [--body binary|json] [--ray small]
        [--out docs/measured] [--profile DIR]

The clients are benchmarks/loadgen.py (one asyncio process of raw sockets); its ceiling against
a trivial server is in each file (``client_ceiling``). A JSON-body run is written as
batching-<workload>-json.json.
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

from batching_workloads import BODIES  # noqa: E402
from test_bench_batching import WORKLOADS, make_bundle, measure  # noqa: E402


def _numbers(text: str) -> list:
    return [int(v) if float(v).is_integer() else float(v) for v in text.split(",") if v]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--delays", default="0,1,2", help="batch delays in ms, 0 (off) first")
    p.add_argument("--seconds", type=float, default=3.0, help="measured seconds per case")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--body", default="binary", choices=BODIES)
    p.add_argument("--profile", default="", help="a folder: each server under cProfile")
    p.add_argument("--modes", type=int, default=8, help="modes the clients spread over")
    p.add_argument("--tag", default="", help="added to the file name: batching-W[-TAG].json")
    p.add_argument("--open", type=float, default=0.5, help="also an open loop at this fraction "
                   "of the throughput with batching off (0: none)")
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
            profile = Path(args.profile) / workload if args.profile else None
            if profile:
                profile.mkdir(parents=True, exist_ok=True)
            result = measure(bundle, delays, args.seconds, args.rounds, args.body,
                             ray_delay=max(delays) if workload in ray else None,
                             profile_dir=profile, modes=args.modes,
                             open_fraction=args.open or None)
        result = {"workload": workload,
                  "command": f"python scripts/measure_batching.py --workloads {workload} "
                             f"--delays {args.delays} --seconds {args.seconds:g} --rounds "
                             f"{args.rounds} --body {args.body} --modes {args.modes}"
                             + (f" --tag {args.tag}" if args.tag else "")
                             + (f" --open {args.open:g}" if args.open else "")
                             + (f" --ray {workload}" if workload in ray else ""),
                  "seconds": time.perf_counter() - t0, **result}
        suffix = ("" if args.body == "binary" else f"-{args.body}") \
            + ("" if args.modes == 8 else f"-{args.modes}mode") \
            + (f"-{args.tag}" if args.tag else "")
        path = Path(args.out) / f"batching-{workload}{suffix}.json"
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(f"{path.name}: " + ", ".join(
            f"{name} {case['requests_per_s']:.0f} req/s x{case.get('throughput_over_off', 1):.2f}"
            f" p99 {case['p99_ms']:.0f} ms" for name, case in result["cases"].items()),
            file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
