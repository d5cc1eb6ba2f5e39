"""Lowering a compacted torch model to the bundle's graphs: the one exporter
(:func:`taugate.exporting.compact.export_onnx`), parity against torch, and the shared-backbone
description of each initializer (docs/bundle-v2.md section 4).

Parity: the ONNX graph's logits must match the compacted torch model's within
:data:`ONNX_TOLERANCE` on calibration samples. A gate decides z > t; torch and onnxruntime sum
z in different orders (float32 rounding, ~1e-7 on these layers), so a sample with some
|z - t| below :data:`BOUNDARY_MARGIN` can flip a gate in either one: parity is measured on the
other samples, and their count is reported.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from taugate.bundle.lowrank import LowRank
from taugate.exporting.compact import Surgery, export_onnx, gate_margins
from taugate.exporting.compaction import ParityError, logits
from taugate.exporting.thresholded import drop_idle_relus, lower, steps_for
from taugate.exporting.weightless import GraphExport, Recipe
from taugate.exporting.writer import with_metadata
from taugate.spec import GatedSpec

ONNX_TOLERANCE = 1e-4  # max abs logit difference, ONNX vs the torch model
BOUNDARY_MARGIN = 1e-5

__all__ = ["BOUNDARY_MARGIN", "ONNX_TOLERANCE", "ParityError", "as_feed", "export_onnx",
           "graph_bytes",
           "lower_checked", "lowered_model", "onnx_max_diff", "shared_graph"]


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


def as_feed(x: np.ndarray) -> np.ndarray:
    """``x`` as a graph input: float32, or int64 for integer inputs (token ids + mask)."""
    return x.astype(np.int64 if x.dtype.kind in "iub" else np.float32, copy=False)


def state_of(model: nn.Module) -> dict:
    """The model's state dict as numpy arrays (the shared backbone's tensors)."""
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def _names(plan: dict[str, Surgery], tensors: dict) -> dict:
    kinds = ("keep", "gain", "rscale", "cscale")
    return {k: {p: f"{k}.{p}" for p in plan if f"{k}.{p}" in tensors or k in ("keep", "rscale",
                                                                              "cscale")}
            for k in kinds}


def source_state(spec: GatedSpec | None, foundation_state: dict) -> dict:
    """The tensors a mode's weights are taken from: the backbone with the spec's overrides."""
    overrides = spec.overrides if spec is not None else {}
    return {k: (np.ascontiguousarray(overrides[k], dtype=v.dtype) if k in overrides else v)
            for k, v in foundation_state.items()}


def lowered_model(small: nn.Module, plan: dict[str, Surgery], spec: GatedSpec,
                  foundation_state: dict) -> tuple[nn.Module, dict]:
    """The fp32 lowering of ``small`` (exporting/thresholded.py) and the mode-file tensors its
    weights are built from (kept indices, gains, row and column scales)."""
    tensors = _mode_tensors(plan, foundation_state)
    model = lower(small, plan, spec, source_state(spec, foundation_state), tensors,
                  _names(plan, tensors))
    return model, tensors


def _mode_tensors(plan: dict[str, Surgery], foundation_state: dict) -> dict:
    sizes = {k: v.shape for k, v in foundation_state.items()}
    tensors = {}
    for path, s in plan.items():
        if s.rows is not None:
            tensors[f"keep.{path}"] = _index_tensor(s.rows, sizes[f"{path}.weight"][0])
        if s.cols is not None and not np.all(s.gain == 1):
            tensors[f"gain.{s.cols_from}"] = s.gain.astype(np.float32)
    return tensors


def shared_graph(proto, small: nn.Module, plan: dict[str, Surgery], spec: GatedSpec | None,
                 foundation_state: dict, tensors: dict | None = None) -> GraphExport:
    """``proto`` with a recipe per state-dict initializer of ``small`` (docs/bundle-v2.md 4).

    ``tensors``: the mode file :func:`lowered_model` made, when ``small`` is its lowering."""
    overrides = spec.overrides if spec is not None else {}
    tensors = dict(tensors) if tensors is not None else _mode_tensors(plan, foundation_state)
    recipes, backbone = {}, {}
    names = _names(plan, tensors)
    lowered = {p for p in plan if f"rscale.{p}" in tensors}
    state = small.state_dict()
    for key, value in state.items():
        path, _, leaf = key.rpartition(".")
        s = plan.get(path)
        if s is not None and leaf == "threshold":
            tensors[f"t.{path}"] = s.threshold.astype(np.float32)
            recipes[key] = Recipe("mode", f"t.{path}")
            continue
        lowrank = _factored(key, spec, s, tensors, foundation_state)
        if lowrank is not None:  # the backbone's rows plus U @ V: the mode stores the factors
            backbone[key] = foundation_state[key]
            take, scale = steps_for(key, "backbone", key, s, lowered, names)
            recipes[key] = Recipe("backbone", key, take, scale or None, lowrank=lowrank)
            continue
        if key in overrides:
            source, tensor = "mode", f"override.{key}"
            tensors[tensor] = np.ascontiguousarray(overrides[key], dtype=value.numpy().dtype)
        elif key in foundation_state:
            source, tensor = "backbone", key
            backbone[key] = foundation_state[key]
        else:
            continue  # not a foundation tensor: stays inside the graph
        take, scale = steps_for(key, source, tensor, s, lowered, names)
        recipes[key] = Recipe(source, tensor, take, scale or None)
    for path in lowered:  # its gains are in the column scale
        tensors.pop(f"gain.{path}", None)
    return GraphExport(proto, recipes, tensors, backbone)


def _factored(key: str, spec: GatedSpec | None, s: Surgery | None, tensors: dict,
              foundation_state: dict) -> LowRank | None:
    """The ``lowrank`` part of ``key``'s step when its override is factored (a 2-D weight whose
    rows alone are taken), its kept rows of U and its V added to ``tensors``; else None."""
    f = spec.factors.get(key) if spec is not None else None
    if f is None or key not in foundation_state or foundation_state[key].ndim != 2 or \
            (s is not None and s.cols is not None):
        return None
    u = f.u if s is None or s.rows is None else np.take(f.u, s.rows, axis=0)
    names = LowRank(f"lowrank.u.{key}", f"lowrank.v.{key}", int(f.pool))
    tensors[names.u] = np.ascontiguousarray(u, np.float32)
    tensors[names.v] = np.ascontiguousarray(f.v, np.float32)
    return names


def onnx_max_diff(proto, model: nn.Module, x: torch.Tensor, input_name: str) -> float:
    """Max abs difference of the ONNX graph's outputs and the torch model's, on ``x``
    (0 when ``x`` is empty)."""
    if not len(x):
        return 0.0
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(proto.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    got = sess.run(None, {input_name: as_feed(x.numpy())})[0]
    return float(np.abs(got - logits(model, x).numpy()).max())


def lower_checked(name: str, small: nn.Module, probe: torch.Tensor, input_name: str,
                  output_name: str, reference: nn.Module | None = None,
                  lowered: nn.Module | None = None) -> tuple[onnx.ModelProto, float, int]:
    """``small`` as a checked ONNX graph; (proto, max abs logit diff, boundary samples left out).

    ``reference``: another torch model the graph must also match (the trained hard-gated
    model: the mode's spec must describe it). ``lowered``: the model exported instead of
    ``small`` (:func:`lowered_model`), checked against ``small`` and ``reference``."""
    proto = export_onnx(lowered if lowered is not None else small, probe, input_name,
                        output_name)
    if lowered is not None:
        proto = drop_idle_relus(proto)
    clear = gate_margins(small, probe) > BOUNDARY_MARGIN
    if not clear.any():
        raise ParityError(f"{name}: every parity sample has a gate within {BOUNDARY_MARGIN:g} "
                          f"of its threshold: parity cannot be judged")
    kept = probe[clear]
    diff = onnx_max_diff(proto, small, kept, input_name)
    if not diff <= ONNX_TOLERANCE:
        raise ParityError(f"{name}: ONNX vs torch logits differ by {diff:.3g} > "
                          f"{ONNX_TOLERANCE:g}")
    if reference is not None:
        ref_diff = onnx_max_diff(proto, reference, kept, input_name)
        if not ref_diff <= ONNX_TOLERANCE:
            raise ParityError(f"{name}: the exported graph differs from the trained hard-gated "
                              f"model by {ref_diff:.3g} > {ONNX_TOLERANCE:g} on the calibration "
                              f"split: the mode's GatedSpec does not describe its model")
        diff = max(diff, ref_diff)
    return proto, diff, int((~clear).sum())


def graph_bytes(proto: onnx.ModelProto, name: str) -> bytes:
    """The self-contained serialized graph of ``name`` with the bundle's metadata: the fp32
    reference precision variants are quantized from and checked against."""
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    return with_metadata(copy, name).SerializeToString()
