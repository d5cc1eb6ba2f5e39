"""The one export pipeline: any frozen torch model + one ``GatedSpec`` per mode -> a bundle.

Every family (the paper's mlp, vit, a user's ``--model``) goes through the same steps per mode:
compaction with the pruning guard (exporting/compaction.py), the dense guard against the dense
frozen model on the mode's own test split (exporting/regression.py), lowering with parity
checks (exporting/lowering.py), int8 variants checked against fp32 (exporting/variants.py), and
the one writer (exporting/writer.py) in the chosen layout:

- ``shared`` (the default): the foundation's weights are stored once (``backbone.safetensors``)
  and each mode stores only its kept indices, thresholds, gains and overrides (kilobytes); the
  runtime materializes each mode's compacted weights from them, bit for bit the standalone ones.
- ``standalone``: every graph carries its own weights (one self-contained ONNX file per mode).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
from torch import nn

from taugate.bundle.names import check_mode_name
from taugate.bundle.schema import PRECISIONS, InputSpec, OutputSpec
from taugate.exporting.compact import linear_macs
from taugate.exporting.compaction import CompactedMode, accuracy_of, compact_mode, logits
from taugate.exporting.factored import fold_spec
from taugate.exporting.lowering import (
    as_feed,
    export_onnx,
    graph_bytes,
    lower_checked,
    lowered_model,
    shared_graph,
    state_of,
)
from taugate.exporting.norms import folded_foundation
from taugate.exporting.prune import PruneConfig
from taugate.exporting.quantize import DEFAULT_SCHEME, SCHEMES
from taugate.exporting.regression import DenseComparison, check_not_worse
from taugate.exporting.weightless import GraphExport
from taugate.exporting.writer import BundleMode, write_bundle_v2
from taugate.spec import GatedSpec
from taugate.training.families import family_of

log = logging.getLogger(__name__)

LAYOUTS = ("shared", "standalone")
DEFAULT_LAYOUT = "shared"


@dataclass
class PrecisionConfig:
    """Which precision variants are written beside the fp32 graphs (always written)."""

    precisions: tuple[str, ...] = ("fp32",)
    quantization: str = DEFAULT_SCHEME  # taugate.exporting.quantize.SCHEMES
    calibration_rows: int = 2000  # calibration rows the static scheme reads (per mode)

    def __post_init__(self) -> None:
        self.precisions = tuple(self.precisions)
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad or not self.precisions:
            raise ValueError(f"precision: expected a comma-separated subset of "
                             f"{', '.join(PRECISIONS)}, got {','.join(self.precisions) or '(none)'}")
        if self.quantization not in SCHEMES:
            raise ValueError(f"quantization: expected one of {', '.join(SCHEMES)}, got "
                             f"{self.quantization!r}")
        if int(self.calibration_rows) != self.calibration_rows or self.calibration_rows < 1:
            raise ValueError(f"calibration_rows: expected an integer >= 1, got "
                             f"{self.calibration_rows}")

    @property
    def int8(self) -> bool:
        return "int8" in self.precisions


@dataclass
class ExportConfig:
    """Everything ``taugate export`` decides. ``prune.max_accuracy_drop`` is the one limit of
    the three guards (pruned vs unpruned, mode vs dense, int8 vs fp32)."""

    layout: str = DEFAULT_LAYOUT  # "shared" | "standalone"
    prune: PruneConfig = field(default_factory=PruneConfig)
    allow_worse: bool = False  # a mode worse than dense: exported with a warning, not refused
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    overwrite: bool = False
    modes: tuple[str, ...] | None = None  # None: every mode of the run

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout: expected one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if isinstance(self.prune, dict):
            self.prune = PruneConfig(**self.prune)
        if isinstance(self.precision, dict):
            self.precision = PrecisionConfig(**self.precision)
        if not isinstance(self.prune, PruneConfig):
            raise TypeError(f"prune: expected a PruneConfig, got {type(self.prune).__name__}")
        if not isinstance(self.precision, PrecisionConfig):
            raise TypeError(f"precision: expected a PrecisionConfig, got "
                            f"{type(self.precision).__name__}")
        if self.modes is not None:
            self.modes = tuple(self.modes)
            if not self.modes:
                raise ValueError("modes: expected at least one mode name, or None for all")
            for m in self.modes:
                check_mode_name(m)

    @property
    def max_accuracy_drop(self) -> float:
        return self.prune.max_accuracy_drop


@dataclass
class ModeInput:
    """What export needs of one mode."""

    spec: GatedSpec
    calibration: tuple  # (x, y) tensors: decides which units are kept
    test: tuple  # (x, y) tensors: the guards and the manifest's accuracies
    method: str = "taugate"
    facts: dict = field(default_factory=dict)
    data_mode: str | None = None  # the source's mode name (default: the bundle's)
    hard_model: Callable[[], nn.Module] | None = None  # the trained hard-gated model: checked
    soft_model: Callable[[], nn.Module] | None = None  # the trained smooth-gate model: measured


@dataclass
class ModeReport:
    """What the export and demo commands print per mode."""

    name: str
    method: str
    compacted: CompactedMode
    entry: dict  # the manifest entry's facts
    macs: int
    onnx_max_diff: float
    boundary_samples: int = 0  # parity samples left out: a gate within BOUNDARY_MARGIN of t
    soft_accuracy: float | None = None  # the trained model, smooth gates (when given)
    hard_accuracy: float | None = None  # the trained model, hard gates (when given)
    warning: str | None = None  # --allow-worse let a worse-than-dense mode through

    @property
    def units(self) -> str:
        return self.compacted.units

    @property
    def test_accuracy(self) -> float:
        return self.compacted.test_accuracy

    @property
    def dense_accuracy(self) -> float:
        return self.compacted.dense_test_accuracy


def _numpy(split) -> tuple[np.ndarray, np.ndarray]:
    x, y = split
    return as_feed(x.numpy()), y.numpy()


def export_mode(name: str, foundation: nn.Module, mode: ModeInput, config: ExportConfig,
                foundation_state: dict, input_name: str, output_name: str,
                parity_samples: int = 256) -> tuple[BundleMode, ModeReport]:
    """One mode: compact, guard, lower, quantize; its bundle entry and its report."""
    from taugate.exporting.variants import int8_variant

    check_mode_name(name)
    c = compact_mode(name, foundation, mode.spec, mode.calibration, mode.test, config.prune)
    warnings = check_not_worse([DenseComparison(name, c.test_accuracy, c.dense_test_accuracy)],
                               config.max_accuracy_drop, config.allow_worse)
    for w in warnings:
        log.warning(w)
    exact = config.prune.below == 0
    reference = mode.hard_model() if mode.hard_model is not None and exact else None
    cal_x = mode.calibration[0]
    fast, mode_tensors = lowered_model(c.small, c.plan, mode.spec, foundation_state)
    proto, diff, boundary = lower_checked(name, c.small, cal_x[:parity_samples], input_name,
                                          output_name, reference, lowered=fast)
    data_mode = mode.data_mode or name
    entry = {
        "method": mode.method, "facts": dict(mode.facts), "data_mode": data_mode,
        "units_kept": c.units_kept, "units_total": c.units_total,
        "kept_indices": c.kept_indices, "macs": linear_macs(c.small, cal_x),
        "dense_test_accuracy": c.dense_test_accuracy,
        "calibration_accuracy": c.calibration_accuracy, "test_accuracy": c.test_accuracy,
        "unpruned_test_accuracy": c.unpruned_test_accuracy, "precision": "fp32",
        # every unit's firing rate on the mode's test set, pruned units included: what the
        # report's "which units fire" heat map draws
        "test_firing_rates": [np.round(r, 5).tolist() for r in c.test_firing_rates],
    }
    variants = {}
    if config.precision.int8:
        log.info("int8 variant of %s (%s)", name, config.precision.quantization)
        variants["int8"] = int8_variant(
            name, graph_bytes(export_onnx(c.small, cal_x, input_name, output_name), name),
            {data_mode: _numpy(mode.test)},
            config.max_accuracy_drop, config.precision.quantization,
            cal_x[: config.precision.calibration_rows].numpy())  # quantize() casts
    if config.layout == "shared":
        graph = shared_graph(proto, fast, c.plan, mode.spec, foundation_state, mode_tensors)
        # per-unit facts stay out of a shared bundle's manifest: the kept indices are in the
        # mode's own file, and a thousand modes must not cost more than the backbone
        for key in ("kept_indices", "test_firing_rates"):
            entry.pop(key)
    else:
        graph = GraphExport(proto)
    test_x, test_y = mode.test
    soft = hard = None
    if mode.soft_model is not None:
        soft = accuracy_of(logits(mode.soft_model(), test_x), test_y)
    if mode.hard_model is not None:
        hard = accuracy_of(logits(reference or mode.hard_model(), test_x), test_y)
    report = ModeReport(name, mode.method, c, entry, entry["macs"], diff, boundary, soft, hard,
                        warnings[0] if warnings else None)
    return BundleMode(graph, entry, variants), report


def export_modes(out: str | Path, foundation: nn.Module, modes: dict[str, ModeInput], *,
                 family: str, input_spec: InputSpec, output_spec: OutputSpec,
                 config: ExportConfig | None = None) -> tuple[Path, list[ModeReport]]:
    """Write a bundle of ``foundation`` (dense) and every mode; returns (path, reports).

    ``input_spec`` / ``output_spec``: the model's input and output (bundle/schema.py); their
    ``name`` become the graphs' input and output names. Modes are exported one at a time (a
    mode's standalone graph is dropped once written); any refusal leaves nothing written."""
    from taugate.exporting.variants import int8_variant

    config = config or ExportConfig()
    if not modes:
        raise ValueError("modes: expected at least one mode to export")
    for name in modes:
        check_mode_name(name)  # before any work
    foundation, fold = family_of(foundation).for_export(foundation.eval())
    foundation = folded_foundation(foundation, [m.spec for m in modes.values()])
    state = state_of(foundation)
    modes = {name: replace(m, spec=fold_spec(m.spec, fold, state)) for name, m in modes.items()}
    in_name, out_name = input_spec.name, output_spec.name
    first = next(iter(modes.values()))
    example = first.calibration[0]
    dense_proto = export_onnx(foundation, example, in_name, out_name)
    dense = (shared_graph(dense_proto, foundation, {}, None, state) if config.layout == "shared"
             else GraphExport(dense_proto))
    dense_acc: dict = {}
    dense_entry = {"macs": linear_macs(foundation, example),
                   "units": [t.units for t in first.spec.targets], "test_accuracy": dense_acc}
    dense_variants: dict = {}
    reports: list[ModeReport] = []

    def exported():
        tests, cals = {}, []
        for name, mode in modes.items():
            bundle_mode, report = export_mode(name, foundation, mode, config, state, in_name,
                                              out_name)
            dense_acc[name] = report.dense_accuracy
            reports.append(report)
            if config.precision.int8:
                tests[name] = _numpy(mode.test)
                cals.append(mode.calibration[0][: config.precision.calibration_rows].numpy())
            yield name, bundle_mode
        if config.precision.int8:  # read by the writer after the last mode
            dense_variants["int8"] = int8_variant(
                "dense", graph_bytes(dense_proto, "dense"), tests, config.max_accuracy_drop,
                config.precision.quantization, np.concatenate(cals),
                per_mode=True)

    targets = [t.producer for t in first.spec.targets]
    path = write_bundle_v2(out, family=family, input_spec=input_spec, output_spec=output_spec,
                           dense=dense, dense_entry=dense_entry, modes=exported(),
                           targets=targets, overwrite=config.overwrite,
                           dense_variants=dense_variants)
    return path, reports


