"""The measured speedup beside the MAC ratio (``taugate export`` and ``taugate info --measure``):
a short interleaved timing of every mode against the dense model through the runtime, fp32,
one intra-op thread, at batch 1 and at a large batch (taugate/bench.py's method, shorter)."""

from __future__ import annotations

BATCHES = (1, 256)  # batch 1 (latency) and a large batch (throughput)
BUDGET_S = 0.1  # timed seconds per (mode, batch): a few hundred interleaved rounds at batch 1


def measure(bundle, modes=None, batches=BATCHES, budget_s: float | None = None) -> dict:
    """mode -> {batch: dense fp32 median / mode fp32 median}, one thread, interleaved."""
    from taugate.bench import BenchConfig, run_bench

    config = BenchConfig(tuple(modes) if modes else None, tuple(batches), (1,), ("fp32",),
                         BUDGET_S if budget_s is None else budget_s)
    out: dict = {}
    for cell in run_bench(bundle, config).cells:
        out.setdefault(cell.mode, {})[cell.batch] = cell.speedup["fp32"]
    return out


def headers(batches=BATCHES) -> list[str]:
    """The table columns: ``speedup b1``, ``speedup b256``."""
    return [f"speedup b{b}" for b in batches]


def cells(measured: dict | None, mode: str, batches=BATCHES) -> list[str]:
    """``1.12x`` per batch (``-`` where not measured)."""
    got = (measured or {}).get(mode, {})
    return [f"{got[b]:.2f}x" if b in got else "-" for b in batches]


NOTE = ("speedup bN: dense fp32 median / mode fp32 median at batch N, one thread, interleaved "
        "through the runtime on this machine (a short timing: `taugate bench` for more)")
