"""Compaction + ONNX export of any torch model from a GatedSpec (taugate.exporting.compact,
taugate.exporting.pipeline), end to end through a format 2 shared-backbone bundle."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from _gated_models import MLP_TARGETS, VIT_TARGETS, TinyTransformer, odd_mlp, random_spec

from taugate.bundle.schema import InputSpec, OutputSpec
from taugate.exporting.compact import compact, firing_counts, hard_gated, keep_masks
from taugate.exporting.pipeline import ExportConfig, ModeInput, export_modes
from taugate.exporting.prune import PruneConfig
from taugate.runtime import BundleIntegrityError, ModeRuntime
from taugate.spec import GatedSpec, GatedUnits


def _config(layout: str = "shared") -> ExportConfig:
    """Random specs are not trained modes: no accuracy guard applies to them."""
    return ExportConfig(layout=layout, allow_worse=True, prune=PruneConfig(max_accuracy_drop=1.0))


# what the graphs of these models may contain (the list reported for the operator allowlist)
MLP_OPS = {"Gemm", "Relu", "ThresholdedRelu"}  # fp32: gates lowered (exporting/thresholded.py)


def _case(kind: str):
    torch.manual_seed(1)
    if kind == "mlp":
        model, targets, x = odd_mlp(), MLP_TARGETS, torch.randn(160, 13)
        spec_in = {"name": "features", "dtype": "float32", "shape": ["batch", 13],
                   "range": None, "layout": None}
    else:
        model, targets, x = TinyTransformer(), VIT_TARGETS, torch.randn(96, 6, 8)
        spec_in = {"name": "tokens", "dtype": "float32", "shape": ["batch", 6, 8],
                   "range": None, "layout": None}
    n_out = model(x[:1]).shape[1]
    y = torch.randint(0, n_out, (len(x),))
    half = len(x) // 2
    modes = {f"site-{i}": ModeInput(random_spec(targets, seed=i), (x[:half], y[:half]),
                                    (x[half:], y[half:]), facts={"site": i}) for i in range(2)}
    spec_out = {"name": "logits", "dtype": "float32", "shape": ["batch", n_out], "labels": None}
    return model, modes, InputSpec.from_dict(spec_in), OutputSpec.from_dict(spec_out), x


@pytest.fixture(scope="module", params=["mlp", "transformer"])
def exported(request, tmp_path_factory):
    model, modes, spec_in, spec_out, x = _case(request.param)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    root = tmp_path_factory.mktemp(request.param)
    shared, reports = export_modes(root / "shared", model, modes, family="user",
                                   input_spec=spec_in, output_spec=spec_out, config=_config())
    alone, _ = export_modes(root / "alone", model, modes, family="user",
                            input_spec=spec_in, output_spec=spec_out,
                            config=_config("standalone"))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the foundation changed"
    return request.param, model, modes, x, shared, alone, reports


def test_onnx_matches_the_torch_hard_gated_model(exported):
    _, model, modes, x, shared, _, reports = exported
    assert all(r.onnx_max_diff <= 1e-4 for r in reports)
    with ModeRuntime.open(shared, providers="cpu") as rt:
        for name, mode in modes.items():
            # pruning is exact on the calibration split (a unit silent there may fire elsewhere)
            cal = mode.calibration[0]
            want = hard_gated(model, mode.spec)(cal).detach().numpy()
            # negative inputs pass: the manifest gives no range
            assert cal.min() < 0 and np.abs(rt.run(name, cal.numpy()) - want).max() <= 1e-4
        np.testing.assert_allclose(rt.run("dense", x.numpy()), model(x).detach().numpy(),
                                   atol=1e-4)
        assert rt.info("site-1")["facts"] == {"site": 1}


def test_materialized_equals_standalone_bit_for_bit(exported):
    _, _, modes, x, shared, alone, _ = exported
    with ModeRuntime.open(shared, providers="cpu") as a, \
            ModeRuntime.open(alone, providers="cpu") as b:
        for name in ("dense", *modes):
            np.testing.assert_array_equal(a.run(name, x.numpy()), b.run(name, x.numpy()))


def test_compacted_predicts_like_uncompacted(exported):
    _, model, modes, _, _, _, _ = exported
    for mode in modes.values():
        hard = hard_gated(model, mode.spec)
        cal = mode.calibration[0]
        masks = keep_masks(mode.spec, firing_counts(hard, mode.spec, cal))
        small, _ = compact(model, mode.spec, masks)
        assert sum(m.sum() for m in masks) < sum(t.units for t in mode.spec.targets)
        torch.testing.assert_close(small(cal), hard(cal), atol=1e-5, rtol=0)
        assert torch.equal(small(cal).argmax(1), hard(cal).argmax(1))


def test_bundle_files_and_graphs(exported):
    kind, _, modes, _, shared, alone, _ = exported
    manifest = json.loads((shared / "manifest.json").read_text())
    assert manifest["format_version"] == 2 and manifest["family"] == "user"
    assert manifest["input"]["range"] is None and "backbone" in manifest
    backbone = (shared / "backbone.safetensors").stat().st_size
    for name in modes:
        entry = manifest["modes"][name]
        assert entry["units_kept"] == [int(k) for k in entry["units_kept"]]
        assert (shared / entry["weights"]["file"]).stat().st_size < backbone / 4
        weightless = onnx.load(shared / entry["file"], load_external_data=False)
        assert all(i.data_location == onnx.TensorProto.EXTERNAL
                   for i in weightless.graph.initializer if i.dims and i.dims[0] > 1)
        proto = onnx.load(alone / f"modes/{name}.onnx")
        assert proto.ir_version == 8 and [(o.domain, o.version) for o in proto.opset_import] \
            == [("", 17)]
        assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
        ops = {n.op_type for n in proto.graph.node}
        if kind == "mlp":
            assert ops <= MLP_OPS and "ThresholdedRelu" in ops


def test_tampered_mode_file_is_refused(exported, tmp_path):
    import hashlib
    import shutil

    shared = exported[4]
    root = tmp_path / "b"
    shutil.copytree(shared, root)
    manifest = json.loads((root / "manifest.json").read_text())
    entry = manifest["modes"]["site-0"]
    step = next(s for s in entry["materialize"] if s.get("take"))
    step["shape"][0] += 1  # declares a shape the recipe does not build
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleIntegrityError, match="the manifest declares"):
        ModeRuntime.open(root, providers="cpu")
    (root / entry["weights"]["file"]).write_bytes(b"\0" * 16)
    entry["weights"]["sha256"] = hashlib.sha256(b"\0" * 16).hexdigest()
    step["shape"][0] -= 1
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleIntegrityError, match="not a valid safetensors file"):
        ModeRuntime.open(root, providers="cpu")


def test_keep_masks_rules():
    spec = GatedSpec((GatedUnits("a", "b", "relu", np.zeros(4, np.float32),
                                 np.array([1, 0, 1, 1], np.float32)),
                      GatedUnits("c", "d", "relu", np.zeros(2, np.float32),
                                 np.ones(2, np.float32))))
    masks = keep_masks(spec, [np.array([5, 9, 0, 1]), np.array([0, 0])])
    # gain exactly 0 or never fired: removed; a target left empty keeps one unit
    assert masks[0].tolist() == [True, False, False, True] and masks[1].sum() == 1


def test_overrides_become_mode_tensors(tmp_path):
    model, modes, spec_in, spec_out, _ = _case("mlp")
    bias = np.full(5, 0.25, np.float32)
    mode = modes["site-0"]
    mode.spec = GatedSpec(mode.spec.targets, {"readout.bias": bias})
    path, _ = export_modes(tmp_path / "b", model, {"m": mode}, family="user",
                           input_spec=spec_in, output_spec=spec_out, config=_config())
    steps = json.loads((path / "manifest.json").read_text())["modes"]["m"]["materialize"]
    assert {"name": "readout.bias", "source": "mode", "tensor": "override.readout.bias",
            "dtype": "float32", "shape": [5]} in steps
    with ModeRuntime.open(path, providers="cpu") as rt:
        cal = mode.calibration[0]
        want = hard_gated(model, mode.spec)(cal).detach().numpy()
        assert np.abs(rt.run("m", cal.numpy()) - want).max() <= 1e-4


def test_bad_specs_are_refused():
    model = odd_mlp()
    bad = GatedSpec((GatedUnits("stem", "act_a", "relu", np.zeros(24, np.float32),
                                np.ones(24, np.float32)),))
    with pytest.raises(ValueError,
                       match="consumer 'act_a': expected an nn.Linear or nn.Conv2d, got ReLU"):
        hard_gated(model, bad)
    wrong = GatedSpec((GatedUnits("stem", "middle", "relu", np.zeros(7, np.float32),
                                  np.ones(7, np.float32)),))
    with pytest.raises(ValueError, match="7 units, but the producer has 24"):
        hard_gated(model, wrong)
    with pytest.raises(ValueError, match="overrides: 'nope'"):
        hard_gated(model, GatedSpec((), {"nope": np.zeros(1)}))


def test_gate_margins_only_count_jump_gates():
    from taugate.exporting.compact import GatedLinear, gate_margins

    gate = GatedLinear(1, 2, torch.tensor([0.5, 0.0]))
    with torch.no_grad():
        gate.weight.copy_(torch.tensor([[1.0], [1.0]]))
        gate.bias.zero_()
    x = torch.tensor([[0.5 + 1e-6], [0.9], [0.0]])
    # sample 0 sits on unit 0's threshold; unit 1 (t = 0) never counts: a flip there is ~0
    margins = gate_margins(gate, x)
    assert margins[0] < 2e-6 and margins[1] == pytest.approx(0.4) and margins[2] == 0.5


def test_linear_macs_counts_attention():
    from taugate.exporting.compact import linear_macs

    model, x = TinyTransformer(), torch.randn(2, 6, 8)
    # per block: in_proj 6*8*24, out_proj 6*8*8, fc1 6*8*32, fc2 6*32*8, q k^T and att v 2*6*6*8
    block = 6 * 8 * 24 + 6 * 8 * 8 + 2 * 6 * 8 * 32 + 2 * 6 * 6 * 8
    assert linear_macs(model, x) == 2 * block + 8 * 4
    model.attention_macs = lambda: 1000  # a model that counts its own attention
    assert linear_macs(model, x) == 2 * 2 * 6 * 8 * 32 + 8 * 4 + 1000
    assert linear_macs(odd_mlp(), torch.randn(1, 13)) == 13 * 24 + 24 * 16 + 16 * 5
