"""Per-run rows -> CSV text and the aggregated ``summary.json`` dict (pure; no disk access).

Column and key names are a contract with the report generator: see the package docstring.
"""

from __future__ import annotations

import csv
import io
import math

import numpy as np

from taugate import __version__
from taugate.lab.experiment.config import PAPER, ExperimentConfig, method_label

RESULT_COLUMNS = (
    "seed", "method", "adapt_mode", "eval_mode", "accuracy", "hard_accuracy", "onnx_accuracy",
    "trainable_params", "high_act_frac", "train_seconds",
)
OVERLAP_COLUMNS = ("seed", "layer", "jaccard", "jaccard_own", "units_overlap_mode",
                   "units_adapt_mode")
SUMMARY_FORMAT = "taugate-reproduce-summary"
SUMMARY_VERSION = 1


def to_csv(rows: list[dict], columns: tuple[str, ...]) -> str:
    """CSV text with ``columns`` in order; None becomes an empty cell, floats keep 6 digits."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in columns})
    return buf.getvalue()


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6f}"
    return v


def stats(values) -> dict | None:
    """``{"mean", "std", "n"}`` over seeds; std is the sample std (ddof=1), 0 for one value."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return None
    std = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
    return {"mean": float(np.mean(vals)), "std": std, "n": len(vals)}


def aggregate_runs(rows: list[dict], config: ExperimentConfig) -> dict:
    """``{method: {adapt_mode: {...}}}``: accuracies per eval mode, params, high-act frac."""
    out: dict = {}
    for method, adapt_mode in config.runs():
        mine = [r for r in rows if r["method"] == method and r["adapt_mode"] == adapt_mode]
        if not mine:
            continue
        entry = {
            "label": method_label(method, config.method_configs.get(method)),
            "trainable_params": int(mine[0]["trainable_params"]),
            "high_act_frac": stats(r["high_act_frac"] for r in mine if r["eval_mode"] == mine[0]["eval_mode"]),
            "train_seconds": stats(r["train_seconds"] for r in mine if r["eval_mode"] == mine[0]["eval_mode"]),
        }
        for key in ("accuracy", "hard_accuracy", "onnx_accuracy"):
            entry[key] = {ev: stats(r[key] for r in mine if r["eval_mode"] == ev)
                          for ev in config.eval_modes}
        out.setdefault(method, {})[adapt_mode] = entry
    return out


def aggregate_overlap(overlap_rows: list[dict], config: ExperimentConfig) -> dict | None:
    """Per hidden layer and averaged over layers (per seed, then over seeds)."""
    if not overlap_rows:
        return None
    layers = sorted({r["layer"] for r in overlap_rows})
    seeds = [s for s in config.seeds if any(r["seed"] == s for r in overlap_rows)]

    def average(key: str) -> dict | None:  # mean over layers per seed, then over seeds
        return stats(np.mean([r[key] for r in overlap_rows if r["seed"] == s]) for s in seeds)

    return {
        "method": "taugate",
        "modes": [config.overlap_mode, config.adapt_mode],
        "gate_threshold": config.gate_threshold,
        "min_frac": config.overlap_min_frac,
        "gate_batch": config.gate_batch,
        "layers": [
            {"layer": layer,
             **{key: stats(r[key] for r in overlap_rows if r["layer"] == layer)
                for key in ("jaccard", "jaccard_own")}}
            for layer in layers
        ],
        "average": {key: average(key) for key in ("jaccard", "jaccard_own")},
    }


def build_summary(rows: list[dict], overlap_rows: list[dict], config: ExperimentConfig,
                  elapsed: float, device: str) -> dict:
    """Everything the tables, the figure and the report generator need."""
    return {
        "format": SUMMARY_FORMAT,
        "format_version": SUMMARY_VERSION,
        "created_by": f"taugate {__version__}",
        "paper": "arXiv 2602.11726",
        "config": {**config.to_dict(), "device_used": device},
        "elapsed_seconds": round(float(elapsed), 3),
        "adapt_mode": config.adapt_mode,
        "eval_modes": list(config.eval_modes),
        "methods": aggregate_runs(rows, config),
        "overlap": aggregate_overlap(overlap_rows, config),
        "paper_reference": PAPER,
    }