def run_modes(run) -> dict[str, ModeInput]:
    """The modes of a run read by ``taugate.training.loaded.load_run``."""
    from taugate.training.gating import set_hard

    def soft(m):
        import copy

        from taugate.training.gating import clear_gates

        def build():
            clear_gates(m.adapter.model)
            return set_hard(copy.deepcopy(m.adapter.model), False).eval().cpu()
        return build

    return {name: ModeInput(m.spec, m.calibration, m.test, m.method, dict(m.facts),
                            data_mode=m.adapter.meta.get("mode", {}).get("name", name),
                            hard_model=m.hard_model, soft_model=soft(m))
            for name, m in run.modes.items()}


def export_run(run_dir: str | Path, out: str | Path, config: ExportConfig | None = None,
               data_root: str | None = None, foundation: nn.Module | None = None
               ) -> tuple[Path, list[ModeReport]]:
    """Export a run written by ``taugate train`` (any family) to a bundle at ``out``; the
    calibration and test splits come from the run's own mode source (``data_root``: where it
    lives now, when it moved). ``foundation``: the run's model, when it was given from Python."""
    from taugate.training.loaded import load_run

    config = config or ExportConfig()
    run = load_run(run_dir, data_root, list(config.modes) if config.modes else None, foundation)
    return export_modes(out, run.foundation, run_modes(run), family=run.family,
                        input_spec=run.input_spec, output_spec=run.output_spec, config=config)
