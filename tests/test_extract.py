"""`taugate extract`: any mode of any bundle (shared or standalone layout, fp32 or int8) as one
self-contained ONNX file whose logits under plain onnxruntime are the runtime's."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from _gated_models import MLP_TARGETS, VIT_TARGETS, TinyTransformer, odd_mlp, random_spec

from taugate.bundle.schema import InputSpec, OutputSpec
from taugate.cli import main
from taugate.exporting.pipeline import ExportConfig, ModeInput, PrecisionConfig, export_modes
from taugate.exporting.prune import PruneConfig
from taugate.runtime import ModeRuntime


def _bundle(kind: str, layout: str, out):
    torch.manual_seed(1)
    if kind == "mlp":
        model, targets, x = odd_mlp(), MLP_TARGETS, torch.randn(120, 13)
    else:
        model, targets, x = TinyTransformer(), VIT_TARGETS, torch.randn(96, 6, 8)
    y = model(x).argmax(1)  # the dense model is right everywhere: a clean guard baseline
    half = len(x) // 2
    modes = {f"m{i}": ModeInput(random_spec(targets, seed=i), (x[:half], y[:half]),
                                (x[half:], y[half:])) for i in range(2)}
    spec_in = {"name": "input", "dtype": "float32", "shape": ["batch", *x.shape[1:]],
               "range": None, "layout": None}
    spec_out = {"name": "logits", "dtype": "float32", "shape": ["batch", int(y.max()) + 1],
                "labels": None}
    config = ExportConfig(layout=layout, allow_worse=True,
                          prune=PruneConfig(max_accuracy_drop=1.0),
                          precision=PrecisionConfig(("fp32", "int8")))
    export_modes(out, model, modes, family="user", input_spec=InputSpec.from_dict(spec_in),
                 output_spec=OutputSpec.from_dict(spec_out),
                 config=config)
    return x[half:].numpy()


@pytest.mark.parametrize("kind", ["mlp", "transformer"])
@pytest.mark.parametrize("layout", ["shared", "standalone"])
def test_extracted_mode_runs_in_plain_onnxruntime(tmp_path, kind, layout, capsys):
    x = _bundle(kind, layout, tmp_path / "b")
    for precision in ("fp32", "int8"):
        rt = ModeRuntime.open(tmp_path / "b", precision=precision)
        for mode in ("m0", "m1", "dense"):
            out = tmp_path / f"{mode}.{precision}.onnx"
            assert main(["extract", str(tmp_path / "b"), "--mode", mode, "--out", str(out),
                         "--precision", precision]) == 0
            sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
            got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
            np.testing.assert_allclose(got, rt.run(mode, x), rtol=1e-6, atol=1e-6)


def test_extract_refuses_by_name(tmp_path, capsys):
    _bundle("mlp", "shared", tmp_path / "b")
    assert main(["extract", str(tmp_path / "b"), "--mode", "nope", "--out",
                 str(tmp_path / "x.onnx")]) == 2
    assert "--mode 'nope': not in the bundle; expected one of dense, m0, m1" in \
        capsys.readouterr().err
    (tmp_path / "x.onnx").write_bytes(b"keep")
    assert main(["extract", str(tmp_path / "b"), "--mode", "m0", "--out",
                 str(tmp_path / "x.onnx")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "x.onnx").read_bytes() == b"keep"
