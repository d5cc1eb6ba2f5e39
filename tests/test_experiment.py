"""The reproduction: gate statistics and overlap (golden values), aggregation over seeds, the
LaTeX tables, and a one-seed small-subset run of ``taugate reproduce`` writing every artefact."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from taugate.lab.experiment import FILES, OVERLAP_COLUMNS, RESULT_COLUMNS, ExperimentConfig
from taugate.lab.experiment.measures import (
    high_act_frac,
    high_gate_frequency,
    mode_masks,
)
from taugate.lab.experiment.summary import build_summary, stats, to_csv
from taugate.lab.experiment.tables import ablations_table, overlap_table, results_table
from taugate.summaries import jaccard
from taugate.training.families.mlp import MLP, BackboneConfig
from taugate.training.methods import get_method


@pytest.mark.parametrize("a,b,expected", [
    ([1, 1, 0, 0], [1, 0, 1, 0], 1 / 3),
    ([1, 1, 0], [1, 1, 0], 1.0),
    ([0, 0, 0], [0, 0, 0], 1.0),  # both empty: the modes agree
    ([1, 0], [0, 1], 0.0),
])
def test_jaccard(a, b, expected):
    assert jaccard(np.array(a, bool), np.array(b, bool)) == pytest.approx(expected)


def test_gate_statistics_match_numpy():
    torch.manual_seed(0)
    method = get_method("taugate", {"sharpness": 10.0})
    model = method.wrap(MLP(BackboneConfig(input_dim=5, hidden=(6, 4), num_classes=2)))
    with torch.no_grad():
        model.acts[0].tau.copy_(torch.linspace(-1, 1, 6))
        model.acts[1].tau.fill_(-10.0)  # every gate ~1
    x = torch.rand(64, 5)
    freq = high_gate_frequency(model, x, 0.9)
    with torch.no_grad():
        z = model.linears[0]((x - model.input_mean) / model.input_std).numpy()
    g = 1 / (1 + np.exp(-10 * (z - np.linspace(-1, 1, 6))))
    np.testing.assert_allclose(freq[0], (g > 0.9).mean(0))
    np.testing.assert_array_equal(freq[1], np.ones(4))
    assert high_act_frac(freq) == pytest.approx(((g > 0.9).mean() + 1.0) / 2)
    masks = mode_masks(freq, 0.5)
    np.testing.assert_array_equal(masks[0], (g > 0.9).mean(0) >= 0.5)
    ungated = get_method("lora").wrap(MLP(BackboneConfig(input_dim=5, hidden=(6,), num_classes=2)))
    assert high_gate_frequency(ungated, x, 0.9) is None


def test_stats_sample_std():
    assert stats([0.8, 0.9, 1.0]) == pytest.approx({"mean": 0.9, "std": 0.1, "n": 3})
    assert stats([0.5]) == {"mean": 0.5, "std": 0.0, "n": 1}
    assert stats([None, None]) is None


def _rows(config):
    rows = []
    for seed in config.seeds:
        for k, (method, mode) in enumerate(config.runs()):
            for j, ev in enumerate(config.eval_modes):
                acc = 0.9 + 0.01 * k + 0.001 * j + 0.002 * seed
                rows.append({"seed": seed, "method": method, "adapt_mode": mode, "eval_mode": ev,
                             "accuracy": acc, "hard_accuracy": acc, "onnx_accuracy": acc,
                             "trainable_params": 10 * k,
                             "high_act_frac": 0.3 if method in ("taugate", "tau_only") else None,
                             "train_seconds": 1.0})
    return rows


def test_summary_and_tables():
    config = ExperimentConfig(seeds=(0, 1), extras=True)
    assert config.runs()[-1] == ("taugate", "rot0")
    overlap = [{"seed": s, "layer": layer, "jaccard": j, "jaccard_own": j / 2}
               for s, js in ((0, (1.0, 0.8)), (1, (1.0, 0.6))) for layer, j in zip((1, 2), js)]
    summary = build_summary(_rows(config), overlap, config, 1.5, "cpu")
    lora = summary["methods"]["lora"]["rot45"]
    assert lora["label"] == "LoRA (r=8)"
    assert lora["accuracy"]["rot45"]["mean"] == pytest.approx(0.9 + 0.03 + 0.001 + 0.001)
    assert lora["accuracy"]["rot45"]["std"] == pytest.approx(np.std([0.931, 0.933], ddof=1))
    assert lora["high_act_frac"] is None
    assert summary["methods"]["taugate"]["rot0"]["high_act_frac"]["mean"] == pytest.approx(0.3)
    layers = summary["overlap"]["layers"]
    assert [r["jaccard"]["mean"] for r in layers] == pytest.approx([1.0, 0.7])
    assert [r["jaccard_own"]["mean"] for r in layers] == pytest.approx([0.5, 0.35])
    assert summary["overlap"]["average"]["jaccard"]["mean"] == pytest.approx(0.85)
    json.dumps(summary)  # serializable as it is

    t1 = results_table(summary)
    assert "Acc ($45^\\circ$)" in t1 and "LoRA (r=8) & 30 &" in t1 and "GainOnly" not in t1
    assert "0.9320 $\\pm$ 0.0014" in t1
    assert t1.count(r"\\") == 6  # header + five methods
    t2 = ablations_table(summary)
    assert "GainOnly" in t2 and "TauOnly" in t2 and "TauGate" in t2
    t3 = overlap_table(summary)
    assert "Hidden layer 2 & 0.700 $\\pm$ 0.141 & 0.350 $\\pm$ 0.071" in t3 and "Average" in t3
    assert "0.9" in t3 and "50\\%" in t3  # the definition is in the caption


def test_csv_columns_and_empty_cells():
    text = to_csv([{"seed": 0, "method": "lora", "high_act_frac": None, "accuracy": 0.5}],
                  RESULT_COLUMNS)
    header, row = list(csv.reader(text.splitlines()))
    assert header == list(RESULT_COLUMNS)
    assert row[header.index("high_act_frac")] == "" and row[header.index("accuracy")] == "0.500000"


@pytest.mark.parametrize("kwargs,field", [
    ({"seeds": ()}, "seeds"),
    ({"seeds": (1, 1)}, "seeds"),
    ({"methods": ("nope",)}, "methods"),
    ({"adapt_mode": "45"}, "rot"),
    ({"adapt_lr": 0.0}, "adapt_lr"),
    ({"gate_threshold": 1.0}, "gate_threshold"),
    ({"extras": True, "overlap_mode": "rot45"}, "overlap_mode"),
])
def test_invalid_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ExperimentConfig(**kwargs)


def test_reproduce_one_seed_small(data_root, tmp_path, monkeypatch):
    from taugate import cli

    # only this command's module: the test must not depend on every other command importing
    monkeypatch.setattr(cli, "COMMANDS", {"reproduce": cli.COMMANDS["reproduce"]})
    out = tmp_path / "out"
    rc = cli.main(["reproduce", "--seeds", "0", "--extras", "--out", str(out), "--data-root", data_root,
               "--limit-train", "2000", "--limit-test", "500", "--epochs", "1", "--device", "cpu",
               "--quiet"])
    assert rc == 0
    for rel in FILES.values():
        assert (out / rel).is_file() and (out / rel).stat().st_size > 0, rel
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(RESULT_COLUMNS)
    seven = ("frozen", "bitfit", "taugate", "lora", "full_ft", "gain_only", "tau_only")
    expected = {(m, "rot45", ev) for m in seven for ev in ("rot0", "rot45")}
    expected |= {("taugate", "rot0", ev) for ev in ("rot0", "rot45")}
    assert {(r["method"], r["adapt_mode"], r["eval_mode"]) for r in rows} == expected
    assert len(rows) == len(expected)
    for r in rows:
        gated = r["method"] in ("taugate", "tau_only")
        assert (r["high_act_frac"] != "") == gated, r
        # the exported graph is the hard-gated model
        assert float(r["onnx_accuracy"]) == pytest.approx(float(r["hard_accuracy"]), abs=2e-3)
        if not gated:
            assert r["accuracy"] == r["hard_accuracy"]
    with open(out / "overlap.csv", newline="") as f:
        overlap = list(csv.DictReader(f))
    assert list(overlap[0]) == list(OVERLAP_COLUMNS) and [r["layer"] for r in overlap] == ["1", "2"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["seeds"] == [0] and summary["config"]["adapt_lr"] == 0.05
    assert summary["methods"]["full_ft"]["rot45"]["trainable_params"] == 118282
    assert len(summary["overlap"]["layers"]) == 2 and summary["elapsed_seconds"] > 0
    assert (out / FILES["figure_pdf"]).read_bytes().startswith(b"%PDF")
