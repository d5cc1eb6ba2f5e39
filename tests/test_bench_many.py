"""``taugate bench --mixed`` / ``--auto`` (taugate/lab/bench_many.py): mixed batches, every-mode
calls and routing timed beside single-mode calls, as a table and as JSON."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from taugate.cli import main
from taugate.exporting.router import RouterConfig, fit_router
from taugate.exporting.router_bundle import write_router


def _rows(mode: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 0.1, (n, 784)).astype(np.float32)
    x[:, slice(0, 392) if mode == 0 else slice(392, 784)] += 0.5
    return x


@pytest.fixture(scope="module")
def routed(tiny_bundle, tmp_path_factory):
    path = tmp_path_factory.mktemp("bench_many") / "bundle"
    shutil.copytree(tiny_bundle, path)
    write_router(path, fit_router({"rot0": _rows(0, 100, 0), "rot45": _rows(1, 100, 1)},
                                  RouterConfig(components=4, hidden=4, steps=30)))
    return path


def test_bench_mixed_and_auto_write_every_comparison(routed, tmp_path, capsys):
    data = tmp_path / "d.npz"
    np.savez(data, x=np.concatenate([_rows(0, 8, 2), _rows(1, 8, 3)]), y=np.zeros(16, np.int64))
    out = tmp_path / "many.json"
    assert main(["bench", str(routed), "--mixed", "--auto", "--batch", "8", "--budget", "0.01",
                 "--data", str(data), "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    got = {(c["what"], c["base"]) for c in doc["comparisons"]}
    assert got == {("mixed", "one_mode"), ("run_all", "separate_calls"), ("route", "one_mode"),
                   ("run_auto", "one_mode")}
    assert all(c["ratio"] > 0 and c["batch"] == 8 and c["threads"] == 1
               for c in doc["comparisons"])
    assert len(doc["machine"]["loadavg_at_start"]) == 3
    assert "route" in capsys.readouterr().out


def test_bench_auto_without_a_router_says_how_to_fit_one(tiny_bundle, capsys):
    assert main(["bench", str(tiny_bundle), "--auto", "--batch", "4", "--budget", "0.01"]) != 0
    assert "taugate route" in capsys.readouterr().err
