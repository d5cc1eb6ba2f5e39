"""Precision variants of a mode (docs/bundle-v2.md section 3, ``modes.<m>.variants``).

A variant is a self-contained graph of the same model in another precision, written as
``modes/<mode>.<precision>.onnx``. It is accepted only when its test accuracy stays within
``max_accuracy_drop`` of the fp32 graph's, measured with onnxruntime on the same rows: the
fp32 graph stays the reference every variant is checked against. Pure: bytes in, bytes out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from taugate.exporting.quantize import DEFAULT_SCHEME, quantize


class QuantizationGuardError(ValueError):
    """A precision variant lost more test accuracy against fp32 than allowed."""

    def __init__(self, name: str, precision: str, scheme: str, fp32: float, got: float,
                 limit: float):
        self.fp32, self.got, self.limit = fp32, got, limit
        super().__init__(
            f"{name}: {precision} variant refused: its test accuracy is {got:.4f} against "
            f"{fp32:.4f} in fp32 ({scheme}), a drop of {fp32 - got:.4f} > the limit "
            f"max_accuracy_drop={limit:g}; export with --precision fp32, another "
            f"--quantization scheme, or a larger --max-accuracy-drop")


@dataclass(frozen=True)
class Variant:
    """One precision variant: the serialized graph and what the manifest records of it."""

    precision: str  # "int8"
    data: bytes  # the ONNX model, self-contained
    test_accuracy: float | dict  # one number, or per data mode (the dense model)
    quantization: str  # e.g. "dynamic-per-channel"


def onnx_accuracy(data: bytes, x: np.ndarray, y: np.ndarray, batch: int = 4096) -> float:
    """Top-1 accuracy of a serialized single-input graph with onnxruntime (CPU)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    x = np.ascontiguousarray(x, np.int64 if x.dtype.kind in "iub" else np.float32)
    if len(inp.shape) == 2:  # a flat graph: one row of features per sample
        x = x.reshape(len(x), -1)
    name = inp.name
    hits = 0
    for i in range(0, len(x), batch):
        hits += int((sess.run(None, {name: x[i:i + batch]})[0].argmax(1) == y[i:i + batch]).sum())
    return hits / max(len(x), 1)


def int8_variant(name: str, fp32: bytes, tests: dict, max_accuracy_drop: float,
                 scheme: str = DEFAULT_SCHEME, calibration: np.ndarray | None = None,
                 per_mode: bool = False) -> Variant:
    """Quantize ``fp32`` and check it on every test split in ``tests`` (data mode -> (x, y)).

    Raises :class:`QuantizationGuardError` when any split loses more than
    ``max_accuracy_drop`` against the fp32 graph on that split. ``per_mode`` records the
    accuracy per split (the dense model's form); otherwise the only split's number.
    """
    if max_accuracy_drop < 0:
        raise ValueError(f"max_accuracy_drop: expected >= 0, got {max_accuracy_drop}")
    if not tests:
        raise ValueError(f"{name}: expected at least one test split to check the int8 variant on")
    data = quantize(fp32, scheme, calibration)
    accs = {}
    for mode, (x, y) in tests.items():
        ref, got = onnx_accuracy(fp32, x, y), onnx_accuracy(data, x, y)
        if ref - got > max_accuracy_drop + 1e-12:
            raise QuantizationGuardError(f"{name} (on {mode})", "int8", scheme, ref, got,
                                         max_accuracy_drop)
        accs[mode] = got
    return Variant("int8", data, accs if per_mode else next(iter(accs.values())), scheme)
