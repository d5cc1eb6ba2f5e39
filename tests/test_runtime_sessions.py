"""taugate/runtime/sessions.py and what it guards in ModeRuntime: the run path (public run by
default, onnxruntime's internal run only when asked for and only when it matches), the output
check at run, the bounded probe at load, files that change after open."""

from __future__ import annotations

import threading

import numpy as np
import onnxruntime as ort
import pytest
from test_runtime_mode_runtime import X, copy_bundle, onnx_bytes, replace_model

from taugate.runtime import (
    BundleIntegrityError,
    InvalidOutputError,
    ModeRuntime,
    TaugateRuntimeError,
)
from taugate.spec import HardenedLayer, HardenedModel


@pytest.fixture(scope="module")
def rt(tiny_bundle):
    with ModeRuntime.open(tiny_bundle) as runtime:
        yield runtime


def test_session_runner_uses_the_internal_run_only_when_it_matches(rt):
    from taugate.runtime.sessions import session_runner

    rt.run("rot0", X)
    session = rt._sessions["rot0"].session
    fast = session_runner(session, "pixels", ["logits"], 784, 10, "rot0", internal=True)
    assert session_runner(session, "pixels", ["logits"], 784, 10, "rot0") == session.run
    assert fast is not session.run
    np.testing.assert_array_equal(fast(["logits"], {"pixels": X})[0],
                                  session.run(["logits"], {"pixels": X})[0])

    class Wrapped:  # same public API, an internal run that disagrees or breaks
        def __init__(self, inner):
            self._sess = type("S", (), {"run": staticmethod(inner)})()

        def get_providers(self):
            return ["CPUExecutionProvider"]

        def run(self, names, feed, options=None):
            return session.run(names, feed, options)

    wrong = Wrapped(lambda names, feed, options: [np.zeros((2, 10), np.float32)])
    assert session_runner(wrong, "pixels", ["logits"], 784, 10, "w", internal=True) == wrong.run
    broken = Wrapped(lambda names, feed: None)  # a changed signature: TypeError
    assert session_runner(broken, "pixels", ["logits"], 784, 10, "b", internal=True) == broken.run


def test_the_internal_run_is_opt_in(tiny_bundle):
    for internal in (False, True):
        with ModeRuntime.open(tiny_bundle, providers="cpu", internal_run=internal) as runtime:
            loaded = runtime._sessions["rot0"]
            assert (loaded.run == loaded.session.run) is not internal
            np.testing.assert_array_equal(runtime.run("rot0", X),
                                          loaded.session.run(["logits"], {"pixels": X})[0])


def test_session_runner_keeps_the_public_run_for_other_providers():
    from taugate.runtime.sessions import session_runner

    class Cuda:
        _sess = object()

        def get_providers(self):
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

        def run(self, names, feed, options=None):
            return [np.zeros((2, 10), np.float32)]

    cuda = Cuda()
    assert session_runner(cuda, "pixels", ["logits"], 784, 10, "cuda", internal=True) == cuda.run


# -- outputs, the bounded probe, files that change after open ------------------------------------

def _nan_bomb_model() -> bytes:
    """Format-1 operators only; finite on the load probe (all 0.5), inf on pixels 0 and 2."""
    w = np.zeros((10, 784), np.float32)
    w[0, :4] = [3e38, -3e38, 3e38, -3e38]
    return onnx_bytes(HardenedModel((HardenedLayer(w, np.zeros(10, np.float32), None),)),
                      {"taugate.mode": "rot0", "taugate.format_version": 2})


def test_outputs_are_checked_at_run(tiny_bundle, tmp_path):
    root = copy_bundle(tiny_bundle, tmp_path)
    replace_model(root, "rot0", _nan_bomb_model())
    rt = ModeRuntime.open(root)  # the probe sees finite logits
    x = np.zeros((2, 784), np.float32)
    assert np.isfinite(rt.run("rot0", x)).all()
    x[1, [0, 2]] = 1.0
    with pytest.raises(InvalidOutputError, match="mode 'rot0': the model produced invalid "
                                                 "output: the logits contain NaN, inf"):
        rt.run("rot0", x)
    assert isinstance(InvalidOutputError("x"), TaugateRuntimeError)


