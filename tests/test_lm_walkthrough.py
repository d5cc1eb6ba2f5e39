"""The walk-through at toy size: results.json in the documented shape; stages resume."""

import json

import pytest

pytest.importorskip("torch")

from taugate.cli import main
from taugate.lab.lm import run


def test_toy_walk_through_writes_the_results(tmp_path, capsys):
    r = run(tmp_path, "toy", progress=False, threads=1)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["modes"].keys() == {"code", "prose"} == r["modes"].keys()
    assert saved["python"] and saved["corpus"]["code"]["train_bytes"] > 0
    for m in saved["modes"].values():
        assert m["ffn_mac_ratio"] >= 3.0
        assert m["dense_perplexity"] == m["frozen_perplexity"] > 1
        assert m["perplexity"] > 1
        assert set(m["tokens_per_s"]) == set(m["dense_tokens_per_s"]) == {"fp32", "int8"}
        # the torch hard-gated mode and its fp32 decode graph agree token for token
        assert m["greedy_match"] is True
        for key in ("tokens_per_s", "dense_tokens_per_s", "tokens_per_s_batch8", "ttft_s"):
            assert all(v > 0 for v in m[key].values()) and set(m[key]) == {"fp32", "int8"}
    assert saved["onnx"]["load_before"] is None or len(saved["onnx"]["load_before"]) == 3
    assert (tmp_path / "bundle" / "manifest.json").is_file()
    # a second run reuses the foundation and the modes: same numbers
    assert main(["lm", "--out", str(tmp_path), "--size", "toy", "--threads", "1", "--quiet",
                 "--no-export"]) == 0
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["onnx"] == "skipped"
    for name, m in saved["modes"].items():
        assert again["modes"][name]["perplexity"] == m["perplexity"]
    assert "results.json" in capsys.readouterr().out


def test_unknown_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match="expected one of toy, small, default, narrow"):
        run(tmp_path, "huge")
