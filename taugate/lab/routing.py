"""How well a bundle's router does (``taugate route --eval``): accuracy of ``mode="auto"`` on an
even mixture of the modes' test sets beside oracle routing (each row in its true mode) and the
dense frozen model; unknown-input detection (rows of unseen modes flagged vs known rows
flagged) over a sweep of distance thresholds; and the router's cost beside one mode's run at
batch 256, timed interleaved (taugate/timing.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from taugate.runtime import DENSE, ModeRuntime
from taugate.timing import Interleaved, calibrate

SWEEP = (50.0, 80.0, 90.0, 95.0, 97.5, 99.0, 99.5, 99.9)  # percentiles of known test distances


@dataclass
class RoutingReport:
    """What :func:`evaluate` measured (accuracies are shares of rows)."""

    rows_per_mode: int
    oracle: float  # each row in its true mode
    dense: float  # every row on the dense model
    auto: float  # each row in its routed mode; unknown rows on the dense model
    auto_no_unknown: float  # each row in its best-scoring mode, no unknown flag
    routed_right: float  # share of rows whose best-scoring mode is their true mode
    known_flagged: float  # at the bundle's threshold
    unseen_flagged: dict = field(default_factory=dict)  # unseen mode -> share flagged
    curve: list = field(default_factory=list)  # dicts: percentile, threshold, known, unseen, auto
    cost: dict = field(default_factory=dict)  # route vs one mode's run at batch 256


def _mixture(tests: dict, rows: int | None, seed: int) -> tuple:
    n = min(len(x) for x, _ in tests.values())
    n = min(n, rows) if rows else n
    rng = np.random.default_rng(seed)
    xs, ys, ms = [], [], []
    for m, (x, y) in tests.items():
        ix = rng.choice(len(x), n, replace=False)
        xs.append(np.asarray(x[ix], np.float32))
        ys.append(np.asarray(y[ix]))
        ms += [m] * n
    return np.concatenate(xs), np.concatenate(ys), ms, n


def _accuracy(rt: ModeRuntime, x, y, rows: list) -> float:
    from taugate.runtime.routing import run_rows

    logits = run_rows(rt.run, x, rows, rt.manifest.output.classes)
    return float((logits.argmax(axis=1) == y).mean())


def _cost(rt: ModeRuntime, x: np.ndarray, mode: str, budget_s: float) -> dict:
    batch = np.ascontiguousarray(np.resize(x, (256, *x.shape[1:])))
    timer = Interleaved({"mode": lambda: rt.run(mode, batch), "route": lambda: rt.route(batch)})
    for _ in range(calibrate(timer, budget_s)):
        timer.round()
    s = timer.summary()
    return {"batch": 256, "mode": mode, "mode_us": round(s["mode"]["median_us"], 1),
            "route_us": round(s["route"]["median_us"], 1),
            "route_share": round(s["route"]["median_us"] / s["mode"]["median_us"], 3)}


def evaluate(rt: ModeRuntime, tests: dict, unseen: dict | None = None, rows: int | None = None,
             seed: int = 0, timing_s: float = 2.0) -> RoutingReport:
    """``tests``: mode -> (x, y) test split of every bundle mode; ``unseen``: name -> x of
    modes the bundle does not have (for the unknown-input curve)."""
    x, y, truth, n = _mixture(tests, rows, seed)
    routing = rt.routing(x)
    best = [rt.manifest.router.modes[i] for i in routing.best]
    flagged = np.asarray([m == "unknown" for m in routing.modes])
    auto_rows = [DENSE if f else m for f, m in zip(flagged, best)]
    report = RoutingReport(
        n, _accuracy(rt, x, y, truth), _accuracy(rt, x, y, [DENSE] * len(x)),
        _accuracy(rt, x, y, auto_rows), _accuracy(rt, x, y, best),
        float(np.mean([b == t for b, t in zip(best, truth)])), float(flagged.mean()))
    away = {}
    for name, ux in (unseen or {}).items():
        ux = np.asarray(ux[: rows or len(ux)], np.float32)
        got = rt.routing(ux)
        away[name] = got.distance
        report.unseen_flagged[name] = len(got.unknown_rows) / len(ux)
    for p in SWEEP:
        t = float(np.percentile(routing.distance, p))
        known = routing.distance > t
        rows_t = [DENSE if k else m for k, m in zip(known, best)]
        report.curve.append({"percentile": p, "threshold": t, "known": float(known.mean()),
                             "unseen": {k: float((d > t).mean()) for k, d in away.items()},
                             "auto": _accuracy(rt, x, y, rows_t)})
    report.cost = _cost(rt, x, rt.modes[0], timing_s)
    return report


def table(report: RoutingReport) -> str:
    """The report as text: accuracies, then the threshold sweep."""
    r = report
    lines = [f"even mixture, {r.rows_per_mode} test rows per mode",
             f"  oracle routing {r.oracle:.4f}   dense model {r.dense:.4f}   auto {r.auto:.4f} "
             f"(without unknown flags {r.auto_no_unknown:.4f}; rows routed to their true mode "
             f"{r.routed_right:.4f})",
             f"  at the bundle's threshold: {r.known_flagged:.2%} of known rows flagged; "
             + ", ".join(f"{k} {v:.2%}" for k, v in r.unseen_flagged.items()),
             f"  cost at batch 256: route {r.cost.get('route_us')} us vs mode "
             f"{r.cost.get('mode')} {r.cost.get('mode_us')} us ({r.cost.get('route_share', 0):.1%})",
             "", "percentile  threshold  known flagged  " + "  ".join(
                 f"{k} flagged" for k in r.unseen_flagged) + "  auto accuracy"]
    for c in r.curve:
        lines.append(f"{c['percentile']:10g}  {c['threshold']:9.3f}  {c['known']:13.2%}  "
                     + "  ".join(f"{c['unseen'][k]:{len(k) + 8}.2%}" for k in r.unseen_flagged)
                     + f"  {c['auto']:13.4f}")
    return "\n".join(lines)


def plot(report: RoutingReport, path) -> None:
    """The threshold trade-off: shares flagged and auto accuracy vs the threshold's percentile."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ps = [c["percentile"] for c in report.curve]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ps, [c["known"] for c in report.curve], "o-", label="known rows flagged")
    for k in report.unseen_flagged:
        ax.plot(ps, [c["unseen"][k] for c in report.curve], "s-", label=f"{k} rows flagged")
    ax.plot(ps, [c["auto"] for c in report.curve], "^-", label="auto accuracy (unknown: dense)")
    ax.axhline(report.oracle, color="gray", ls="--", lw=1, label="oracle routing accuracy")
    ax.axhline(report.dense, color="gray", ls=":", lw=1, label="dense model accuracy")
    ax.set_xlabel("unknown threshold (percentile of known rows' distance)")
    ax.set_ylabel("share of rows")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
