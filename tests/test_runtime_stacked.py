"""The stacked graphs of ``run_mixed`` and ``run_all`` (taugate/runtime/stacked*.py): within
1e-5 of one ``run`` per mode on uneven, partial and tiny batches, rows near a gate threshold
rerun by the mode's own session, and the branch graphs kept where the modes do not stack."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import shared_backbone as sb

from taugate.runtime import ModeRuntime, mixed, shared_layer, stacked_mixed
from taugate.runtime.mixed_graph import _graph
from taugate.runtime.stacked import stack_nodes


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    path, _ = sb.build(tmp_path_factory.mktemp("stacked") / "b", 4, widths=(64, 48),
                       precisions=("fp32", "int8"))
    return path


def _x(n, seed=0):
    return np.random.default_rng(seed).random((n, 784), dtype=np.float32)


def _per_mode(rt, names, x):
    want = np.empty((len(names), 10), np.float32)
    for mode in set(names):
        rows = [i for i, m in enumerate(names) if m == mode]
        want[rows] = rt.run(mode, x[rows])
    return want


@pytest.mark.parametrize("counts", [[9, 7, 5, 3], [10, 6, 4, 0], [1, 1, 0, 0], [0, 0, 1, 0]])
def test_stacked_run_mixed_matches_run(bundle, counts):
    """Uneven rows, an absent mode, two rows, one row: each row is its mode's ``run``; the
    stacked graph answers every batch of two or more modes (one row: the mode's session)."""
    rt = ModeRuntime.open(bundle, providers="cpu")
    names = [rt.modes[k] for k, c in enumerate(counts) for _ in range(c)]
    np.random.default_rng(sum(counts)).shuffle(names)
    x = _x(len(names), seed=len(names))
    got = mixed.run_mixed(rt, names, x, stacked=True)
    assert got.shape == (len(names), 10) and got.dtype == np.float32
    assert np.abs(got - _per_mode(rt, names, x)).max() <= 1e-5
    graph = rt.__dict__.get("_stacked_mixed", (None, None))[1]
    if sum(c > 0 for c in counts) > 1:
        assert graph is not None and graph.runs == 1 and graph.nbytes > 0
    assert np.abs(rt.run_mixed(names, x) - got).max() <= 1e-5  # the default path agrees


def test_too_much_padding_uses_the_branch_graph(bundle):
    """A batch whose padded rows would exceed MAX_PADDING per row is not stacked."""
    rt = ModeRuntime.open(bundle, providers="cpu")
    names = [rt.modes[0]] * 30 + rt.modes[1:]
    x = _x(len(names), seed=7)
    got = mixed.run_mixed(rt, names, x, stacked=True)
    assert rt._stacked_mixed[1].runs == 0 and rt._mixed_graph[1] is not None
    assert np.abs(got - _per_mode(rt, names, x)).max() <= 1e-5


def test_stacked_run_all_matches_run(bundle):
    rt = ModeRuntime.open(bundle, providers="cpu")
    x = _x(21, seed=3)
    every = mixed.run_all(rt, x, stacked=True)
    plan = rt._shared_plans[(tuple(rt.modes), "stacked")]
    assert plan.stacked and plan.names == rt.modes and plan.nbytes > 0
    for mode in rt.modes:
        assert np.abs(every[mode] - rt.run(mode, x)).max() <= 1e-5, mode
    some = mixed.run_all(rt, x[:1], modes=rt.modes[2:], stacked=True)  # a single row
    for mode in rt.modes[2:]:
        assert np.abs(some[mode] - rt.run(mode, x[:1])).max() <= 1e-5, mode


def _on_threshold(rt, mode):
    """A row whose first gate input of ``mode`` lies on its threshold (within float32
    rounding): the materialized rows are scaled by 1/t, the gate is ThresholdedRelu(1)."""
    nodes, _, _, _, weights, _ = _graph(rt, mode)
    entry = rt._served(mode)
    scale = shared_layer.row_scales(entry, shared_layer.mode_tensors(rt, entry), nodes)
    gemm = nodes[0]
    assert gemm[0] == "Gemm" and nodes[1][0] == "ThresholdedRelu"
    w, b = weights[gemm[1][1]].astype(np.float64), weights[gemm[1][2]].astype(np.float64)
    r = scale[gemm[2][0]]
    units = np.flatnonzero(r != shared_layer.ZERO_SCALE)
    u = units[np.argmax(np.abs(w[units]).max(axis=1))]
    j = int(np.argmax(np.abs(w[u])))
    row = np.zeros(784, np.float32)
    row[j] = np.float32((1.0 - b[u]) / w[u, j])
    z = np.float64(w[u, j]) * np.float64(row[j]) + b[u]
    assert abs(z - 1.0) < shared_layer.GATE_TOL * r[u]  # inside the band: must be rerun
    return row


def test_rows_on_a_threshold_are_rerun(bundle, monkeypatch):
    """A row whose gate input sits on the threshold is flagged by the stacked graph's own
    check and recomputed by that mode's session, in run_mixed and in run_all."""
    rt = ModeRuntime.open(bundle, providers="cpu")
    mode = rt.modes[1]
    x = _x(12, seed=11)
    x[5] = _on_threshold(rt, mode)
    names = [rt.modes[i % 4] for i in range(12)]
    names[5] = mode
    reran = []
    real = mixed.run_session
    monkeypatch.setattr(mixed, "run_session",
                        lambda rt_, m, b: reran.append((m, b.copy())) or real(rt_, m, b))
    got = mixed.run_mixed(rt, names, x, stacked=True)
    assert rt._stacked_mixed[1].runs == 1
    assert any(m == mode and any(np.array_equal(r, x[5]) for r in b) for m, b in reran)
    monkeypatch.setattr(mixed, "run_session", real)
    assert np.abs(got - _per_mode(rt, names, x)).max() <= 1e-5
    assert np.array_equal(got[5], rt.run(mode, x[5:6])[0])
    reran.clear()
    monkeypatch.setattr(mixed, "run_session",
                        lambda rt_, m, b: reran.append((m, b.copy())) or real(rt_, m, b))
    every = mixed.run_all(rt, x, stacked=True)
    assert any(m == mode and any(np.array_equal(r, x[5]) for r in b) for m, b in reran)
    assert np.array_equal(every[mode][5], rt.run(mode, x[5:6])[0])


def test_graphs_that_differ_keep_the_branches(bundle, monkeypatch):
    """A mode whose operators differ (here an extra Relu, a no-op after ThresholdedRelu) gets
    no stacked graph: the branch graph answers, exactly as before."""
    def patched(rt, name):
        part = _graph(rt, name)
        if name != rt.modes[1]:
            return part
        nodes = list(part[0])
        op, ins, outs, at = nodes[1]
        nodes.insert(2, ("Relu", [outs[0]], [outs[0] + "/r"], {}))
        nodes[3] = (nodes[3][0], [outs[0] + "/r", *nodes[3][1][1:]], nodes[3][2], nodes[3][3])
        return (nodes, *part[1:])

    monkeypatch.setattr(stacked_mixed, "_graph", patched)
    rt = ModeRuntime.open(bundle, providers="cpu")
    names = [rt.modes[i % 4] for i in range(16)]
    x = _x(16, seed=13)
    got = mixed.run_mixed(rt, names, x, stacked=True)
    assert rt._stacked_mixed[1] is None and rt._mixed_graph[1] is not None
    assert np.abs(got - _per_mode(rt, names, x)).max() <= 1e-5
    a = [("Gemm", ["x", "w", "b"], ["y"], {"transB": 1})]
    b = [("Gemm", ["x", "w", "b"], ["y"], {"transB": 1}), ("Relu", ["y"], ["z"], {})]
    w = {"w": np.ones((2, 3), np.float32), "b": np.zeros(2, np.float32)}
    assert stack_nodes([a, b], [w, w], [{}, {}], "x", [3, 3], transposed=True) is None
    assert stack_nodes([a, a], [w, w], [{}, {}], "x", [3, 3], transposed=True) is not None


def test_no_stacked_graph_for_int8_or_over_the_byte_bound(bundle, monkeypatch):
    rt8 = ModeRuntime.open(bundle, providers="cpu", precision="int8")
    names = [rt8.modes[i % 4] for i in range(8)]
    x = _x(8, seed=17)
    got = mixed.run_mixed(rt8, names, x, stacked=True)
    assert rt8._stacked_mixed[1] is None
    assert np.abs(got - _per_mode(rt8, names, x)).max() <= 1e-5
    monkeypatch.setattr(stacked_mixed, "MAX_BYTES", 1)
    rt = ModeRuntime.open(bundle, providers="cpu")
    mixed.run_mixed(rt, [rt.modes[i % 4] for i in range(8)], x, stacked=True)
    assert rt._stacked_mixed[1] is None
