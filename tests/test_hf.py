"""Hugging Face models (taugate train --hf DIR): FFN sites from the layout table, the wrapper
matches transformers, offline loading refuses what it cannot serve, and BERT / ViT train,
export (compacted, parity-checked ONNX) and serve with their real inputs."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

import _hf_models as hfm

from taugate.training.families.hf import load_hf, wrap
from taugate.training.targets import resolve_targets


def _packed(ids, mask):
    return torch.from_numpy(np.stack([ids, mask], axis=1))


@pytest.mark.parametrize("build, producer, up", [
    (hfm.bert, "hf.bert.encoder.layer.{}.intermediate.dense", None),
    (hfm.llama, "hf.model.layers.{}.mlp.gate_proj", "hf.model.layers.{}.mlp.up_proj"),
])
def test_text_sites_come_from_the_layout_table(build, producer, up):
    model = wrap(build())
    ids, mask, _ = hfm.tokens(4)
    sites = resolve_targets(model, _packed(ids, mask)).sites
    assert [s.producer for s in sites] == [producer.format(i) for i in range(2)]
    assert [s.up for s in sites] == [up and up.format(i) for i in range(2)]
    assert {(s.units, s.tokens) for s in sites} == {(32, hfm.LENGTH)}


def test_vit_sites_count_patches_and_cls():
    sites = resolve_targets(wrap(hfm.vit()), torch.rand(2, 1, 8, 8)).sites
    assert [s.consumer for s in sites] == [f"hf.vit.layers.{i}.mlp.fc2" for i in range(2)]
    assert sites[0].activation == "gelu" and sites[0].tokens == 5  # 4 patches + [CLS]


@pytest.mark.parametrize("build", [hfm.bert, hfm.llama])
def test_wrapper_matches_transformers_with_padding(build):
    hf = build().eval()
    model = wrap(hf)
    ids, mask, _ = hfm.tokens(6)
    with torch.no_grad():
        ours = model(_packed(ids, mask))
        theirs = hf(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_unknown_model_type_is_refused_by_name(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2",
                                                      "architectures": ["GPT2LMHeadModel"]}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="'gpt2' is not supported.*bert, vit, llama"):
        load_hf(tmp_path)


def test_unsupported_class_is_refused(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=8, hidden_size=8, num_hidden_layers=1,
                         num_attention_heads=1, intermediate_size=8)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'BertModel' is not a supported model class.*"
                                         "BertForSequenceClassification"):
        load_hf(tmp_path)


def test_pickled_weights_are_never_loaded(tmp_path):
    hfm.bert().save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").rename(tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="no .safetensors weights.*pytorch_model.bin"):
        load_hf(tmp_path)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_hf(tmp_path / "nowhere")


def test_a_saved_folder_loads_offline_and_gates_the_same_units(tmp_path):
    hf = hfm.bert()
    hf.save_pretrained(tmp_path)
    model = load_hf(tmp_path)
    ids, mask, _ = hfm.tokens(3)
    with torch.no_grad():
        assert torch.allclose(model(_packed(ids, mask)), wrap(hf)(_packed(ids, mask)))


def test_llama_graph_passes_the_bundle_operator_check():
    from taugate.bundle.graph_check import check_model
    from taugate.exporting.compact import export_onnx

    ids, mask, _ = hfm.tokens(4)
    proto = export_onnx(wrap(hfm.llama()), _packed(ids, mask), "tokens")
    check_model(proto.SerializeToString(), 2, "llama")


def _train_export(tmp_path, hf, modes, extra=()):
    from taugate.cli import main

    hf.save_pretrained(tmp_path / "hf")
    main(["train", "--hf", str(tmp_path / "hf"), "--modes-dir", str(modes), "--out",
          str(tmp_path / "run"), "--adapt-min-steps", "6", "--adapt-lr", "0.5",
          "--batch-size", "16", "--quiet", "--device", "cpu", *extra])
    main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "bundle"), "--no-measure",
          "--allow-worse", "--prune-below", "0.5", "--max-accuracy-drop", "1"])
    return json.loads((tmp_path / "bundle" / "manifest.json").read_text())


@pytest.mark.slow
def test_bert_trains_exports_compacted_and_serves_token_ids(tmp_path):
    from taugate.runtime import ModeRuntime

    manifest = _train_export(tmp_path, hfm.bert(), hfm.token_modes(tmp_path / "modes"),
                             ["--modes", "low"])
    assert manifest["input"] == {"name": "tokens", "dtype": "int64",
                                 "shape": ["batch", 2, hfm.LENGTH], "range": None,
                                 "layout": {"kind": "tokens",
                                            "fields": ["input_ids", "attention_mask"],
                                            "length": hfm.LENGTH, "vocab": hfm.VOCAB}}
    low = manifest["modes"]["low"]
    assert sum(low["units_kept"]) < sum(low["units_total"])  # FFN rows/cols removed
    assert low["macs"] < manifest["dense"]["macs"]
    rt = ModeRuntime.open(tmp_path / "bundle")
    ids, mask, _ = hfm.tokens(5, seed=3)
    as_dict = rt.run("low", {"input_ids": ids, "attention_mask": mask})
    assert np.array_equal(as_dict, rt.run("low", np.stack([ids, mask], axis=1)))
    assert rt.run("dense", {"input_ids": ids[0]}).shape == (1, 2)
    from taugate.bench import BenchConfig, run_bench

    fast = BenchConfig(batches=(2,), threads=(1,), precisions=("fp32",), budget_s=0.01,
                       min_rounds=2)
    cells = run_bench(tmp_path / "bundle", fast).cells
    assert [c.mode for c in cells] == ["low"] and cells[0].speedup["fp32"] > 0


@pytest.mark.slow
def test_vit_trains_exports_and_serves_pixels(tmp_path):
    from taugate.runtime import ModeRuntime

    manifest = _train_export(tmp_path, hfm.vit(), hfm.pixel_modes(tmp_path / "modes"),
                             ["--modes", "bright"])
    assert manifest["input"]["dtype"] == "float32"
    assert manifest["input"]["shape"] == ["batch", 1, 8, 8]
    assert manifest["family"] == "hf"
    rt = ModeRuntime.open(tmp_path / "bundle")
    x = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
    assert rt.run("bright", x).shape == (3, 3)


def test_runtime_import_stays_free_of_torch_and_transformers():
    import subprocess

    code = ("import sys, taugate.runtime; "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "False"]


def test_hf_is_one_foundation_among_others(tmp_path):
    from taugate.training.runs import RunConfig

    with pytest.raises(ValueError, match="--model and --hf: give one foundation"):
        RunConfig(out=str(tmp_path), model="m.py:build", weights_in_factory=True, hf="bert")


@pytest.mark.slow
def test_llama_swiglu_trains_exports_compacted_and_serves(tmp_path):
    from taugate.runtime import ModeRuntime

    manifest = _train_export(tmp_path, hfm.llama(), hfm.token_modes(tmp_path / "modes"),
                             ["--modes", "high"])
    assert manifest["targets"] == [f"hf.model.layers.{i}.mlp.gate_proj" for i in range(2)]
    high = manifest["modes"]["high"]
    assert sum(high["units_kept"]) < sum(high["units_total"])  # gate/up rows, down cols gone
    ids, mask, _ = hfm.tokens(4, seed=5)
    out = ModeRuntime.open(tmp_path / "bundle").run("high", {"input_ids": ids,
                                                             "attention_mask": mask})
    assert out.shape == (4, 2) and np.isfinite(out).all()
