"""The report: rendered from a real (tiny) benchmark JSON, a random bundle, and small reproduce
and sweep outputs; every number checked here is read back from those inputs."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from taugate.cli import main
from taugate.exporting.synthetic import build_random_bundle
from taugate.lab.report import ReportConfig, build_report
from taugate.lab.report.figures import pareto_front
from taugate.lab.report.units import jaccard_matrix
from taugate.summaries import jaccard

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A random pruned bundle, a benchmark JSON from actually running the latency and accuracy
    suites on it (few rounds), and sweep + reproduce outputs with recognisable numbers."""
    root = tmp_path_factory.mktemp("report_inputs")
    bundle = build_random_bundle(root / "bundle", modes=("rot0", "rot45"), pruned=True)
    bench = root / "bench.json"
    env = {k: v for k, v in os.environ.items() if k != "TAUGATE_DATA"}
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks/test_bench_latency.py",
         "benchmarks/test_bench_accuracy.py", "-q", "-p", "no:cacheprovider",
         "--bundle", str(bundle), "--bench-batches", "1,16", "--bench-threads", "1",
         "--bench-budget", "0.01", f"--benchmark-json={bench}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    sweep = root / "sweep"
    sweep.mkdir()
    rows = [{"width": 128, "mode": "rot45", "strength": s, "units_kept": k,
             "units_total": "128;128", "macs": m, "dense_macs": 118282, "mac_ratio": 118282 / m,
             "acc_mode": a, "acc_other": 0.5, "dense_acc_mode": 0.9701, "dense_acc_other": 0.9702,
             "speedup_b1": 1.0, "speedup_b64": 1.1, "speedup_b256": 1.2, "speedup_b4096": q}
            for s, k, m, a, q in [(0.0, "128;128", 118282, 0.9713, 0.99),
                                  (0.1, "66;92", 62236, 0.9467, 1.87),
                                  (0.2, "60;90", 64000, 0.9311, 1.75)]]
    with (sweep / "sweep.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    rep = root / "reproduce"
    rep.mkdir()
    with (rep / "results.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["seed", "method", "adapt_mode", "eval_mode", "accuracy", "hard_accuracy",
                    "trainable_params", "high_act_frac"])
        for seed, acc in ((0, 0.9111), (1, 0.9133)):
            for method in ("frozen", "taugate"):
                for ev in ("rot0", "rot45"):
                    w.writerow([seed, method, "rot45", ev, acc, acc, 512, ""])
    return {"bundle": bundle, "bench": bench, "sweep": sweep, "reproduce": rep, "root": root}


@pytest.fixture(scope="module")
def report(inputs):
    out = inputs["root"] / "report"
    result = build_report(ReportConfig(bench=str(inputs["bench"]), bundle=str(inputs["bundle"]),
                                       reproduce=str(inputs["reproduce"]),
                                       sweep=str(inputs["sweep"]), out=str(out)))
    return result, result.path.read_text("utf-8")


def test_writes_markdown_and_every_figure(report):
    result, _ = report
    names = sorted(p.name for p in result.figures)
    assert names == ["accuracy_vs_mac_ratio.png", "active_overlap.png", "firing_rates.png",
                     "method_accuracy.png", "speedup_vs_batch.png"]
    for p in result.figures:
        assert p.read_bytes()[:8] == PNG and p.stat().st_size > 5000
        assert f"](figures/{p.name})" in report[1]
    assert result.missing == []


def test_latency_and_accuracy_numbers_come_from_the_json(inputs, report):
    text = report[1]
    data = json.loads(inputs["bench"].read_text())
    infos = [b["extra_info"] for b in data["benchmarks"]]
    for info in (i for i in infos if i["kind"] == "latency"):
        assert f"{info['speedup_ort']:.2f}× / {info['speedup_runtime']:.2f}×" in text
        assert f"{info['mac_ratio']:.2f}×" in text
    for info in (i for i in infos if i["kind"] == "accuracy"):
        for acc in info["accuracy"].values():
            assert f"{acc:.4f}" in text
    assert data["machine_info"]["taugate"]["onnxruntime"] in text


def test_unit_overlap_numbers_come_from_the_manifest(inputs, report):
    modes = json.loads((inputs["bundle"] / "manifest.json").read_text())["modes"]
    a, b = (set(modes[m]["kept_indices"][0]) for m in ("rot0", "rot45"))
    c, d = (set(modes[m]["kept_indices"][1]) for m in ("rot0", "rot45"))
    overall = len(a & b) + len(c & d)
    overall /= len(a | b) + len(c | d)
    assert "| rot0 | taugate | " in report[1]
    assert f"{overall:.2f} |" in report[1]


def test_sweep_and_reproduce_numbers_come_from_their_files(report):
    text = report[1]
    assert "0.9467" in text and "1.87×" in text and "66/128 92/128" in text  # Pareto front
    assert "0.9311" not in text  # dominated: not in the front table
    assert f"{np.mean([0.9111, 0.9133]):.4f} ± {np.std([0.9111, 0.9133], ddof=1):.4f}" in text


def test_missing_inputs_name_the_command_instead_of_crashing(tmp_path):
    result = build_report(ReportConfig(bench=str(tmp_path / "none.json"), bundle=None,
                                       reproduce=str(tmp_path / "r"), sweep=str(tmp_path / "s"),
                                       out=str(tmp_path / "report")))
    text = result.path.read_text("utf-8")
    assert result.figures == []
    assert set(result.missing) == {"latency", "accuracy", "units", "sweep", "reproduce"}
    for command in ("make bench", "taugate sweep", "taugate reproduce"):
        assert command in text


def test_cli_report(inputs, tmp_path, capsys):
    assert main(["report", "--bench", str(inputs["bench"]), "--bundle", str(inputs["bundle"]),
                 "--reproduce", str(tmp_path / "none"), "--sweep", str(inputs["sweep"]),
                 "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "README.md").is_file()
    assert "reproduce" in capsys.readouterr().out


@pytest.mark.parametrize("a, b, expected", [
    (set(), set(), 1.0), ({1, 2}, {1, 2}, 1.0), ({1, 2}, {3}, 0.0), ({1, 2, 3}, {2, 3, 4}, 0.5),
])
def test_jaccard(a, b, expected):
    assert jaccard(a, b) == expected


def test_jaccard_matrix_per_layer_and_overall():
    modes = {"a": {"units_total": [4, 2], "kept_indices": [[0, 1], [0]]},
             "b": {"units_total": [4, 2], "kept_indices": [[1, 2], [0, 1]]}}
    np.testing.assert_allclose(jaccard_matrix(modes, 0), [[1, 1 / 3], [1 / 3, 1]])
    np.testing.assert_allclose(jaccard_matrix(modes, 1), [[1, 0.5], [0.5, 1]])
    np.testing.assert_allclose(jaccard_matrix(modes), [[1, 2 / 5], [2 / 5, 1]])


@pytest.mark.parametrize("points, front", [
    ([(1, 0.9), (2, 0.8), (3, 0.85)], [(1, 0.9), (3, 0.85)]),
    ([(1, 0.9)], [(1, 0.9)]),
    ([(2, 0.5), (1, 0.4)], [(2, 0.5)]),
])
def test_pareto_front(points, front):
    assert pareto_front(points) == front
