"""Decode speed against the kept fraction of FFN units: one LM bundle with a
mode per kept fraction, each timed side by side with the dense model (fp32 and int8, batch 1
and 8), plus time to first token and memory; and the figure of tokens/s against the fraction.

The modes are synthetic: the foundation wrapped by the taugate method with exactly
``round(kept * ffn)`` units of every FFN given a non-zero gain (chosen at random, seeded), so
the compaction keeps exactly those; thresholds are random, so each mode's graph carries its
hard gates as a trained mode's does. Speed depends on the shapes, not on what the units learned.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DEFAULT_FRACTIONS = (1.0, 0.5, 0.33, 0.25, 0.15)


def mode_name(kept: float) -> str:
    """``kept0p33`` for 0.33 (a valid mode name)."""
    return "kept" + f"{kept:.2f}".replace(".", "p")


def kept_modes(foundation, fractions=DEFAULT_FRACTIONS, seed: int = 0) -> dict:
    """Per fraction (0 < f <= 1), the foundation wrapped by the taugate method keeping exactly
    ``round(f * width)`` units of each FFN (the others' gains 0), by :func:`mode_name`."""
    import torch

    from taugate.training.gating import gate_modules
    from taugate.training.methods.taugate import TauGate

    bad = [f for f in fractions if isinstance(f, bool) or not 0 < f <= 1]
    if not fractions or bad:
        raise ValueError(f"fractions: expected numbers in (0, 1], got {list(fractions)}")
    g = torch.Generator().manual_seed(seed)
    modes = {}
    for kept in fractions:
        wrapped = TauGate().wrap(foundation)
        with torch.no_grad():
            for _, act in gate_modules(wrapped):
                act.tau.copy_(torch.randn(act.width, generator=g) * 0.3)
                gain = torch.zeros(act.width)
                keep = torch.randperm(act.width, generator=g)[:max(1, round(kept * act.width))]
                gain[keep] = torch.rand(len(keep), generator=g) + 0.5
                act.gain.copy_(gain)
        modes[mode_name(kept)] = wrapped.eval()
    return modes


_RSS_PROBE = """
import json, os, sys
from taugate.runtime.generate import Generator

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

bundle, model, precision = sys.argv[1:4]
before = rss()
Generator.open(bundle, model, precision).decode_speed("memory", 8)
print(json.dumps(rss() - before))
"""


def rss_delta(bundle: str | Path, model: str, precision: str) -> int | None:
    """Resident growth of a fresh Python process (onnxruntime already imported) when it opens
    ``model`` in ``precision`` and decodes 8 tokens; None where ``/proc`` is missing."""
    if not Path("/proc/self/statm").exists():
        return None
    done = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(bundle), model, precision],
                          capture_output=True, text=True, timeout=300, check=True)
    return int(done.stdout.strip().splitlines()[-1])


def memory(bundle: str | Path, models, precisions) -> dict:
    """Per model and precision: ``graph_bytes`` (the graph file: its weights, what a batch-1
    step reads) and ``rss_delta_bytes`` (:func:`rss_delta`: the session, its prepacked
    weights and one generation's cache)."""
    from taugate.runtime.generate import read_lm_manifest

    manifest = read_lm_manifest(bundle)
    out = {}
    for m in models:
        for p in precisions:
            ref = manifest.entry(m).graphs[p]
            out.setdefault(m, {})[p] = {"graph_bytes": (Path(bundle) / ref.file).stat().st_size,
                                        "rss_delta_bytes": rss_delta(bundle, m, p)}
    return out


