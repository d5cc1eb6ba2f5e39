"""int8 variants of a tokens bundle (a tiny BERT): both quantization schemes export, calibrate
on int64 token ids, pass the accuracy guard, and serve ids and masks."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("transformers")  # _hf_models builds them with torch

import _hf_models as hfm

from taugate import cli


@pytest.mark.parametrize("scheme", ["dynamic-per-channel", "static-per-channel"])
def test_int8_variants_of_a_bert_bundle_serve_token_ids(bert_bundle, tmp_path, scheme):
    from taugate.runtime import ModeRuntime

    out = tmp_path / "bundle"
    assert cli.main(["export", str(bert_bundle.parent / "run"), "--out", str(out),
                     "--no-measure", "--allow-worse", "--prune-below", "0.5",
                     "--max-accuracy-drop", "1", "--precision", "int8", "--quantization",
                     scheme]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["input"]["dtype"] == "int64"
    assert (out / "modes" / "low.int8.onnx").is_file() and (out / "dense.int8.onnx").is_file()
    ids, mask, _ = hfm.tokens(6, seed=2)
    tokens = {"input_ids": ids, "attention_mask": mask}
    fp32 = ModeRuntime.open(out).run("low", tokens)
    int8 = ModeRuntime.open(out, precision="int8")
    got = int8.run("low", tokens)
    assert got.shape == fp32.shape and np.isfinite(got).all()
    np.testing.assert_allclose(got, fp32, atol=0.05)
    assert int8.run("dense", tokens).shape == fp32.shape
