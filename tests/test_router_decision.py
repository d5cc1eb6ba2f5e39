"""The router's mode choice inside its graph (``best_mode``, exporting/router.py) against the
choice routers fitted before it left to the runtime (``mode_scores`` + numpy's argmax): the same
routes and unknown flags on random and real-ish rows and on ties; those older router files still
load; a router graph the runtime cannot read is refused, naming the file and what it expected."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from taugate.bundle.errors import BundleIntegrityError, InvalidOutputError
from taugate.bundle.schema import RouterSpec
from taugate.exporting.router import FittedRouter
from taugate.exporting.router_bundle import write_router
from taugate.exporting.router_graph import linear_router_graph, router_graph
from taugate.exporting.synthetic import build_random_bundle
from taugate.runtime import ModeRuntime
from taugate.runtime.routing import UNKNOWN

MODES = ("rot0", "rot45", "rot90")


def _legacy_graph(projection, mlp, scale: float, squares: bool) -> onnx.ModelProto:
    """A router as fitted before ``best_mode``: ``mode_scores`` and ``distance`` out, the squares
    concatenated to the input."""
    proj, proj_b = projection
    w1, b1, w2, b2 = mlp
    f = proj.shape[0] // 2 if squares else proj.shape[0]
    inits = {"proj": proj, "proj_b": proj_b, "w1": w1, "b1": b1, "w2": w2, "b2": b2,
             "sq_w": np.full((proj.shape[1], 1), scale)}
    n = helper.make_node
    read, first = RouterSpec.INPUT, []
    if squares:
        read = "with_squares"
        first = [n("Mul", [RouterSpec.INPUT, RouterSpec.INPUT], ["squares"]),
                 n("Concat", [RouterSpec.INPUT, "squares"], [read], axis=1)]
    nodes = first + [n("Gemm", [read, "proj", "proj_b"], ["white"]),
                     n("Gemm", ["white", "w1", "b1"], ["h_lin"]), n("Relu", ["h_lin"], ["h"]),
                     n("Gemm", ["h", "w2", "b2"], [RouterSpec.SCORES]),
                     n("Mul", ["white", "white"], ["white2"]),
                     n("MatMul", ["white2", "sq_w"], [RouterSpec.DISTANCE])]
    graph = helper.make_graph(
        nodes, "taugate_router",
        [helper.make_tensor_value_info(RouterSpec.INPUT, TensorProto.FLOAT, ["batch", f])],
        [helper.make_tensor_value_info(RouterSpec.SCORES, TensorProto.FLOAT,
                                       ["batch", w2.shape[1]]),
         helper.make_tensor_value_info(RouterSpec.DISTANCE, TensorProto.FLOAT, ["batch", 1])],
        [numpy_helper.from_array(np.ascontiguousarray(v, np.float32), k)
         for k, v in inits.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return proto


def _weights(seed: int, squares: bool, tied: bool = False):
    rng = np.random.default_rng(seed)
    f, k, h = (784 * (2 if squares else 1)), 8, 16
    proj = rng.normal(0, 0.05, (f, k))
    w2 = rng.normal(0, 1, (h, len(MODES)))
    if tied:  # every row's scores equal: the first mode wins
        w2[:] = w2[:, :1]
    mlp = (rng.normal(0, 1, (k, h)), rng.normal(0, 1, h), w2, np.zeros(len(MODES)))
    return (proj, rng.normal(0, 1, k)), mlp, 1.0 / k, squares


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_random_bundle(tmp_path_factory.mktemp("decide") / "b", modes=MODES, seed=4)


def _with_router(bundle, where, proto, threshold=1.5) -> ModeRuntime:
    path = where / "b"
    shutil.copytree(bundle, path)
    write_router(path, FittedRouter(proto, list(MODES), threshold, 99.0, {}))
    return ModeRuntime.open(path, providers="cpu", intra_op_num_threads=1)


def _rows(seed: int) -> np.ndarray:
    """Random rows and real-ish ones (sparse strokes on a dark image), mixed."""
    rng = np.random.default_rng(seed)
    real = np.where(rng.random((64, 784)) < 0.15, rng.uniform(0.5, 1, (64, 784)), 0)
    return np.concatenate([rng.random((64, 784)), real]).astype(np.float32)


@pytest.mark.parametrize("squares", [False, True])
@pytest.mark.parametrize("tied", [False, True])
def test_graph_choice_matches_the_runtime_choice_of_older_routers(bundle, tmp_path, squares,
                                                                  tied):
    weights = _weights(1, squares, tied)
    x = _rows(0)
    (proj, proj_b), scale = weights[0], weights[2]
    z = np.concatenate([x, x * x], axis=1) if squares else x
    cut = float(np.median(scale * ((z @ proj + proj_b) ** 2).sum(axis=1)))  # half flagged
    (tmp_path / "new").mkdir()
    (tmp_path / "old").mkdir()
    new = _with_router(bundle, tmp_path / "new", router_graph(*weights), cut)
    old = _with_router(bundle, tmp_path / "old", _legacy_graph(*weights), cut)
    with new, old:
        assert new._routing()._decides and not old._routing()._decides
        for seed in range(3):
            x = _rows(seed)
            a, b = new.routing(x), old.routing(x)
            assert a.modes == b.modes
            np.testing.assert_array_equal(a.best, b.best)
            np.testing.assert_allclose(a.distance, b.distance, rtol=1e-5)
            flagged = a.distance > cut
            assert 0 < flagged.sum() < len(x)  # both kinds of row are in the test
            assert [m == UNKNOWN for m in a.modes] == flagged.tolist()
            if tied:
                assert set(a.modes) <= {MODES[0], UNKNOWN}
        np.testing.assert_array_equal(new.run_auto(x, unknown="dense").logits,
                                      old.run_auto(x, unknown="dense").logits)


def test_no_threshold_never_flags(bundle, tmp_path):
    weights = _weights(2, False)
    path = tmp_path / "b"
    shutil.copytree(bundle, path)
    write_router(path, FittedRouter(router_graph(*weights), list(MODES), 1.5, 99.0, {}))
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["router"]["threshold"] = None
    (path / "manifest.json").write_text(json.dumps(manifest))
    with ModeRuntime.open(path, providers="cpu") as rt:
        assert UNKNOWN not in rt.route(_rows(0))


def _retyped(proto: onnx.ModelProto, elem_type: int) -> onnx.ModelProto:
    """``proto`` with its ``best_mode`` output declared (and cast) as ``elem_type``."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    for node in g.node:
        if node.output[0] == RouterSpec.BEST:
            node.output[0] = "best_i64"
    g.node.append(helper.make_node("Cast", ["best_i64"], [RouterSpec.BEST], to=elem_type))
    g.output[0].type.tensor_type.elem_type = elem_type
    return out


