"""What 1,000 resident modes cost (issue 19.3), kept small: the manifest's repeated strings are
held once, materialization steps carry no per-instance dict, a mode loaded again is not parsed
again (its bytes still hashed against the manifest), and open hands the C allocator's freed
pages back."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from taugate.bundle import files as bundle_files
from taugate.bundle.errors import BundleIntegrityError
from taugate.bundle.safe_json import loads_strict
from taugate.runtime import ModeRuntime

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import shared_backbone as sb

X = np.random.default_rng(0).random((2, 784), dtype=np.float32)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return sb.build(tmp_path_factory.mktemp("many") / "b", 3, widths=(32, 24))[0]


def test_short_strings_repeated_in_json_are_one_object():
    text = '[{"source": "backbone", "take": [[0, "keep.0"]]}, ' \
           '{"source": "backbone", "take": [[0, "keep.0"]]}]'
    a, b = loads_strict(text)
    assert a == b
    assert a["source"] is b["source"]
    assert a["take"][0][1] is b["take"][0][1]


def test_manifest_steps_share_strings_and_have_no_dict(bundle):
    rt = ModeRuntime.open(bundle, providers="cpu", lazy=True)
    m0, m1 = (rt.manifest.modes[name] for name in list(rt.manifest.modes)[:2])
    s0, s1 = m0.materialize[0], m1.materialize[0]
    assert s0.source is s1.source and s0.dtype is s1.dtype and s0.name is s1.name
    assert not hasattr(s0, "__dict__")


def test_a_reloaded_mode_is_hashed_again_but_not_parsed_again(bundle, monkeypatch):
    checks, hashes = [], []
    real_check, real_read = bundle_files.check_model, bundle_files._read_at
    monkeypatch.setattr(bundle_files, "check_model",
                        lambda data, *a, **k: (checks.append(1), real_check(data, *a, **k))[1])
    monkeypatch.setattr(bundle_files, "_read_at",  # every verified read (path + sha256)
                        lambda path, e: (hashes.append(e.file), real_read(path, e))[1])
    rt = ModeRuntime.open(bundle, providers="cpu", lazy=True, max_sessions=1)
    at_open = len(checks)
    assert at_open >= 4  # dense + 3 modes, each checked once at open
    names = rt.modes
    for name in (names[0], names[1], names[0], names[1]):  # max_sessions=1: each run reloads
        rt.run(name, X)
    assert len(checks) == at_open  # the same bytes were checked at open
    assert hashes.count(rt.manifest.modes[names[0]].file) >= 3  # open + 2 loads, hashed each


def test_a_file_changed_after_open_is_still_refused_on_reload(bundle, tmp_path):
    import shutil

    copy = Path(shutil.copytree(bundle, tmp_path / "b"))
    rt = ModeRuntime.open(copy, providers="cpu", lazy=True, max_sessions=1)
    first, second = rt.modes[:2]
    rt.run(first, X)
    rt.run(second, X)  # evicts first
    path = copy / rt.manifest.modes[first].file
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(BundleIntegrityError, match="sha256 mismatch"):
        rt.run(first, X)


def test_open_hands_freed_pages_back(bundle, monkeypatch):
    from taugate.runtime import mode_runtime

    calls = []
    monkeypatch.setattr(mode_runtime, "release_freed", lambda: calls.append(1))
    ModeRuntime.open(bundle, providers="cpu", lazy=True)
    assert calls == [1]


def test_manifest_steps_share_their_tuples(bundle):
    rt = ModeRuntime.open(bundle, providers="cpu", lazy=True)
    m0, m1 = (rt.manifest.modes[name] for name in list(rt.manifest.modes)[:2])
    assert m0.materialize[0].take is m1.materialize[0].take
    assert m0.materialize[-1] is m1.materialize[-1]  # the output bias: the same step in both
    raw0, raw1 = (rt.manifest.raw["modes"][name]["materialize"][0] for name in rt.modes[:2])
    assert raw0["take"] is raw1["take"]
    name = rt.modes[0]  # an entry's facts are its parsed JSON, not a copy of it
    assert rt.manifest.modes[name].facts is rt.manifest.raw["modes"][name]


def test_cpu_sessions_hold_no_second_copy_of_the_weights(bundle):
    rt = ModeRuntime.open(bundle, providers="cpu", memory_budget="none")
    expected = {m: rt.run(m, X) for m in rt.modes}
    assert all(rt._sessions[m].keep is None for m in rt.modes)  # onnxruntime holds its own copy
    again = ModeRuntime.open(bundle, providers="cpu", memory_budget="none")
    for m in rt.modes:
        np.testing.assert_array_equal(again.run(m, X), expected[m])
    all_at_once = rt.run_all(X)  # the shared first layer rebuilds what it needs
    for m in rt.modes:
        np.testing.assert_allclose(all_at_once[m], expected[m], atol=1e-5)


def test_many_sessions_go_without_a_memory_arena_each(bundle, monkeypatch):
    import onnxruntime as ort

    from taugate.runtime import mode_runtime
    from taugate.runtime.providers import CPU_PLAN, SessionConfig, build_session_options

    assert build_session_options(SessionConfig(many_sessions=True), CPU_PLAN) \
        .enable_cpu_mem_arena is False
    assert build_session_options(SessionConfig(), CPU_PLAN).enable_cpu_mem_arena is True
    own = ort.SessionOptions()  # a caller's options are used as they are
    assert build_session_options(SessionConfig(session_options=own, many_sessions=True),
                                 CPU_PLAN).enable_cpu_mem_arena is True
    assert ModeRuntime.open(bundle, providers="cpu", lazy=True)._config.many_sessions is False
    monkeypatch.setattr(mode_runtime, "MANY_SESSIONS", 2)
    rt = ModeRuntime.open(bundle, providers="cpu", lazy=True)
    assert rt._config.many_sessions is True
    assert rt.run(rt.modes[0], X).shape == (2, 10)


def test_probe_runs_share_one_watchdog_thread():
    import threading

    import onnxruntime as ort

    from taugate.runtime.sessions import bounded_run
    from taugate.runtime.watchdog import Watchdog

    bounded_run(lambda names, feed, options: None, None, {}, 5.0)
    before = set(threading.enumerate())
    for _ in range(20):
        assert bounded_run(lambda names, feed, options: names, ["y"], {}, 5.0) == ["y"]
    assert not set(threading.enumerate()) - before  # no thread started per run
    dog, options, late = Watchdog(), ort.RunOptions(), ort.RunOptions()
    dog.disarm(dog.arm(late, 0.01))  # disarmed in time: never stopped
    dog.arm(ort.RunOptions(), 60.0)
    dog.arm(options, 0.02)  # earlier than the armed 60 s: the thread is woken for it
    for _ in range(500):
        if options.terminate:
            break
        threading.Event().wait(0.01)
    assert options.terminate and not late.terminate


def test_checked_modes_share_one_set_of_materialized_names(bundle):
    rt = ModeRuntime.open(bundle, providers="cpu", lazy=True)
    sets = {id(names) for _, names in rt._files._checked if names}
    assert len(rt._files._checked) >= 4 and len(sets) == 1
