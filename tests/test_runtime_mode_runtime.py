"""ModeRuntime (taugate.runtime.mode_runtime): golden outputs, bundle refusals, sessions, threads."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import random_hardened

from taugate.runtime import (
    DENSE,
    BundleFormatError,
    BundleIntegrityError,
    ModeRuntime,
    RuntimeConfigError,
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
    from taugate.exporting.graph import build_graph

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
        heavy = ("torch", "onnx", "taugate.training", "taugate.exporting")
        assert not [m for m in heavy if m in sys.modules], "at import"
        rt = ModeRuntime.open({str(tiny_bundle)!r})
        rt.run("rot0", np.zeros((1, 784), np.float32)); rt.predict("dense", np.zeros(784))
        bad = [m for m in heavy if m in sys.modules]
        assert not bad, bad
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


def test_many_modes_get_one_thread_per_session(tmp_path):
    """Issue 10 point 11: one onnxruntime thread pool per session made a 2,000-mode bundle take
    minutes to open; past MANY_SESSIONS sessions each gets one thread unless told otherwise."""
    from taugate.exporting.synthetic import build_random_bundle
    from taugate.runtime.mode_runtime import MANY_SESSIONS

    modes = [f"m{i}" for i in range(MANY_SESSIONS)]  # + dense: one more than the bound
    root = build_random_bundle(tmp_path / "many", modes=modes, widths=(4,))

    def threads(rt):
        opts = rt._sessions["m0"].session.get_session_options()
        return opts.intra_op_num_threads, opts.inter_op_num_threads

    assert threads(ModeRuntime.open(root)) == (1, 1)
    assert threads(ModeRuntime.open(root, intra_op_num_threads=2)) == (2, 0)
    assert threads(ModeRuntime.open(root, max_sessions=MANY_SESSIONS)) == (0, 0)  # ort default