def test_router_answering_floats_for_modes_is_refused_by_name(bundle, tmp_path):
    proto = _retyped(router_graph(*_weights(3, False)), TensorProto.FLOAT)
    with pytest.raises(BundleIntegrityError, match=r"router: file 'router.onnx': expected .*"
                                                   r"'best_mode' int64 \[batch\].*got"):
        _with_router(bundle, tmp_path, proto)


def test_router_with_an_extra_output_is_refused_by_name(bundle, tmp_path):
    proto = router_graph(*_weights(3, False))
    proto.graph.output.append(helper.make_tensor_value_info("white", TensorProto.FLOAT, None))
    with pytest.raises(BundleIntegrityError, match="router: file 'router.onnx': expected"):
        _with_router(bundle, tmp_path, proto)


class _Answers:
    """A stand-in session answering fixed ``best_mode`` indices (and zero distances)."""

    def __init__(self, best):
        self.best = best

    def run(self, names, feed):
        return [self.best, np.zeros((len(self.best), 1), np.float32)]


def test_router_choosing_a_mode_out_of_range_is_refused_at_run(bundle, tmp_path):
    proto = router_graph(*_weights(3, False))
    w2 = next(t for t in proto.graph.initializer if t.name == "w2")
    b2 = next(t for t in proto.graph.initializer if t.name == "b2")
    wide = np.concatenate([numpy_helper.to_array(w2), np.zeros((16, 1), np.float32)], axis=1)
    w2.CopyFrom(numpy_helper.from_array(wide, "w2"))  # a 4th score: index 3 of 3 modes
    b2.CopyFrom(numpy_helper.from_array(np.array([-1e9, -1e9, -1e9, 0], np.float32), "b2"))
    with _with_router(bundle, tmp_path, proto, threshold=None) as rt:
        router = rt._routing()
        real = router._session
        for wrong in (-1, 2**40):  # below 0 and far above: both refused, never wrapped
            router._session = _Answers(np.full(128, wrong, np.int64))
            with pytest.raises(InvalidOutputError, match=f"from {wrong} to {wrong}"):
                rt.route(_rows(0))
        router._session = real
        with pytest.raises(InvalidOutputError,
                           match=r"'best_mode' indices \[128\] in \[0, 3\).*got \(128,\) "
                                 r"int64 from 3 to 3"):
            rt.route(_rows(0))


def test_linear_router_routes_at_runtime_as_its_weights_say(bundle, tmp_path):
    rng = np.random.default_rng(5)
    k = 13
    w, b = rng.normal(0, 0.05, (784, k + len(MODES))), rng.normal(0, 1, k + len(MODES))
    x = _rows(1)
    z = x.astype(np.float64) @ w + b
    distance = 0.1 * (z[:, :k] ** 2).sum(axis=1)
    cut = float(np.median(distance))
    with _with_router(bundle, tmp_path, linear_router_graph((w, b), k, 0.1), cut) as rt:
        got = rt.routing(x)
    want = np.where(distance > cut, len(MODES), z[:, k:].argmax(axis=1))
    far = np.abs(distance - cut) > 1e-3 * cut  # rows not on the threshold within float error
    assert far.sum() > 100
    assert np.array(got.modes)[far].tolist() == np.array([*MODES, UNKNOWN])[want][far].tolist()


def test_run_auto_checks_the_input_once(bundle, tmp_path, monkeypatch):
    w, b = np.zeros((784, 4)), np.array([0, 0, 0, 3.0])  # 1 component, 3 scores
    w[:, 1] = 10 / 784  # bright rows (random ones) score high in mode 0, dark ones in mode 2
    with _with_router(bundle, tmp_path, linear_router_graph((w, b), 1, 1.0), None) as rt:
        x = _rows(0)
        want = rt.run_auto(x).logits
        assert set(rt.route(x)) == {MODES[0], MODES[2]}  # one run per mode
        calls = []
        check = rt._coerce
        monkeypatch.setattr(rt, "_coerce", lambda v: calls.append(1) or check(v))
        np.testing.assert_array_equal(rt.run_auto(x).logits, want)
        assert len(calls) == 1
