"""Decode speed of every model of an LM bundle, measured side by side.

Timings on a shared machine drift, so the models are interleaved: each round times every
(model, precision) once, in turn, and the median over rounds is reported, with the machine's
load average (``os.getloadavg``) before and after.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

from taugate.bundle.names import DENSE
from taugate.runtime.generate import Generator, read_lm_manifest

DEFAULT_PROMPT = "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # not on every platform
        return None


def compare_decode_speed(bundle: str | Path, modes=None, precisions=("fp32", "int8"),
                         prompt: str | bytes = DEFAULT_PROMPT, new_tokens: int = 64,
                         batch: int = 1, rounds: int = 5, threads: int = 1) -> dict:
    """``{"models": {model: {precision: {"tokens_per_s", "tokens_per_s_median_step",
    "ttft_s"}}}, "load_before": [...], ...}``
    for ``dense`` and ``modes`` (default: every mode), medians of ``rounds`` interleaved
    rounds of :meth:`Generator.decode_speed`."""
    manifest = read_lm_manifest(bundle)
    names = [DENSE, *(sorted(manifest.modes) if modes is None else modes)]
    gens = {(m, p): Generator.open(bundle, m, p, threads) for m in names for p in precisions
            if p in manifest.entry(m).graphs}
    for g in gens.values():  # warm-up: first-run allocations out of the timings
        g.decode_speed(prompt, 4, batch)
    load_before = _load()
    runs: dict = {key: [] for key in gens}
    for _ in range(rounds):
        for key, g in gens.items():
            runs[key].append(g.decode_speed(prompt, new_tokens, batch))
    out: dict = {}
    for (m, p), rs in runs.items():
        out.setdefault(m, {})[p] = {
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in rs),
            "tokens_per_s_median_step": statistics.median(r["tokens_per_s_median_step"]
                                                          for r in rs),
            "ttft_s": statistics.median(r["ttft_s"] for r in rs)}
    return {"models": out, "batch": batch, "new_tokens": new_tokens, "rounds": rounds,
            "threads": threads, "load_before": load_before, "load_after": _load()}


def decode_results(bundle: str | Path, precisions=("fp32", "int8"), **timing) -> dict:
    """Per mode, the decode fields of ``out/lm/results.json``: ``ffn_mac_ratio``,
    ``greedy_match`` (from the manifest), ``tokens_per_s`` and ``dense_tokens_per_s``
    (batch-1 decode, ``{precision: tokens/s}``), ``ttft_s`` and ``dense_ttft_s``; plus the
    load averages under ``"_timing"``. ``timing``: :func:`compare_decode_speed`'s options."""
    manifest = read_lm_manifest(bundle)
    speed = compare_decode_speed(bundle, precisions=precisions, **timing)
    runs = speed["models"]

    def per(model: str, key: str) -> dict:
        return {p: runs[model][p][key] for p in precisions if p in runs[model]}

    out = {}
    for name, entry in manifest.modes.items():
        out[name] = {"ffn_mac_ratio": entry.facts.get("ffn_mac_ratio"),
                     "greedy_match": entry.facts.get("greedy_match"),
                     "tokens_per_s": per(name, "tokens_per_s"),
                     "dense_tokens_per_s": per(DENSE, "tokens_per_s"),
                     "ttft_s": per(name, "ttft_s"), "dense_ttft_s": per(DENSE, "ttft_s")}
    out["_timing"] = {k: v for k, v in speed.items() if k != "models"}
    return out
