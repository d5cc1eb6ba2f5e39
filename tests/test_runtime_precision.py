"""runtime: ``ModeRuntime.open(precision=...)`` serves a bundle's int8 variants, checked like
every other file, and never falls back silently."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest

from taugate.exporting.synthetic import build_random_bundle, random_inputs
from taugate.runtime import (
    BundleFormatError,
    BundleIntegrityError,
    ModeRuntime,
    RuntimeConfigError,
)


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory):
    return build_random_bundle(tmp_path_factory.mktemp("b") / "bundle", int8=True)


def bare(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"pixels": x})[0]


@pytest.mark.parametrize("precision, suffix", [("fp32", ".onnx"), ("int8", ".int8.onnx")])
@pytest.mark.parametrize("name, stem", [("rot45", "modes/rot45"), ("dense", "dense")])
def test_serves_the_file_of_its_precision(int8_bundle, precision, suffix, name, stem):
    x = random_inputs(0, 16)
    with ModeRuntime.open(int8_bundle, providers="cpu", precision=precision) as rt:
        assert rt.precision == precision
        np.testing.assert_array_equal(rt.run(name, x), bare(int8_bundle / f"{stem}{suffix}", x))


def test_manifest_records_variants(int8_bundle):
    m = json.loads((int8_bundle / "manifest.json").read_text())
    v = m["modes"]["rot45"]["variants"]["int8"]
    assert v["file"] == "modes/rot45.int8.onnx" and v["precision"] == "int8"
    assert v["quantization"] == "dynamic-per-channel" and 0 <= v["test_accuracy"] <= 1
    assert m["modes"]["rot45"]["precision"] == "fp32"
    assert set(m["dense"]["variants"]["int8"]["test_accuracy"]) == {"rot0", "rot45"}


def test_no_variant_is_a_clear_error(tiny_bundle):
    with pytest.raises(RuntimeConfigError, match=r"have no int8 variant.*--precision fp32,int8"):
        ModeRuntime.open(tiny_bundle, precision="int8")


def test_dense_without_variant_raises_at_run(int8_bundle, tmp_path):
    b = shutil.copytree(int8_bundle, tmp_path / "b")
    m = json.loads((b / "manifest.json").read_text())
    del m["dense"]["variants"]
    (b / "manifest.json").write_text(json.dumps(m))
    with ModeRuntime.open(b, precision="int8") as rt:
        rt.run("rot0", random_inputs(0, 2))
        with pytest.raises(RuntimeConfigError, match="'dense' has no int8 variant"):
            rt.run("dense", random_inputs(0, 2))


def test_unknown_precision_is_refused(int8_bundle):
    with pytest.raises(RuntimeConfigError, match="precision: expected one of fp32, int8"):
        ModeRuntime.open(int8_bundle, precision="fp16")


@pytest.mark.parametrize("lazy", [False, True])
def test_tampered_variant_is_refused(int8_bundle, tmp_path, lazy):
    b = shutil.copytree(int8_bundle, tmp_path / "b")
    path = b / "modes" / "rot45.int8.onnx"
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(BundleIntegrityError, match="sha256 mismatch"):
        ModeRuntime.open(b, precision="int8", lazy=lazy)
    with pytest.raises(BundleIntegrityError, match="sha256 mismatch"):
        ModeRuntime.open(b, lazy=True)  # every file listed is checked, whatever the precision


@pytest.mark.parametrize("variants, match", [
    ([], "expected an object mapping precision names"),
    ({"int8": {"file": "modes/rot45.int8.onnx"}}, "missing field 'sha256'"),
    ({"int8": {"file": "modes/rot45.int8.onnx", "sha256": "zz"}}, "64 lowercase hex"),
    ({"int8": {"file": "../x.onnx", "sha256": "a" * 64}}, None),
])
def test_malformed_variants(int8_bundle, tmp_path, variants, match):
    b = shutil.copytree(int8_bundle, tmp_path / "b")
    m = json.loads((b / "manifest.json").read_text())
    m["modes"]["rot45"]["variants"] = variants
    (b / "manifest.json").write_text(json.dumps(m))
    if match is None:
        with pytest.raises(BundleIntegrityError, match="'..' is not allowed"):
            ModeRuntime.open(b, precision="int8")
    else:
        with pytest.raises(BundleFormatError, match=match):
            ModeRuntime.open(b)
