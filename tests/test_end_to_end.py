"""A short end-to-end run on a subset of the real MNIST: `taugate train` -> `taugate export` ->
runtime, with the ONNX subnetworks checked against the torch hard-gated models."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from taugate.cli import main
from taugate.training.adapters import load_adapter, load_foundation
from taugate.training.sources import DataConfig, MNISTModes

SMALL = ["--limit-train", "3000", "--limit-test", "500", "--calibration-size", "500"]


@pytest.fixture(scope="module")
def exported(data_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e")
    run, bundle = base / "run", base / "bundle"
    assert main(["train", "--out", str(run), "--data-root", data_root, "--quiet", "--device", "cpu",
                 "--method-option", "tau_init=0.3", *SMALL]) == 0
    assert main(["export", str(run), "--out", str(bundle), "--data-root", data_root]) == 0
    data = MNISTModes(DataConfig(root=data_root, calibration_size=500, limit_train=3000,
                                 limit_test=500))
    return run, bundle, data


def test_bundle_layout(exported):
    _, bundle, _ = exported
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["format"] == "taugate-bundle" and manifest["format_version"] == 2
    assert manifest["family"] == "mlp" and manifest["input"]["layout"]["height"] == 28
    assert sorted(manifest["modes"]) == ["rot0", "rot45"]
    for name, m in manifest["modes"].items():
        assert (bundle / m["file"]).exists() and m["file"] == f"modes/{name}.onnx"
        assert m["units_total"] == [128, 128] and len(m["units_kept"]) == 2
        assert "kept_indices" not in m and m["weights"]["file"] == f"modes/{name}.safetensors"
        assert 0.5 < m["test_accuracy"] <= 1.0
        assert m["facts"]["angle"] == float(name[3:]) and 0.5 < m["dense_test_accuracy"] <= 1.0


@pytest.mark.parametrize("mode", ["rot0", "rot45"])
def test_onnx_matches_torch_hard_gate(exported, mode):
    from taugate.runtime import ModeRuntime

    run, bundle, data = exported
    foundation, meta = load_foundation(run / "foundation")
    adapter = load_adapter(run / "adapters" / mode, foundation, meta["sha256"])
    # pruning is exact on the calibration split (units that never fire there are removed)
    x = data.mode(mode).calibration.x
    want = adapter.model.set_hard(True)(x).detach().numpy()
    got = ModeRuntime.open(bundle).run(mode, x.numpy())
    assert np.abs(got - want).max() <= 1e-4


@pytest.mark.parametrize("mode", ["rot0", "rot45"])
def test_compacted_matches_uncompacted_on_calibration(exported, mode):
    from taugate.exporting.specialize import prune_mode

    run, _, data = exported
    foundation, meta = load_foundation(run / "foundation")
    adapter = load_adapter(run / "adapters" / mode, foundation, meta["sha256"])
    hard = adapter.method.harden(adapter.model)
    cal, test = data.mode(mode).calibration, data.mode(mode).test
    pruned = prune_mode(hard, (cal.x.numpy(), cal.y.numpy()), (test.x.numpy(), test.y.numpy()))
    full, cut = hard.forward(cal.x.numpy()), pruned.model.forward(cal.x.numpy())
    assert np.array_equal(full.argmax(1), cut.argmax(1))
    assert np.abs(full - cut).max() <= 1e-5


def test_frozen_weights_untouched(exported):
    run, _, _ = exported
    foundation, meta = load_foundation(run / "foundation")
    before = {k: v.clone() for k, v in foundation.state_dict().items()}
    load_adapter(run / "adapters" / "rot45", foundation, meta["sha256"])
    assert all(torch.equal(before[k], v) for k, v in foundation.state_dict().items())


def test_runtime_import_pulls_no_torch(exported):
    _, bundle, _ = exported
    code = ("import sys, numpy as np; from taugate.runtime import ModeRuntime; "
            f"rt = ModeRuntime.open({str(bundle)!r}); rt.run('rot45', np.zeros((2, 784), np.float32)); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_server_endpoint_answers_200_on_an_exported_bundle(exported):
    """Issue 10 point 1: the server on a bundle written by `taugate export` (whose manifest
    holds the dense model's accuracy per mode), each answer valid under the documented schema."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    from taugate.runtime import ModeRuntime
    from taugate.server import BackgroundServer
    from taugate.server.schemas import Health, ModeInfo, ModeList, PredictResponse

    _, bundle, _ = exported
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert isinstance(manifest["dense"]["test_accuracy"], dict)  # the case that answered 500
    x = np.random.default_rng(0).random((2, 784), dtype=np.float32).round(4).tolist()
    gets = [("/health", Health), ("/modes", ModeList), ("/modes/dense", ModeInfo),
            ("/modes/rot0", ModeInfo), ("/modes/rot45", ModeInfo), ("/openapi.json", None),
            ("/docs", None)]
    with BackgroundServer(ModeRuntime.open(bundle)) as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        for path, schema in gets:
            r = client.get(path)
            assert r.status_code == 200, (path, r.text)
            if schema is not None:
                schema.model_validate(r.json())
        dense = client.get("/modes/dense").json()
        assert dense["test_accuracy"] == manifest["dense"]["test_accuracy"]
        for mode in ("rot0", "rot45", "dense"):
            r = client.post(f"/modes/{mode}/predict", json={"inputs": x})
            assert r.status_code == 200, r.text
            PredictResponse.model_validate(r.json())


def test_export_int8_variants(exported, data_root, tmp_path, capsys):
    """`taugate export --precision fp32,int8`: int8 variants of every mode and the dense model,
    within --max-accuracy-drop of fp32, served by the runtime with precision="int8"."""
    from taugate.runtime import ModeRuntime

    run, _, data = exported
    bundle = tmp_path / "b8"
    assert main(["export", str(run), "--out", str(bundle), "--data-root", data_root,
                 "--precision", "fp32,int8"]) == 0
    assert "int8 rot45: test accuracy" in capsys.readouterr().out
    manifest = json.loads((bundle / "manifest.json").read_text())
    for name, m in manifest["modes"].items():
        v = m["variants"]["int8"]
        assert v["file"] == f"modes/{name}.int8.onnx" and (bundle / v["file"]).exists()
        assert m["test_accuracy"] - v["test_accuracy"] <= 0.005
    assert set(manifest["dense"]["variants"]["int8"]["test_accuracy"]) == {"rot0", "rot45"}
    x = data.mode("rot45").test.x.numpy()
    rt = ModeRuntime.open(bundle, precision="int8")
    acc = float((rt.predict("rot45", x) == data.mode("rot45").test.y.numpy()).mean())
    assert abs(acc - manifest["modes"]["rot45"]["variants"]["int8"]["test_accuracy"]) <= 0.002


def test_export_refuses_an_unknown_precision(exported, data_root, tmp_path, capsys):
    run, _, _ = exported
    assert main(["export", str(run), "--out", str(tmp_path / "b"), "--data-root", data_root,
                 "--precision", "fp16"]) == 2
    assert "precision: expected a comma-separated subset of fp32, int8, got fp16" in \
        capsys.readouterr().err
    assert not (tmp_path / "b").exists()
