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

from taugate.exporting.compact import Surgery, export_onnx, gate_margins
from taugate.exporting.compaction import ParityError, logits
from taugate.exporting.weightless import GraphExport, Recipe
from taugate.exporting.writer import with_metadata
from taugate.spec import GatedSpec

ONNX_TOLERANCE = 1e-4  # max abs logit difference, ONNX vs the torch model
BOUNDARY_MARGIN = 1e-5

__all__ = ["BOUNDARY_MARGIN", "ONNX_TOLERANCE", "ParityError", "export_onnx", "graph_bytes",
           "lower_checked", "onnx_max_diff", "shared_graph"]


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


def state_of(model: nn.Module) -> dict:
    """The model's state dict as numpy arrays (the shared backbone's tensors)."""
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
    return float(np.abs(got - logits(model, x).numpy()).max())


def lower_checked(name: str, small: nn.Module, probe: torch.Tensor, input_name: str,
                  output_name: str, reference: nn.Module | None = None
                  ) -> tuple[onnx.ModelProto, float, int]:
    """``small`` as a checked ONNX graph; (proto, max abs logit diff, boundary samples left out).

    ``reference``: another torch model the graph must also match (the trained hard-gated
    model: the mode's spec must describe it)."""
    proto = export_onnx(small, probe, input_name, output_name)
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
