"""ModeRuntime (taugate.runtime.engine): golden outputs, bundle refusals, sessions, threads."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import random_hardened

from taugate.export.hardened import HardenedLayer, HardenedModel
from taugate.runtime import (
    DENSE,
    BundleFormatError,
    BundleIntegrityError,
    InvalidOutputError,
    ModeRuntime,
    RuntimeConfigError,
    TaugateRuntimeError,
    UnknownModeError,
)

X = np.random.default_rng(7).random((6, 784), dtype=np.float32)
# build_tiny_bundle: dense = seed 0 (ReLU), rot0 = seed 1 (ReLU), rot45 = seed 2 (thresholds)
GOLDEN = {DENSE: random_hardened(0, thresholds=False), "rot0": random_hardened(1, thresholds=False),
          "rot45": random_hardened(2, thresholds=True)}


def copy_bundle(src: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(src, tmp_path / "bundle"))


def edit_manifest(root: Path, edit) -> None:
    path = root / "manifest.json"
    data = json.loads(path.read_text("utf-8"))
    edit(data)
    path.write_text(json.dumps(data), "utf-8")


def replace_model(root: Path, mode: str, data: bytes, fix_hash: bool = True) -> None:
    (root / "modes" / f"{mode}.onnx").write_bytes(data)
    if fix_hash:
        sha = hashlib.sha256(data).hexdigest()
        edit_manifest(root, lambda m: m["modes"][mode].__setitem__("sha256", sha))


def onnx_bytes(model, metadata) -> bytes:
    from taugate.export.graph import build_graph

    return build_graph(model, "m", metadata).SerializeToString()


@pytest.fixture(scope="module")
def rt(tiny_bundle):
    with ModeRuntime.open(tiny_bundle) as runtime:
        yield runtime


@pytest.mark.parametrize("mode", [DENSE, "rot0", "rot45"])
def test_run_matches_numpy_golden(rt, mode):
    logits = rt.run(mode, X)
    assert logits.dtype == np.float32 and logits.shape == (6, 10)
    np.testing.assert_allclose(logits, GOLDEN[mode].forward(X), rtol=1e-4, atol=1e-5)
    classes = rt.predict(mode, X.reshape(6, 28, 28))
    assert classes.dtype == np.int64
    np.testing.assert_array_equal(classes, logits.argmax(axis=1))


def test_facts(rt, tiny_bundle):
    assert rt.modes == ["rot0", "rot45"]
    assert rt.providers == ["CPUExecutionProvider"]
    assert rt.bundle_dir == tiny_bundle and rt.manifest.format_version == 2
    assert len(rt.labels) == 10
    np.testing.assert_array_equal(rt.run_dense(X), rt.run(DENSE, X))
    info = rt.info("rot45")
    assert info["facts"] == {"angle": 45.0} and info["mac_ratio"] == pytest.approx(1.0)
    assert "kept_indices" not in info and info["name"] == "rot45"
    assert "rot0" in repr(rt) or "modes=2" in repr(rt)


def test_unknown_mode_message_is_readable(rt):
    with pytest.raises(UnknownModeError) as info:
        rt.run("rot90", X)
    assert isinstance(info.value, KeyError)
    assert str(info.value).startswith("unknown mode 'rot90'; valid: 'rot0', 'rot45'")
    with pytest.raises(UnknownModeError):
        rt.info("rot90")


def _abs_path(root, tmp):
    edit_manifest(root, lambda m: m["modes"]["rot0"].__setitem__(
        "file", str((root / "modes" / "rot0.onnx").resolve())))


def _dotdot(root, tmp):
    shutil.copy(root / "modes" / "rot0.onnx", tmp / "outside.onnx")
    edit_manifest(root, lambda m: m["modes"]["rot0"].__setitem__("file", "../outside.onnx"))


def _symlink_out(root, tmp):
    target = tmp / "outside.onnx"
    shutil.move(str(root / "modes" / "rot0.onnx"), target)
    os.symlink(target, root / "modes" / "rot0.onnx")


def _missing(root, tmp):
    (root / "modes" / "rot45.onnx").unlink()


def _tampered(root, tmp):
    replace_model(root, "rot0", (root / "modes" / "rot45.onnx").read_bytes(), fix_hash=False)


def _garbage(root, tmp):
    replace_model(root, "rot0", b"this is not an onnx model")


def _future_ir(root, tmp):  # well-formed protobuf, allowed operators, but not loadable
    proto = onnx.load_from_string((root / "modes" / "rot0.onnx").read_bytes())
    proto.ir_version = 1000
    replace_model(root, "rot0", proto.SerializeToString())


def _wrong_width(root, tmp):
    meta = {"taugate.mode": "rot0", "taugate.format_version": 1}
    replace_model(root, "rot0", onnx_bytes(random_hardened(1, n_in=100), meta))


def _wrong_classes(root, tmp):
    meta = {"taugate.mode": "rot0", "taugate.format_version": 1}
    replace_model(root, "rot0", onnx_bytes(random_hardened(1, n_out=7), meta))


def _wrong_metadata(root, tmp):  # a swapped file whose hash was "fixed" too
    meta = {"taugate.mode": "rot45", "taugate.format_version": 1}
    replace_model(root, "rot0", onnx_bytes(random_hardened(1), meta))


# (breakage, message fragment, detected at open even with lazy=True)
REFUSALS = [
    ("absolute-path", _abs_path, "absolute path", True),
    ("dotdot", _dotdot, "'..' is not allowed", True),
    ("symlink-out", _symlink_out, "outside the bundle directory", True),
    ("missing-file", _missing, "missing from bundle", True),
    ("sha-mismatch", _tampered, "sha256 mismatch", True),
    ("not-onnx", _garbage, "not a well-formed ONNX model", True),
    ("unloadable", _future_ir, "onnxruntime cannot load", False),
    ("input-width", _wrong_width, "model inputs", False),
    ("output-classes", _wrong_classes, "model outputs", False),
    ("metadata", _wrong_metadata, "model metadata", False),
]


@pytest.mark.parametrize("lazy", [False, True], ids=["eager", "lazy"])
@pytest.mark.parametrize("breakage,needle,at_open", [r[1:] for r in REFUSALS],
                         ids=[r[0] for r in REFUSALS])
def test_refuses_broken_bundles(tiny_bundle, tmp_path, breakage, needle, at_open, lazy):
    root = copy_bundle(tiny_bundle, tmp_path)
    breakage(root, tmp_path)
    if at_open or not lazy:
        with pytest.raises(BundleIntegrityError) as info:
            ModeRuntime.open(root, lazy=lazy)
    else:
        rt = ModeRuntime.open(root, lazy=True)
        rt.run("rot45", X)  # the intact modes still work
        with pytest.raises(BundleIntegrityError) as info:
            rt.run("rot0", X)
    msg = str(info.value)
    assert needle in msg and ("rot0" in msg or "rot45" in msg)


def test_refuses_unknown_format_version(tiny_bundle, tmp_path):
    root = copy_bundle(tiny_bundle, tmp_path)
    edit_manifest(root, lambda m: m.__setitem__("format_version", 3))
    with pytest.raises(BundleFormatError, match=r"format_version 3 .*supported: 1, 2"):
        ModeRuntime.open(root)


def test_file_changed_after_open_is_caught(tiny_bundle, tmp_path):
    root = copy_bundle(tiny_bundle, tmp_path)
    rt = ModeRuntime.open(root, lazy=True)
    assert rt.loaded_modes == []
    (root / "modes" / "rot0.onnx").write_bytes((root / "modes" / "rot45.onnx").read_bytes())
    with pytest.raises(BundleIntegrityError, match="sha256 mismatch"):
        rt.run("rot0", X)


def test_lazy_loading_warmup_and_lru(tiny_bundle):
    rt = ModeRuntime.open(tiny_bundle, lazy=True, max_sessions=2)
    assert rt.loaded_modes == []
    rt.warmup()
    assert sorted(rt.loaded_modes) == ["rot0", "rot45"]
    rt.run("rot0", X)  # rot0 is now the most recent: loading dense evicts rot45
    rt.run(DENSE, X)
    assert sorted(rt.loaded_modes) == [DENSE, "rot0"]
    np.testing.assert_allclose(rt.run("rot45", X), GOLDEN["rot45"].forward(X), rtol=1e-4,
                               atol=1e-5)
    assert sorted(rt.loaded_modes) == [DENSE, "rot45"]
    rt.close()
    assert rt.loaded_modes == []


@pytest.mark.parametrize("kwargs,needle", [
    ({"max_sessions": 0}, "max_sessions"),
    ({"intra_op_num_threads": -1}, "intra_op_num_threads"),
    ({"graph_optimization_level": "max"}, "graph_optimization_level"),
])
def test_refuses_bad_options(tiny_bundle, kwargs, needle):
    with pytest.raises(RuntimeConfigError, match=needle):
        ModeRuntime.open(tiny_bundle, **kwargs)


def test_session_options_pass_through(tiny_bundle):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    rt = ModeRuntime.open(tiny_bundle, session_options=opts)
    np.testing.assert_allclose(rt.run("rot0", X), GOLDEN["rot0"].forward(X), rtol=1e-4,
                               atol=1e-5)
    with pytest.raises(RuntimeConfigError, match="not both"):
        ModeRuntime.open(tiny_bundle, session_options=opts, intra_op_num_threads=2)
    rt = ModeRuntime.open(tiny_bundle, intra_op_num_threads=1, inter_op_num_threads=1,
                          graph_optimization_level="basic", validate=False)
    np.testing.assert_allclose(rt.run("rot45", X), GOLDEN["rot45"].forward(X), rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize("max_sessions", [None, 2], ids=["all-loaded", "evicting"])
def test_threads_get_single_threaded_results(tiny_bundle, max_sessions, caplog):
    caplog.set_level("DEBUG", logger="taugate.runtime")
    names = [DENSE, "rot0", "rot45"]
    batches = [np.random.default_rng(i).random((1 + i % 4, 784), dtype=np.float32)
               for i in range(10)]
    reference = ModeRuntime.open(tiny_bundle)
    expected = {(m, i): reference.run(m, b) for m in names for i, b in enumerate(batches)}
    rt = ModeRuntime.open(tiny_bundle, max_sessions=max_sessions, lazy=True,
                          intra_op_num_threads=1)

    def worker(seed: int) -> int:
        rng = np.random.default_rng(seed)
        m = names[seed % 3]
        for _ in range(200):
            if rng.random() < 0.25:  # runs of one mode: evictions stay frequent, not constant
                m = names[rng.integers(3)]
            i = int(rng.integers(len(batches)))
            np.testing.assert_allclose(rt.run(m, batches[i]), expected[m, i], rtol=1e-6,
                                       atol=1e-6)
        return 200

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(worker, range(8))) == 1600
    assert len(rt.loaded_modes) <= (max_sessions or 3)
    evictions = sum("evicted session" in r.getMessage() for r in caplog.records)
    assert (evictions > 0) == (max_sessions is not None)


def test_runtime_never_imports_torch_or_onnx(tiny_bundle):
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        import taugate.runtime
        from taugate.runtime import ModeRuntime
        heavy = ("torch", "onnx", "taugate.training", "taugate.export")
        assert not [m for m in heavy if m in sys.modules], "at import"
        rt = ModeRuntime.open({str(tiny_bundle)!r})
        rt.run("rot0", np.zeros((1, 784), np.float32)); rt.predict("dense", np.zeros(784))
        bad = [m for m in heavy if m in sys.modules]
        assert not bad, bad
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


def test_session_runner_uses_the_internal_run_only_when_it_matches(rt):
    from taugate.runtime.engine import session_runner

    rt.run("rot0", X)
    session = rt._sessions["rot0"].session
    fast = session_runner(session, "pixels", ["logits"], 784, 10, "rot0")
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
    assert session_runner(wrong, "pixels", ["logits"], 784, 10, "w") == wrong.run
    broken = Wrapped(lambda names, feed: None)  # a changed signature: TypeError
    assert session_runner(broken, "pixels", ["logits"], 784, 10, "b") == broken.run


def test_session_runner_keeps_the_public_run_for_other_providers():
    from taugate.runtime.engine import session_runner

    class Cuda:
        _sess = object()

        def get_providers(self):
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

        def run(self, names, feed, options=None):
            return [np.zeros((2, 10), np.float32)]

    cuda = Cuda()
    assert session_runner(cuda, "pixels", ["logits"], 784, 10, "cuda") == cuda.run


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


@pytest.mark.parametrize("out,needle", [
    (np.zeros((3, 10), np.float32), "shape [2, 10], got float32 of shape (3, 10)"),
    (np.zeros((2, 9), np.float32), "of shape (2, 9)"),
    (np.zeros((2, 10), np.float64), "got float64"),
    (np.full((2, 10), np.nan, np.float32), "NaN"),
    (np.array([[np.inf] + [0.0] * 9] * 2, np.float32), "inf"),
    ([[0.0] * 10] * 2, "got list"),
])
def test_output_error(out, needle):
    from taugate.runtime.engine import output_error

    assert needle in output_error(out, 2, 10)
    assert output_error(np.zeros((2, 10), np.float32), 2, 10) is None


def test_probe_failures_are_integrity_errors(tiny_bundle, tmp_path, monkeypatch):
    from taugate.runtime import engine

    def stuck(run, names, feed, timeout_s):
        raise RuntimeError("Exiting due to terminate flag being set to true")

    monkeypatch.setattr(engine, "bounded_run", stuck)
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

    from taugate.runtime.engine import bounded_run

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


def test_many_modes_get_one_thread_per_session(tmp_path):
    """Issue 10 point 11: one onnxruntime thread pool per session made a 2,000-mode bundle take
    minutes to open; past MANY_SESSIONS sessions each gets one thread unless told otherwise."""
    from taugate.export.synthetic import build_random_bundle
    from taugate.runtime.engine import MANY_SESSIONS

    modes = [f"m{i}" for i in range(MANY_SESSIONS)]  # + dense: one more than the bound
    root = build_random_bundle(tmp_path / "many", modes=modes, widths=(4,))

    def threads(rt):
        opts = rt._sessions["m0"].session.get_session_options()
        return opts.intra_op_num_threads, opts.inter_op_num_threads

    assert threads(ModeRuntime.open(root)) == (1, 1)
    assert threads(ModeRuntime.open(root, intra_op_num_threads=2)) == (2, 0)
    assert threads(ModeRuntime.open(root, max_sessions=MANY_SESSIONS)) == (0, 0)  # ort default
