"""Several modes per call beside single-mode calls (``taugate bench --mixed`` / ``--auto``): a
batch whose rows are spread evenly over the bundle's modes (``run_mixed``) against the same rows
in one mode; every mode on the same rows (``run_all``) against one call per mode; the router
alone (``route``) and routed runs (``run_auto``, unknown rows on the dense model) against one
mode's run. Each comparison is timed interleaved in one process (taugate/timing.py) and reports
both medians and the median of the per-round ratios. numpy + onnxruntime only.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import asdict, dataclass, field

import numpy as np

from taugate.runtime import ModeRuntime
from taugate.timing import Interleaved, calibrate, machine_info

KINDS = ("mixed", "auto")


@dataclass
class Comparison:
    """One side-by-side timing: ``what`` against ``base`` (medians in microseconds)."""

    what: str  # mixed | run_all | route | run_auto
    base: str  # one_mode | separate_calls
    batch: int
    threads: int
    what_us: float
    base_us: float
    ratio: float  # median over rounds of what / base
    rounds: int
    goal: float | None = None  # the bound on ratio, where there is one (GOALS)


@dataclass
class ManyResult:
    bundle: str
    comparisons: list = field(default_factory=list)
    machine: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"bundle": self.bundle, "comparisons": [asdict(c) for c in self.comparisons],
                "machine": self.machine}


GOALS = {"mixed": 1.25, "run_all": 0.5, "route": 0.2}  # ratio bounds a bundle should meet


def _compare(calls: dict, what: str, base: str, batch: int, threads: int,
             budget_s: float) -> Comparison:
    timer = Interleaved(calls)
    for _ in range(calibrate(timer, budget_s)):
        timer.round()
    s, med = timer.samples, timer.summary()
    ratio = statistics.median(o / b for o, b in zip(s[what], s[base]))
    return Comparison(what, base, batch, threads, round(med[what]["median_us"], 1),
                      round(med[base]["median_us"], 1), round(ratio, 3), len(s[base]),
                      GOALS.get(what))


def _rows(rt: ModeRuntime, batch: int, rng) -> np.ndarray:
    return rng.random((batch, *rt.manifest.input.shape), dtype=np.float32)


def measure(rt: ModeRuntime, kinds, batches=(256,), budget_s: float = 1.0, seed: int = 0,
            auto_rows: np.ndarray | None = None, threads: int = 0) -> list[Comparison]:
    """Comparisons of ``kinds`` (``"mixed"``: mixed batches and every-mode calls; ``"auto"``:
    route and run_auto) at each batch size. ``auto_rows``: inputs like the modes' own (routing
    random rows would flag them all unknown); random rows when not given."""
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"bench kinds {bad}: expected some of {list(KINDS)}")
    rng = np.random.default_rng(seed)
    out = []
    for batch in batches:
        x = _rows(rt, batch, rng)
        if "mixed" in kinds:
            modes = np.array([rt.modes[i % len(rt.modes)] for i in range(batch)])
            rng.shuffle(modes)
            out += _mixed(rt, x, modes, threads, budget_s)
        if "auto" in kinds:
            xa = x if auto_rows is None else np.ascontiguousarray(
                np.resize(auto_rows, (batch, *auto_rows.shape[1:])), np.float32)
            out += _auto(rt, xa, threads, budget_s)
    return out


def _mixed(rt: ModeRuntime, x, modes, threads: int, budget_s: float) -> list[Comparison]:
    one, n = rt.modes[0], len(x)
    return [_compare({"one_mode": lambda: rt.run(one, x),
                      "mixed": lambda: rt.run_mixed(modes, x)},
                     "mixed", "one_mode", n, threads, budget_s),
            _compare({"separate_calls": lambda: [rt.run(m, x) for m in rt.modes],
                      "run_all": lambda: rt.run_all(x)},
                     "run_all", "separate_calls", n, threads, budget_s)]


def _auto(rt: ModeRuntime, x, threads: int, budget_s: float) -> list[Comparison]:
    one, n = rt.modes[0], len(x)
    return [_compare({"one_mode": lambda: rt.run(one, x), "route": lambda: rt.route(x)},
                     "route", "one_mode", n, threads, budget_s),
            _compare({"one_mode": lambda: rt.run(one, x),
                      "run_auto": lambda: rt.run_auto(x, unknown="dense")},
                     "run_auto", "one_mode", n, threads, budget_s)]


def run_many(bundle, kinds, batches=(256,), threads=(1,), budget_s: float = 1.0,
             providers: str = "cpu", auto_rows: np.ndarray | None = None) -> ManyResult:
    """:func:`measure` at each onnxruntime thread count, with the machine and its load."""
    result = ManyResult(str(bundle), machine=machine_info())
    result.machine["loadavg_at_start"] = [round(v, 2) for v in os.getloadavg()]
    for t in threads:
        with ModeRuntime.open(bundle, providers=providers, intra_op_num_threads=t) as rt:
            result.comparisons += measure(rt, kinds, batches, budget_s, auto_rows=auto_rows,
                                          threads=t)
    result.machine["loadavg_at_end"] = [round(v, 2) for v in os.getloadavg()]
    return result


HEADERS = ["call", "against", "batch", "threads", "call us", "against us", "ratio", "goal",
           "rounds"]


def table_rows(result: ManyResult) -> list[list]:
    return [[c.what, c.base, c.batch, c.threads, f"{c.what_us:.1f}", f"{c.base_us:.1f}",
             f"{c.ratio:.3f}", f"<= {c.goal}" if c.goal is not None else "-", c.rounds]
            for c in result.comparisons]