def measure(bundle: str | Path, batches=(1, 8), precisions=("fp32", "int8"), rounds: int = 5,
            new_tokens: int = 64, prompt: str | None = None) -> dict:
    """Every model of ``bundle`` (dense and each mode), side by side: per batch the
    interleaved timings of :func:`~taugate.runtime.lm_speed.compare_decode_speed`, the
    manifest's FFN facts and :func:`memory`. ``prompt``: default ``DEFAULT_PROMPT``
    (taugate/runtime/lm_speed.py)."""
    from taugate.runtime.generate import read_lm_manifest
    from taugate.runtime.lm_speed import DEFAULT_PROMPT, compare_decode_speed

    manifest = read_lm_manifest(bundle)
    models = ["dense", *sorted(manifest.modes)]
    facts = {m: {k: manifest.entry(m).facts.get(k) for k in
                 ("ffn_units", "ffn_macs", "ffn_mac_ratio", "units_kept", "units_total",
                  "greedy_match")}
             for m in models}
    speed = {f"batch{b}": compare_decode_speed(bundle, precisions=precisions, batch=b,
                                               rounds=rounds, new_tokens=new_tokens,
                                               prompt=prompt or DEFAULT_PROMPT)
             for b in batches}
    return {"facts": facts, "speed": speed, "speedup": speedups(speed),
            "step_fit": step_fit(facts, speed), "memory": memory(bundle, models, precisions)}


def step_fit(facts: dict, speed: dict) -> dict:
    """Per batch and precision, the modes' median step time fitted as ``fixed_us +
    us_per_mffn_mac * FFN MMACs`` (least squares; the dense model has no gates, so it is left
    out): ``fixed_us`` is what a step costs besides the FFN (attention, norms, the head, node
    dispatch, the Python loop), the bound on any speedup from removing FFN units."""
    import numpy as np

    modes = [m for m in facts if m != "dense" and facts[m].get("ffn_macs")]
    out: dict = {}
    if len(modes) < 2:
        return out
    for panel, run in speed.items():
        batch = run["batch"]
        for p in run["models"]["dense"]:
            x = np.array([facts[m]["ffn_macs"] / 1e6 for m in modes])
            y = np.array([1e6 * batch / run["models"][m][p]["tokens_per_s_median_step"]
                          for m in modes])
            slope, fixed = np.polyfit(x, y, 1)
            out.setdefault(panel, {})[p] = {"fixed_us": round(float(fixed), 1),
                                            "us_per_mffn_mac": round(float(slope), 2)}
    return out


def speedups(speed: dict) -> dict:
    """Per batch, model and precision: its tokens/s over the dense model's (``tokens_per_s``
    and ``tokens_per_s_median_step``), rounded to 3 places."""
    out: dict = {}
    for panel, run in speed.items():
        dense = run["models"]["dense"]
        for m, cells in run["models"].items():
            for p, cell in cells.items():
                out.setdefault(panel, {}).setdefault(m, {})[p] = {
                    k: round(cell[k] / dense[p][k], 3)
                    for k in ("tokens_per_s", "tokens_per_s_median_step")}
    return out


def kept_fraction(facts: dict, dense_units: int) -> float:
    units = facts.get("units_kept")
    return 1.0 if units is None else sum(units) / dense_units


def plot(result: dict, path: str | Path, key: str = "tokens_per_s") -> Path:
    """tokens/s against the kept FFN fraction, one panel per batch: each precision's modes as
    points on a line, its dense model as a horizontal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    facts = result["facts"]
    dense_units = sum(facts["dense"]["ffn_units"])
    modes = sorted((m for m in facts if m != "dense"),
                   key=lambda m: kept_fraction(facts[m], dense_units))
    panels = sorted(result["speed"])
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4), squeeze=False)
    colors = {"fp32": "tab:blue", "int8": "tab:orange"}
    for ax, panel in zip(axes[0], panels):
        runs = result["speed"][panel]["models"]
        for p, color in colors.items():
            if p not in runs["dense"]:
                continue
            xs = [kept_fraction(facts[m], dense_units) for m in modes]
            ax.plot(xs, [runs[m][p][key] for m in modes], "o-", color=color,
                    label=f"modes, {p}")
            ax.axhline(runs["dense"][p][key], color=color, ls="--", label=f"dense, {p}")
        ax.set_xlabel("kept FFN fraction")
        ax.set_ylabel("decode tokens/s (1 thread)")
        ax.set_title(f"{panel.replace('batch', 'batch ')}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    lm, load = result.get("lm") or {}, result["speed"][panels[0]].get("load_before")
    if lm:
        fig.suptitle(f"{result.get('source', '')}: dim {lm['dim']}, {lm['layers']} layers, FFN "
                     f"{lm['ffn']}; load average {load[0] if load else '?'}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
