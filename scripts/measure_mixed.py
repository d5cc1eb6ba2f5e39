"""Measure several modes in one call (issue 18) into docs/measured/mixed-w1024.json.

    python scripts/measure_mixed.py OUT [--repeats 3] [--budget 3] [--name w1024]

Builds a 784-1024-1024-10 shared-layout bundle of 16 synthetic modes under OUT
(benchmarks/shared_backbone.py) and times, on one onnxruntime thread per session, interleaved:
``run_mixed`` of 256 rows spread evenly over the 16 modes beside ``run`` of the same rows in one
mode, in fp32 and in int8 (``mixed_int8``: int8 ``run_mixed`` beside int8 ``run`` of the
same rows in one mode, the same-precision ratio, and beside fp32 ``run`` in one mode),
and ``run_all`` of 64 rows beside 16 separate ``run`` calls (medians of per-round ratios,
``taugate.timing``); and where the time goes: 16 bare ``InferenceSession.run`` calls of 16 rows
on the 16 modes, and on one mode, beside one bare call of 256 rows (``bare``), and
``run_all``'s shared graph alone beside the 16 separate calls (``shared_graph``), each ``--repeats`` times, with the load average before and after each,
into docs/measured/mixed-NAME.json. (Run with another checkout first on PYTHONPATH to time its
taugate the same way, e.g. ``--name w1024-before``.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MEASURED = ROOT / "docs" / "measured"
N_MODES = 16


def _ratio(calls: dict, base: str, other: str, budget_s: float) -> dict:
    from taugate.timing import Interleaved, calibrate

    load = [round(v, 2) for v in os.getloadavg()]
    timer = Interleaved(calls)
    for _ in range(calibrate(timer, budget_s)):
        timer.round()
    s = timer.samples
    med = timer.summary()
    out = {f"{k}_ratio": round(statistics.median(o / b for o, b in zip(s[k], s[base])), 3)
           for k in calls if k != base}
    out.update({f"{k}_us": round(med[k]["median_us"], 1) for k in calls})
    return {"ratio": out[f"{other}_ratio"], **out, "rounds": len(s[base]),
            "loadavg_before": load, "loadavg_after": [round(v, 2) for v in os.getloadavg()]}


def _resident_mib() -> float:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _first_call(call) -> dict:
    """Seconds and resident memory added by a first call (one that builds a graph)."""
    import time

    before, start = _resident_mib(), time.perf_counter()
    call()
    return {"ms": round((time.perf_counter() - start) * 1e3, 1),
            "resident_added_mib": round(_resident_mib() - before, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--budget", type=float, default=3.0)
    p.add_argument("--name", default="w1024")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import shared_backbone as sb

    from taugate.runtime import ModeRuntime

    path, _ = sb.build(Path(args.out) / "bundle", N_MODES, widths=(1024, 1024),
                       precisions=("fp32", "int8"))
    rt = ModeRuntime.open(path, providers="cpu")  # 17 sessions: one thread each
    rng = np.random.default_rng(0)
    x = rng.random((256, 784), dtype=np.float32)
    modes = np.array([rt.modes[i % N_MODES] for i in range(256)])
    rng.shuffle(modes)
    x64 = np.random.default_rng(1).random((64, 784), dtype=np.float32)
    first = _first_call(lambda: rt.run_mixed(modes, x))  # builds the graph of every mode
    every = rt.run_all(x64)
    diff = max(float(np.abs(every[m] - rt.run(m, x64)).max()) for m in rt.modes)
    rt8 = ModeRuntime.open(path, providers="cpu", precision="int8")
    first8 = _first_call(lambda: rt8.run_mixed(modes, x))
    got8 = rt8.run_mixed(modes, x)
    diff8 = max(float(np.abs(got8[modes == m] - rt8.run(m, x[modes == m])).max())
                for m in rt8.modes)
    doc = {"bundle": "784-1024-1024-10, shared layout, 16 synthetic modes keeping ~27% of "
                     "the units, fp32 and int8", "onnxruntime_threads_per_session": 1,
           "run_all_max_abs_diff": diff, "first_run_mixed": first,
           "mixed_int8_max_abs_diff": diff8, "first_run_mixed_int8": first8,
           "mixed_int8_one_graph": rt8._mixed_graph[1] is not None,
           "mixed": [], "mixed_int8": [], "run_all": [], "bare": [], "shared_graph": []}
    from taugate.runtime.shared_layer import plan_for

    plan = plan_for(rt, tuple(rt.modes))
    sessions = [rt._sessions[m].session for m in rt.modes]
    parts = [np.ascontiguousarray(x[16 * k:16 * k + 16]) for k in range(N_MODES)]
    inp, outs = rt.manifest.input.name, [rt.manifest.output.name]
    for _ in range(args.repeats):
        doc["mixed"].append(_ratio({"one_mode": lambda: rt.run(rt.modes[0], x),
                                    "mixed": lambda: rt.run_mixed(modes, x)},
                                   "one_mode", "mixed", args.budget))
        doc["mixed_int8"].append(_ratio(
            {"one_mode_int8": lambda: rt8.run(rt8.modes[0], x),
             "mixed_int8": lambda: rt8.run_mixed(modes, x),
             "one_mode_fp32": lambda: rt.run(rt.modes[0], x)},
            "one_mode_int8", "mixed_int8", args.budget))
        doc["run_all"].append(_ratio({"separate": lambda: [rt.run(m, x64) for m in rt.modes],
                                      "run_all": lambda: rt.run_all(x64)},
                                     "separate", "run_all", args.budget))
        doc["bare"].append(_ratio(
            {"one_call_256": lambda: sessions[0].run(outs, {inp: x}),
             "calls_16_modes": lambda: [s.run(outs, {inp: p}) for s, p in zip(sessions, parts)],
             "calls_1_mode": lambda: [sessions[0].run(outs, {inp: p}) for p in parts]},
            "one_call_256", "calls_16_modes", args.budget))
        doc["shared_graph"].append(_ratio(
            {"separate": lambda: [rt.run(m, x64) for m in rt.modes],
             "graph": lambda: plan.session.run(None, {"x": x64})},
            "separate", "graph", args.budget))
        print(doc["mixed"][-1], doc["mixed_int8"][-1], doc["run_all"][-1])
    for key in ("bare", "shared_graph"):
        doc[f"{key}_median"] = statistics.median(r["ratio"] for r in doc[key])
    doc["bare_one_mode_median"] = statistics.median(r["calls_1_mode_ratio"] for r in doc["bare"])
    # int8 mixed against fp32 one mode: the ratio of the medians of each run
    doc["mixed_int8_vs_fp32_one_mode_median"] = round(statistics.median(
        r["mixed_int8_us"] / r["one_mode_fp32_us"] for r in doc["mixed_int8"]), 3)
    doc["goals"] = {"mixed_le_1.25": statistics.median(r["ratio"] for r in doc["mixed"]),
                    "mixed_int8_le_1.25": statistics.median(r["ratio"]
                                                            for r in doc["mixed_int8"]),
                    "run_all_le_0.5": statistics.median(r["ratio"] for r in doc["run_all"])}
    MEASURED.mkdir(parents=True, exist_ok=True)
    import taugate

    doc["taugate"] = str(Path(taugate.__file__).parent.parent.name)
    target = MEASURED / f"mixed-{args.name}.json"
    target.write_text(json.dumps(doc, indent=1), "utf-8")
    print(f"wrote {target.relative_to(ROOT)}: {doc['goals']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
