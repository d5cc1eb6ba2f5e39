"""The paper's experiment (arXiv 2602.11726, Tables 1-3 and Figure 1): seeds x methods.

``run_experiment(ExperimentConfig(...))`` is what ``taugate reproduce`` calls. Per seed it
pretrains one foundation (``FoundationConfig(seed=seed)``, 2 epochs on the 0 + 45 deg mixture),
specializes every method to ``adapt_mode`` (rot45) for 1 epoch, and evaluates each specialized
model on every ``eval_modes`` test set (rot0, rot45). With ``extras`` it also runs the ablations
(GainOnly, TauOnly) and TauGate specialized to ``overlap_mode`` (rot0) for Table 3.

Artefacts under ``out`` (names and columns are stable; the report generator reads them):

``results.csv``  one row per seed x (method, adapt_mode) x eval_mode:
    seed, method (a METHODS name), adapt_mode (the mode trained on; Frozen: the target mode,
    untrained), eval_mode (the test set), accuracy (torch, as trained: soft gates),
    hard_accuracy (torch, hard gates; equal to accuracy for ungated methods), onnx_accuracy
    (the hardened model's ONNX graph through onnxruntime; empty with ``onnx=False``),
    trainable_params, high_act_frac (empty for ungated methods), train_seconds.
``overlap.csv``  (extras) one row per seed x hidden layer: seed, layer (1-based), jaccard
    (the two TauGate models' masks on shared inputs), jaccard_own (each on its own mode's
    inputs), units_overlap_mode, units_adapt_mode (shared-input mask sizes).
``summary.json``  format "taugate-reproduce-summary", format_version 1, created_by, paper,
    config (every ExperimentConfig field + device_used), elapsed_seconds, adapt_mode, eval_modes,
    methods[method][adapt_mode] = {label, trainable_params, high_act_frac, train_seconds,
    accuracy[eval_mode], hard_accuracy[eval_mode], onnx_accuracy[eval_mode]} where each
    statistic is {mean, std, n} (std: sample std over seeds, ddof=1; 0 for one seed) or null;
    overlap = null or {method, modes, gate_threshold, min_frac, gate_batch,
    layers: [{layer, jaccard: {mean, std, n}, jaccard_own: {...}}],
    average: {jaccard: {...}, jaccard_own: {...}}}; paper_reference (the paper's
    numbers); files (artefact key -> path relative to ``out``).
``tables/mnist_rotation_results.tex`` (Table 1), ``tables/mnist_rotation_ablations.tex``
    (Table 2, extras), ``tables/taugate_overlap.tex`` (Table 3, extras),
``figures/mnist_rotation_accuracy.{pdf,png}`` (Figure 1).

High-act frac and the overlap are defined in ``measures.py``.
"""

from __future__ import annotations

from taugate.lab.experiment.config import ExperimentConfig
from taugate.lab.experiment.protocol import FILES, ExperimentResult, run_experiment
from taugate.lab.experiment.summary import OVERLAP_COLUMNS, RESULT_COLUMNS

__all__ = ["FILES", "OVERLAP_COLUMNS", "RESULT_COLUMNS", "ExperimentConfig", "ExperimentResult",
           "run_experiment"]