@pytest.mark.filterwarnings("ignore:overflow encountered in dot:RuntimeWarning")  # the refused case
@pytest.mark.parametrize("out,needle", [
    (np.zeros((2, 10), np.float64), "got float64"),
    (np.zeros((2, 9), np.float32), "of shape (2, 9)"),
    (np.full((2, 10), 3e19, np.float32), "beyond 1e19"),
    (np.full((2, 10), -np.inf, np.float32), "NaN, inf"),
])
def test_every_bad_output_is_refused_at_run_without_the_slow_check(tiny_bundle, monkeypatch,
                                                                   out, needle):
    """The run path decides a good output inline (output_error is not called for it) and hands
    every bad one to output_error, which words the error."""
    from taugate.runtime import mode_runtime

    with ModeRuntime.open(tiny_bundle, providers="cpu") as runtime:
        loaded = runtime._sessions["rot0"]
        checked = []
        real = mode_runtime.output_error
        monkeypatch.setattr(mode_runtime, "output_error",
                            lambda *a: checked.append(a) or real(*a))
        runtime.run("rot0", X[:2])
        assert checked == []  # the good output passed inline
        monkeypatch.setattr(loaded, "run", lambda names, feed: [out])
        with pytest.raises(InvalidOutputError, match=needle.replace("(", r"\(").replace(
                ")", r"\)")):
            runtime.run("rot0", X[:2])
        assert len(checked) == 1


@pytest.mark.parametrize("out,needle", [
    (np.zeros((3, 10), np.float32), "shape [2, 10], got float32 of shape (3, 10)"),
    (np.zeros((2, 9), np.float32), "of shape (2, 9)"),
    (np.zeros((2, 10), np.float64), "got float64"),
    (np.full((2, 10), np.nan, np.float32), "NaN"),
    (np.array([[np.inf] + [0.0] * 9] * 2, np.float32), "inf"),
    ([[0.0] * 10] * 2, "got list"),
])
def test_output_error(out, needle):
    from taugate.runtime.sessions import output_error

    assert needle in output_error(out, 2, 10)
    assert output_error(np.zeros((2, 10), np.float32), 2, 10) is None


@pytest.mark.filterwarnings("ignore:overflow encountered in dot:RuntimeWarning")  # the refused case
def test_probe_failures_are_integrity_errors(tiny_bundle, tmp_path, monkeypatch):
    from taugate.runtime import sessions

    def stuck(run, names, feed, timeout_s):
        raise RuntimeError("Exiting due to terminate flag being set to true")

    monkeypatch.setattr(sessions, "bounded_run", stuck)
    with pytest.raises(BundleIntegrityError, match=r"probe run at load failed \(or took over "):
        ModeRuntime.open(tiny_bundle)
    monkeypatch.undo()
    root = copy_bundle(tiny_bundle, tmp_path)
    w = np.ones((10, 784), np.float32) * 1e30  # inf already on the probe input
    replace_model(root, "rot0", onnx_bytes(HardenedModel(
        (HardenedLayer(w, np.zeros(10, np.float32), None),)),
        {"taugate.mode": "rot0", "taugate.format_version": 2}))
    with pytest.raises(BundleIntegrityError, match="probe run at load gave invalid output"):
        ModeRuntime.open(root)


def test_bounded_run_stops_onnxruntime():
    from onnx import TensorProto, helper, numpy_helper

    from taugate.runtime.sessions import bounded_run

    w = numpy_helper.from_array(np.eye(256, dtype=np.float32), "w")
    nodes = [helper.make_node("MatMul", [f"h{i}", "w"], [f"h{i + 1}"]) for i in range(200)]
    graph = helper.make_graph(nodes, "slow", [helper.make_tensor_value_info(
        "h0", TensorProto.FLOAT, [4096, 256])], [helper.make_tensor_value_info(
            "h200", TensorProto.FLOAT, [4096, 256])], initializer=[w])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep 200 nodes
    session = ort.InferenceSession(proto.SerializeToString(), opts,
                                   providers=["CPUExecutionProvider"])
    feed = {"h0": np.ones((4096, 256), np.float32)}
    # 200 x 0.27 GFLOP: seconds of work; stopped after 50 ms
    with pytest.raises(Exception, match="terminate"):
        bounded_run(session.run, None, feed, 0.05)
    calls = []

    def polite(names, feed, options):  # returns once told to stop
        while not options.terminate:
            threading.Event().wait(0.001)
        calls.append(True)
        return ["stopped"]

    assert bounded_run(polite, None, {}, 0.01) == ["stopped"] and calls


def test_changed_or_deleted_files_make_modes_unavailable(tiny_bundle, tmp_path):
    root = copy_bundle(tiny_bundle, tmp_path)
    rt = ModeRuntime.open(root, max_sessions=1)
    assert rt.unavailable() == {}
    (root / "modes" / "rot0.onnx").unlink()
    with (root / "modes" / "rot45.onnx").open("ab") as f:
        f.write(b"\0")
    down = rt.unavailable()
    assert set(down) == {"rot0", "rot45"}
    assert "gone since open" in down["rot0"] and "changed since open" in down["rot45"]
    with pytest.raises(BundleIntegrityError, match="missing from bundle"):
        rt.run("rot0", X)  # evicted (max_sessions=1): reloading finds the file gone
    assert "missing from bundle" in rt.unavailable()["rot0"]
