"""The protocol: per seed, pretrain a foundation, specialize every method, measure, write.

arXiv 2602.11726: one foundation per seed (the 0 + 45 deg mixture), every method
adapted from that same foundation to the target mode, each evaluated on every test mode.
MNIST is loaded once and each mode rotated once (``MNISTModes`` caches them).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from taugate.bundle.atomic import write_bytes, write_text
from taugate.lab.experiment.config import ExperimentConfig
from taugate.lab.experiment.figures import accuracy_figure
from taugate.lab.experiment.measures import (
    OnnxScorer,
    gate_batch,
    high_act_frac,
    high_gate_frequency,
    mask_overlap,
)
from taugate.lab.experiment.summary import (
    OVERLAP_COLUMNS,
    RESULT_COLUMNS,
    build_summary,
    to_csv,
)
from taugate.lab.experiment.tables import ablations_table, overlap_table, results_table
from taugate.training.backbone import FoundationConfig
from taugate.training.devices import resolve_device
from taugate.training.families.mlp import MLP
from taugate.training.gating import set_hard
from taugate.training.loop import TrainConfig, accuracy
from taugate.training.pipeline import AdaptConfig, adapt, pretrain_foundation
from taugate.training.sources import MNISTModes

log = logging.getLogger(__name__)

FILES = {
    "results": "results.csv",
    "overlap": "overlap.csv",
    "summary": "summary.json",
    "table1": "tables/mnist_rotation_results.tex",
    "table2": "tables/mnist_rotation_ablations.tex",
    "table3": "tables/taugate_overlap.tex",
    "figure_pdf": "figures/mnist_rotation_accuracy.pdf",
    "figure_png": "figures/mnist_rotation_accuracy.png",
}


@dataclass
class ExperimentResult:
    rows: list[dict]  # results.csv, one per seed x (method, adapt_mode) x eval_mode
    overlap_rows: list[dict]  # overlap.csv, one per seed x hidden layer (extras only)
    summary: dict  # summary.json
    files: dict[str, Path]  # what was written, by the keys of FILES


def run_experiment(config: ExperimentConfig, data: MNISTModes | None = None) -> ExperimentResult:
    """Run every seed, then write results.csv, overlap.csv, summary.json, tables and figure."""
    start = time.perf_counter()
    device = resolve_device(config.device)
    data = data or MNISTModes(config.data)
    log.info("reproduce: %d seed(s) x %d run(s) on %s; out %s", len(config.seeds),
             len(config.runs()), device, config.out)
    rows, overlap_rows = [], []
    for k, seed in enumerate(config.seeds):
        r, o = run_seed(config, data, seed, device, tag=f"seed {seed} ({k + 1}/{len(config.seeds)})")
        rows += r
        overlap_rows += o
    elapsed = time.perf_counter() - start
    summary = build_summary(rows, overlap_rows, config, elapsed, str(device))
    files = write_artifacts(config, rows, overlap_rows, summary)
    log.info("reproduce: done in %.1f s; wrote %s", elapsed, ", ".join(str(p) for p in files.values()))
    return ExperimentResult(rows, overlap_rows, summary, files)


def run_seed(config: ExperimentConfig, data: MNISTModes, seed: int, device, tag: str = ""):
    """One foundation and every (method, adapt_mode) run on it -> (rows, overlap rows)."""
    t0 = time.perf_counter()
    foundation = pretrain_foundation(data, FoundationConfig(
        modes=config.foundation_modes, epochs=config.epochs, batch_size=config.batch_size,
        lr=config.lr, momentum=config.momentum, seed=seed), device, config.progress)
    accs = " ".join(f"{ev} {accuracy(foundation, data.mode(ev).test):.4f}" for ev in config.eval_modes)
    log.info("%s | foundation | acc %s | %.1f s", tag, accs, time.perf_counter() - t0)
    rows, taugate_models = [], {}
    for method, mode in config.runs():
        new, model = run_one(config, data, foundation, seed, method, mode, device, tag)
        rows += new
        if method == "taugate":
            taugate_models[mode] = model
    overlap = []
    if config.extras:
        a, b = config.overlap_mode, config.adapt_mode
        layers = mask_overlap(taugate_models[a], taugate_models[b], _gate_x(config, data, a),
                              _gate_x(config, data, b), config.gate_threshold,
                              config.overlap_min_frac)
        overlap = [{"seed": seed, "layer": r["layer"], "jaccard": r["jaccard"],
                    "jaccard_own": r["jaccard_own"], "units_overlap_mode": r["units_a"],
                    "units_adapt_mode": r["units_b"]} for r in layers]
        log.info("%s | taugate overlap %s vs %s | jaccard %s | own inputs %s", tag, a, b,
                 " ".join(f"L{r['layer']} {r['jaccard']:.3f}" for r in overlap),
                 " ".join(f"L{r['layer']} {r['jaccard_own']:.3f}" for r in overlap))
    return rows, overlap


def run_one(config: ExperimentConfig, data: MNISTModes, foundation: MLP, seed: int, method: str,
            mode: str, device, tag: str = "") -> tuple[list[dict], MLP]:
    """Specialize ``foundation`` to ``mode`` with ``method``; one row per eval mode, and the
    specialized model."""
    t0 = time.perf_counter()
    cfg = AdaptConfig(method, dict(config.method_configs.get(method, {})), TrainConfig(
        config.adapt_epochs, config.batch_size, config.adapt_lr, config.momentum, seed))
    m, model = adapt(foundation, data.mode(mode), cfg, device, config.progress)
    seconds = time.perf_counter() - t0
    params = int(sum(p.numel() for p in m.trainable(model).values()))
    freq = high_gate_frequency(model, _gate_x(config, data, mode), config.gate_threshold)
    frac = high_act_frac(freq) if freq is not None else None
    scorer = None
    if config.onnx:
        hardened = m.harden(model, {"mode": mode, "seed": seed})
        scorer = OnnxScorer(hardened, f"{mode}-{method}")
    rows = []
    for ev in config.eval_modes:
        test = data.mode(ev).test
        soft = accuracy(set_hard(model, False), test)
        hard = accuracy(set_hard(model, True), test)
        set_hard(model, False)
        rows.append({
            "seed": seed, "method": method, "adapt_mode": mode, "eval_mode": ev,
            "accuracy": soft, "hard_accuracy": hard,
            "onnx_accuracy": scorer.accuracy(test) if scorer else None,
            "trainable_params": params, "high_act_frac": frac, "train_seconds": seconds,
        })
    log.info("%s | %s -> %s | %d params | acc %s | hard %s%s | %.1f s", tag, method, mode, params,
             " ".join(f"{r['eval_mode']} {r['accuracy']:.4f}" for r in rows),
             " ".join(f"{r['hard_accuracy']:.4f}" for r in rows),
             f" | high-act {frac:.3f}" if frac is not None else "", time.perf_counter() - t0)
    return rows, model


def _gate_x(config: ExperimentConfig, data: MNISTModes, mode: str):
    """The fixed batch the gate statistics of ``mode`` are computed on (measures.py)."""
    return gate_batch(data.mode(mode).train, config.gate_batch, config.gate_seed)


def write_artifacts(config: ExperimentConfig, rows: list[dict], overlap_rows: list[dict],
                    summary: dict) -> dict[str, Path]:
    """Write every artefact under ``config.out`` (each file atomically)."""
    out = Path(config.out)
    texts = {
        "results": to_csv(rows, RESULT_COLUMNS),
        "table1": results_table(summary),
    }
    if config.extras:
        texts["overlap"] = to_csv(overlap_rows, OVERLAP_COLUMNS)
        texts["table2"] = ablations_table(summary)
        texts["table3"] = overlap_table(summary)
    files = {}
    for key, text in texts.items():
        files[key] = write_text(out / FILES[key], text)
    for fmt, data in accuracy_figure(summary).items():
        files[f"figure_{fmt}"] = write_bytes(out / FILES[f"figure_{fmt}"], data)
    summary["files"] = {k: FILES[k] for k in files} | {"summary": FILES["summary"]}
    files["summary"] = write_text(out / FILES["summary"], json.dumps(summary, indent=2))
    return files
