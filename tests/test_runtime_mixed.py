"""ModeRuntime.run_mixed and run_all: exactly what one ``run`` per mode gives (fp32 and int8,
shared and standalone layouts), repeated and empty modes, unknown names refused."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import shared_backbone as sb

from taugate.runtime import InputError, ModeRuntime, UnknownModeError

N_MODES = 4


@pytest.fixture(scope="module", params=["shared", "standalone"])
def bundle(request, tmp_path_factory):
    path, _ = sb.build(tmp_path_factory.mktemp(request.param) / "b", N_MODES, widths=(64, 48),
                       shared=request.param == "shared", precisions=("fp32", "int8"))
    return path


def _x(n, seed=0):
    return np.random.default_rng(seed).random((n, 784), dtype=np.float32)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_run_mixed_matches_run_per_row(bundle, precision):
    rt = ModeRuntime.open(bundle, providers="cpu", precision=precision)
    x = _x(37)
    rng = np.random.default_rng(1)
    names = rng.choice(rt.modes + ["dense"], size=37)  # a numpy str array, modes repeated
    got = rt.run_mixed(names, x)
    want = np.empty((37, 10), np.float32)
    for mode in set(names):  # one run per mode on its rows: int8 quantizes each call's batch
        want[names == mode] = rt.run(str(mode), x[names == mode])
    assert got.shape == (37, 10) and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-5
    assert np.abs(rt.run_mixed(list(names), x) - got).max() == 0  # a list works the same
    one = rt.run_mixed([rt.modes[1]] * 5, x[:5])  # a single mode
    assert np.abs(one - rt.run(rt.modes[1], x[:5])).max() <= 1e-5


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_run_all_matches_separate_runs(bundle, precision):
    rt = ModeRuntime.open(bundle, providers="cpu", precision=precision)
    x = _x(64, seed=2)
    every = rt.run_all(x)
    assert list(every) == rt.modes
    for mode, logits in every.items():
        assert np.abs(logits - rt.run(mode, x)).max() <= 1e-5, mode
    chosen = rt.run_all(x, modes=[rt.modes[2], rt.modes[0], rt.modes[2]])
    assert list(chosen) == [rt.modes[2], rt.modes[0]]
    assert np.abs(chosen[rt.modes[0]] - every[rt.modes[0]]).max() <= 1e-5


def test_run_all_shares_the_first_layer_on_the_shared_layout(bundle):
    rt = ModeRuntime.open(bundle, providers="cpu")
    rt.run_all(_x(3))
    plan = rt._shared_plans[tuple(rt.modes)]
    if rt.manifest.backbone is None:  # standalone: the weights live in each graph
        assert plan.names == [] and plan.alone == rt.modes
    else:
        assert plan.names == rt.modes and plan.alone == []


def test_empty_batches(bundle):
    rt = ModeRuntime.open(bundle, providers="cpu")
    empty = np.zeros((0, 784), np.float32)
    assert rt.run_mixed([], empty).shape == (0, 10)
    assert {m: v.shape for m, v in rt.run_all(empty).items()} == {m: (0, 10) for m in rt.modes}


def test_bad_names_are_refused_clearly(bundle):
    rt = ModeRuntime.open(bundle, providers="cpu")
    x = _x(3)
    with pytest.raises(UnknownModeError, match=r"modes\[2\]: unknown mode 'nope'; valid: 'm0000'"):
        rt.run_mixed([rt.modes[0], rt.modes[1], "nope"], x)
    with pytest.raises(InputError, match=r"expected 3 names \(one per row of x\), got shape \[2\]"):
        rt.run_mixed(rt.modes[:2], x)
    with pytest.raises(InputError, match="a single str"):
        rt.run_mixed(rt.modes[0], x)
    with pytest.raises(UnknownModeError, match="unknown mode 'nope'"):
        rt.run_all(x, modes=["nope"])


def test_run_all_reruns_rows_near_a_gate(bundle, monkeypatch):
    """Rows whose gate input lies within the tolerance of a threshold (flagged inside the shared
    graph) are recomputed by the mode's own session: with a tolerance that takes every row,
    every row of every checked mode is rerun and the answer is ``run``'s exactly; with none,
    no row is."""
    from taugate.runtime import mixed, shared_layer

    reran = []
    real = mixed.run_session
    monkeypatch.setattr(mixed, "run_session",
                        lambda rt, mode, b: reran.append((mode, len(b))) or real(rt, mode, b))
    x = _x(16, seed=3)
    monkeypatch.setattr(shared_layer, "GATE_TOL", -1.0)  # nothing is near
    rt = ModeRuntime.open(bundle, providers="cpu")
    rt.run_all(x)
    shared = rt.manifest.backbone is not None
    assert reran == ([] if shared else [(m, 16) for m in rt.modes])
    reran.clear()
    monkeypatch.setattr(shared_layer, "GATE_TOL", 1e9)  # every row is near
    rt = ModeRuntime.open(bundle, providers="cpu")
    every = rt.run_all(x)
    for mode, logits in every.items():
        assert np.array_equal(logits, rt.run(mode, x)), mode
    if shared:  # the shared graph ran and its in-graph check flagged every row
        plan = rt._shared_plans[tuple(rt.modes)]
        assert plan.checked and reran == [(rt.modes[k], 16) for k in plan.checked]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_run_mixed_in_one_graph_matches_run(bundle, precision):
    """On a shared-layout fp32 bundle, and on any int8 bundle (its files' own initializers
    carried over), a mixed batch of at least half the modes runs as one graph holding every
    mode (absent modes get no rows); elsewhere rows are grouped per mode. Either way each
    row's answer is ``run``'s on that mode's rows (int8: the same per-call quantization)."""
    rt = ModeRuntime.open(bundle, providers="cpu", precision=precision)
    x = _x(30, seed=4)
    names = np.array([rt.modes[i % 3] for i in range(30)])  # 3 of the 4 modes
    np.random.default_rng(5).shuffle(names)
    got = rt.run_mixed(names, x)
    for mode in rt.modes[:3]:
        assert np.abs(got[names == mode] - rt.run(mode, x[names == mode])).max() <= 1e-5
    graph = rt._mixed_graph[1]
    fused = rt.manifest.backbone is not None or precision == "int8"
    assert (graph is not None) == fused
    if fused:
        assert graph.names == rt.modes and graph.serves(rt.modes[:3])
        assert not graph.serves(rt.modes[:1]) and not graph.serves(rt.modes[:2][::-1])
    if fused and precision == "fp32":
        # onnxruntime copies external initializers: CPU sessions keep no materialized arrays
        assert rt._sessions[rt.modes[0]].keep is None


def test_run_mixed_keeps_to_max_sessions(bundle):
    """A runtime bounded by ``max_sessions`` gets no graph holding every mode's weights; its
    mixed batches are grouped per mode, with the same answers."""
    rt = ModeRuntime.open(bundle, providers="cpu", max_sessions=2, lazy=True)
    x = _x(12, seed=6)
    names = [rt.modes[i % 3] for i in range(12)]
    got = rt.run_mixed(names, x)
    assert rt._mixed_graph[1] is None
    for mode in rt.modes[:3]:
        rows = [i for i, m in enumerate(names) if m == mode]
        assert np.abs(got[rows] - rt.run(mode, x[rows])).max() <= 1e-5
