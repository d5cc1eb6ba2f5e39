"""Export any frozen torch model + one ``GatedSpec`` per mode to a format 2 bundle.

Per mode: hard-gate (:func:`taugate.exporting.compact.hard_gated`), count firing on the
calibration split, compact, export to ONNX, check parity (compacted vs hard-gated predictions on
the calibration split identical; ONNX vs torch logits within ``1e-4``), measure accuracies, and
describe each initializer as a recipe on the shared backbone (the foundation's state dict, stored
once), so the bundle stores per mode only kept indices, thresholds, gains and overrides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from taugate.bundle.names import check_mode_name
from taugate.exporting.compact import (
    Surgery,
    compact,
    export_onnx,
    firing_counts,
    gate_margins,
    hard_gated,
    keep_masks,
    linear_macs,
)
from taugate.exporting.weightless import GraphExport, Recipe
from taugate.exporting.writer import BundleMode, write_bundle_v2
from taugate.spec import GatedSpec
from taugate.summaries import top1

ONNX_TOLERANCE = 1e-4  # max abs logit difference, ONNX vs the torch hard-gated model
# A gate decides z > t; torch and onnxruntime sum z in different orders (float32 rounding,
# ~1e-7 on these layers), so a sample with some |z - t| below this can flip a gate in either
# one: parity is measured on the other samples, and their count is reported.
BOUNDARY_MARGIN = 1e-5


class ParityError(AssertionError):
    """An exported graph does not compute what the torch model computes (an exporter bug)."""


@dataclass
class GatedMode:
    """What export needs of one mode."""

    spec: GatedSpec
    calibration: tuple  # (x, y) tensors: decides which units are kept
    test: tuple  # (x, y) tensors: accuracies reported in the manifest
    method: str = "taugate"
    facts: dict = field(default_factory=dict)
    hard_model: object = None  # optional () -> nn.Module: the trained hard-gated model, checked


@dataclass
class GatedReport:
    name: str
    entry: dict  # the manifest entry's facts
    onnx_max_diff: float
    boundary_samples: int = 0  # parity samples left out: a gate within BOUNDARY_MARGIN of t


def _index_tensor(idx: np.ndarray, size: int) -> np.ndarray:
    """Kept indices in the smallest form (bundle size): a packed uint8 bit mask over the axis,
    or a list in the smallest integer type that holds them."""
    if (size + 7) // 8 < 2 * len(idx):
        mask = np.zeros(size, np.uint8)
        mask[idx] = 1
        return np.packbits(mask)
    for dtype in (np.int16, np.int32):
        if size <= np.iinfo(dtype).max:
            return idx.astype(dtype)
    return idx.astype(np.int64)


def _state(model: nn.Module) -> dict:
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def shared_graph(proto, small: nn.Module, plan: dict[str, Surgery], spec: GatedSpec | None,
                 foundation_state: dict) -> GraphExport:
    """``proto`` with a recipe per state-dict initializer of ``small`` (docs/bundle-v2.md 4)."""
    overrides = spec.overrides if spec is not None else {}
    tensors, recipes, backbone = {}, {}, {}
    sizes = {k: v.shape for k, v in foundation_state.items()}
    for path, s in plan.items():
        if s.rows is not None:
            tensors[f"keep.{path}"] = _index_tensor(s.rows, sizes[f"{path}.weight"][0])
            if s.gated:
                tensors[f"t.{path}"] = s.threshold.astype(np.float32)
        if s.cols is not None and not np.all(s.gain == 1):
            tensors[f"gain.{s.cols_from}"] = s.gain.astype(np.float32)
    for key, value in small.state_dict().items():
        path, _, leaf = key.rpartition(".")
        s = plan.get(path)
        if s is not None and s.gated and leaf == "threshold":
            recipes[key] = Recipe("mode", f"t.{path}")
            continue
        if key in overrides:
            source, tensor = "mode", f"override.{key}"
            tensors[tensor] = np.ascontiguousarray(overrides[key], dtype=value.numpy().dtype)
        elif key in foundation_state:
            source, tensor = "backbone", key
            backbone[key] = foundation_state[key]
        else:
            continue  # not a foundation tensor: stays inside the graph
        take, scale = [], None
        if s is not None and s.rows is not None and leaf in ("weight", "bias"):
            take.append((0, f"keep.{path}"))
        if s is not None and s.cols is not None and leaf == "weight":
            take.append((1, f"keep.{s.cols_from}"))
            if f"gain.{s.cols_from}" in tensors:
                scale = (1, f"gain.{s.cols_from}")
        recipes[key] = Recipe(source, tensor, tuple(take), scale)
    return GraphExport(proto, recipes, tensors, backbone)


def _logits(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return top1(logits, y) if len(y) else float("nan")


def onnx_max_diff(proto, model: nn.Module, x: torch.Tensor, input_name: str) -> float:
    """Max abs difference of the ONNX graph's outputs and the torch model's, on ``x``
    (0 when ``x`` is empty)."""
    if not len(x):
        return 0.0
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(proto.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    got = sess.run(None, {input_name: x.numpy().astype(np.float32)})[0]
    return float(np.abs(got - _logits(model, x).numpy()).max())


def export_mode(name: str, foundation: nn.Module, mode: GatedMode, foundation_state: dict,
                input_name: str, output_name: str, parity_samples: int = 256
                ) -> tuple[GraphExport, GatedReport]:
    """Compact one mode, check parity, and describe it for the bundle."""
    spec, (cal_x, cal_y), (test_x, test_y) = mode.spec, mode.calibration, mode.test
    hard = hard_gated(foundation, spec)
    masks = keep_masks(spec, firing_counts(hard, spec, cal_x))
    small, plan = compact(foundation, spec, masks)
    hard_cal, small_cal = _logits(hard, cal_x), _logits(small, cal_x)
    if not torch.equal(hard_cal.argmax(1), small_cal.argmax(1)):
        raise ParityError(f"{name}: the compacted model's calibration predictions differ from "
                          f"the hard-gated model's (max abs logit diff "
                          f"{float((hard_cal - small_cal).abs().max()):.3g})")
    proto = export_onnx(small, cal_x, input_name, output_name)
    probe = cal_x[:parity_samples]
    clear = gate_margins(hard, probe) > BOUNDARY_MARGIN
    if not clear.any():
        raise ParityError(f"{name}: every parity sample has a gate within {BOUNDARY_MARGIN:g} "
                          f"of its threshold: parity cannot be judged")
    probe = probe[clear]
    diff = onnx_max_diff(proto, hard, probe, input_name)
    if not diff <= ONNX_TOLERANCE:
        raise ParityError(f"{name}: ONNX vs torch hard-gated logits differ by {diff:.3g} > "
                          f"{ONNX_TOLERANCE:g}")
    if mode.hard_model is not None:  # the spec must describe what training produced
        ref = mode.hard_model()
        ref_diff = onnx_max_diff(proto, ref, probe, input_name)
        if not ref_diff <= ONNX_TOLERANCE:
            raise ParityError(f"{name}: the exported graph differs from the trained hard-gated "
                              f"model by {ref_diff:.3g} > {ONNX_TOLERANCE:g} on the calibration "
                              f"split: the mode's GatedSpec does not describe its model")
        diff = max(diff, ref_diff)
    units_total = [t.units for t in spec.targets]
    entry = {
        "method": mode.method, "facts": dict(mode.facts),
        "units_kept": [int(m.sum()) for m in masks], "units_total": units_total,
        "kept_indices": [np.flatnonzero(m).tolist() for m in masks],
        "macs": linear_macs(small, cal_x),
        "dense_test_accuracy": _accuracy(_logits(foundation.eval(), test_x), test_y),
        "calibration_accuracy": _accuracy(small_cal, cal_y),
        "test_accuracy": _accuracy(_logits(small, test_x), test_y),
        "unpruned_test_accuracy": _accuracy(_logits(hard, test_x), test_y),
        "precision": "fp32",
    }
    graph = shared_graph(proto, small, plan, spec, foundation_state)
    return graph, GatedReport(name, entry, diff, int((~clear).sum()))


def export_gated_bundle(out: str | Path, foundation: nn.Module, modes: dict[str, GatedMode], *,
                        family: str, input_spec: dict, output_spec: dict, shared: bool = True,
                        overwrite: bool = False) -> tuple[Path, list[GatedReport]]:
    """Write a format 2 bundle of ``foundation`` (dense) and every mode; returns (path, reports).

    ``input_spec`` / ``output_spec``: the manifest's ``input`` / ``output`` objects; their
    ``name`` become the graph's input and output names. ``shared``: shared-backbone graphs
    (default); False writes every graph self-contained.
    """
    if not modes:
        raise ValueError("modes: expected at least one mode to export")
    for name in modes:
        check_mode_name(name)  # before any work
    foundation = foundation.eval()
    state = _state(foundation)
    in_name, out_name = input_spec["name"], output_spec["name"]
    first = next(iter(modes.values()))
    example = first.calibration[0]
    dense_proto = export_onnx(foundation, example, in_name, out_name)
    dense = (shared_graph(dense_proto, foundation, {}, None, state) if shared
             else GraphExport(dense_proto))
    dense_acc: dict = {}
    dense_entry = {"macs": linear_macs(foundation, example),
                   "units": [t.units for t in first.spec.targets], "test_accuracy": dense_acc}
    reports: list[GatedReport] = []

    def exported():  # one mode at a time: its standalone graph is dropped once written
        for name, mode in modes.items():
            graph, report = export_mode(name, foundation, mode, state, in_name, out_name)
            if not shared:
                graph = GraphExport(graph.proto)
            else:  # the kept indices are in the mode's file: keep the manifest small
                report.entry.pop("kept_indices")
            dense_acc[name] = report.entry["dense_test_accuracy"]
            reports.append(report)
            yield name, BundleMode(graph, report.entry)

    targets = [t.producer for t in first.spec.targets]
    path = write_bundle_v2(out, family=family, input_spec=input_spec, output_spec=output_spec,
                           dense=dense, dense_entry=dense_entry, modes=exported(),
                           targets=targets, overwrite=overwrite)
    return path, reports


def export_run_bundle(run, out: str | Path, *, shared: bool = True, overwrite: bool = False
                      ) -> tuple[Path, list[GatedReport]]:
    """Export a run read by ``taugate.training.loaded.load_run`` (any family) to a bundle."""
    modes = {name: GatedMode(m.spec, m.calibration, m.test, m.method, dict(m.facts),
                             hard_model=m.hard_model)
             for name, m in run.modes.items()}
    return export_gated_bundle(out, run.foundation, modes, family=run.family,
                               input_spec=run.input_spec.to_dict(),
                               output_spec=run.output_spec.to_dict(),
                               shared=shared, overwrite=overwrite)
