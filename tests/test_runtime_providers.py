"""Provider selection (taugate.runtime.providers), with faked providers and sessions: real
DirectML / CUDA cannot run here, so a fake session reports whichever providers a test wants."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest

from taugate.runtime import ModeRuntime, ProviderError
from taugate.runtime.providers import (
    CPU,
    CUDA,
    DML,
    SessionConfig,
    build_session_options,
    resolve_providers,
)

REAL_SESSION = ort.InferenceSession
X = np.random.default_rng(3).random((2, 784), dtype=np.float32)


def fake_available(monkeypatch, names):
    monkeypatch.setattr(ort, "get_available_providers", lambda: list(names))


class FakeSession:
    """A real CPU session that claims the providers ``taken(requested)`` returns."""

    calls: list = []
    taken = staticmethod(lambda requested: requested)
    fail_with = ()  # providers whose session creation raises

    def __init__(self, model, sess_options=None, providers=None):
        names = [p if isinstance(p, str) else p[0] for p in providers]
        FakeSession.calls.append((names, sess_options))
        if any(n in FakeSession.fail_with for n in names):
            raise RuntimeError("device lost")
        self._real = REAL_SESSION(model, providers=[CPU])
        self._providers = FakeSession.taken(names)
        self.active = 0

    def get_providers(self):
        return list(self._providers)

    def __getattr__(self, name):
        return getattr(self._real, name)

    def run(self, *args):
        self.active += 1
        try:
            assert self.active == 1 or DML not in self._providers, "DirectML run overlapped"
            time.sleep(0.0005)
            return self._real.run(*args)
        finally:
            self.active -= 1


@pytest.fixture
def fake_session(monkeypatch):
    FakeSession.calls = []
    FakeSession.taken = staticmethod(lambda requested: requested)
    FakeSession.fail_with = ()
    monkeypatch.setattr(ort, "InferenceSession", FakeSession)
    return FakeSession


@pytest.mark.parametrize("available,expected", [
    ([DML, CUDA, CPU], (DML, CPU)),
    ([CUDA, CPU], (CUDA, CPU)),
    (["AzureExecutionProvider", CPU], (CPU,)),
    ([], (CPU,)),
])
def test_auto_prefers_directml_then_cuda_then_cpu(monkeypatch, available, expected):
    fake_available(monkeypatch, available)
    plan = resolve_providers("auto")
    assert plan.names == expected and not plan.explicit


@pytest.mark.parametrize("spec,expected", [
    ("cpu", (CPU,)),
    ("CUDA", (CUDA,)),
    (["directml", "cpu"], (DML, CPU)),
    ([CUDA, (CPU, {"arena_extend_strategy": "kSameAsRequested"})], (CUDA, CPU)),
])
def test_explicit_lists(monkeypatch, spec, expected):
    fake_available(monkeypatch, [DML, CUDA, CPU])
    plan = resolve_providers(spec)
    assert plan.names == expected and plan.explicit


@pytest.mark.parametrize("spec,needle", [
    ("cuda", f"not available in this onnxruntime build; available: ['{CPU}']"),
    (["tpu"], "unknown provider 'tpu'"),
    ([], "non-empty list"),
    ([(CPU, "x")], "options dict"),
    ([3], "expected provider names"),
])
def test_refused_provider_specs(monkeypatch, spec, needle):
    fake_available(monkeypatch, [CPU])
    with pytest.raises(ProviderError) as info:
        resolve_providers(spec)
    assert needle in str(info.value)


def test_directml_session_options(monkeypatch):
    fake_available(monkeypatch, [DML, CPU])
    opts = build_session_options(SessionConfig(intra_op_num_threads=2), resolve_providers("auto"))
    assert opts.enable_mem_pattern is False and opts.intra_op_num_threads == 2
    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    cpu = build_session_options(SessionConfig(graph_optimization_level="basic"),
                                resolve_providers("cpu"))
    assert cpu.enable_mem_pattern is True
    assert cpu.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC


def test_directml_taken_gets_a_run_lock(monkeypatch, fake_session, tiny_bundle):
    fake_available(monkeypatch, [DML, CPU])
    rt = ModeRuntime.open(tiny_bundle)
    assert rt.providers == [DML, CPU]
    names, opts = fake_session.calls[0]
    assert names == [DML, CPU] and opts.enable_mem_pattern is False
    expected = rt.run("rot0", X)
    with ThreadPoolExecutor(4) as pool:  # FakeSession.run asserts no overlap under DirectML
        for out in pool.map(lambda _: rt.run("rot0", X), range(40)):
            np.testing.assert_array_equal(out, expected)


def test_cpu_sessions_run_concurrently(monkeypatch, fake_session, tiny_bundle):
    fake_available(monkeypatch, [CPU])
    rt = ModeRuntime.open(tiny_bundle)
    session = rt._sessions["rot0"]
    assert session.lock is None  # no serialization on CPU


def test_auto_falls_back_to_cpu_when_not_taken(monkeypatch, fake_session, tiny_bundle, caplog):
    fake_available(monkeypatch, [CUDA, CPU])
    fake_session.taken = staticmethod(lambda requested: [CPU])  # e.g. no CUDA driver
    with caplog.at_level("WARNING", logger="taugate.runtime"):
        rt = ModeRuntime.open(tiny_bundle)
    assert rt.providers == [CPU]
    assert any("not taken" in r.getMessage() for r in caplog.records)
    # one retry, then every later session goes straight to CPU
    assert [c[0] for c in fake_session.calls] == [[CUDA, CPU], [CPU], [CPU], [CPU]]
    assert rt.run("rot45", X).shape == (2, 10)


def test_auto_falls_back_when_creation_fails(monkeypatch, fake_session, tiny_bundle, caplog):
    fake_available(monkeypatch, [DML, CPU])
    fake_session.fail_with = (DML,)
    with caplog.at_level("WARNING", logger="taugate.runtime"):
        rt = ModeRuntime.open(tiny_bundle)
    assert rt.providers == [CPU]
    assert any("device lost" in r.getMessage() for r in caplog.records)


def test_explicit_provider_not_taken_is_an_error(monkeypatch, fake_session, tiny_bundle):
    fake_available(monkeypatch, [DML, CPU])
    fake_session.taken = staticmethod(lambda requested: [CPU])
    with pytest.raises(ProviderError, match=r"did not take provider\(s\) \['DmlExec"):
        ModeRuntime.open(tiny_bundle, providers=["directml"])


def test_lazy_runtime_reports_planned_providers(monkeypatch, fake_session, tiny_bundle):
    fake_available(monkeypatch, [CUDA, CPU])
    rt = ModeRuntime.open(tiny_bundle, lazy=True)
    assert rt.providers == [CUDA, CPU] and fake_session.calls == []
    rt.run("rot0", X)
    assert rt.providers == [CUDA, CPU] and len(fake_session.calls) == 1


def test_session_config_refuses_foreign_options():
    with pytest.raises(ValueError, match="session_options"):
        SessionConfig(session_options={"intra_op_num_threads": 1})


def test_run_lock_is_per_session(monkeypatch, fake_session, tiny_bundle):
    fake_available(monkeypatch, [DML, CPU])
    rt = ModeRuntime.open(tiny_bundle)
    locks = {m: rt._sessions[m].lock for m in ("rot0", "rot45")}
    assert all(isinstance(lock, type(threading.Lock())) for lock in locks.values())
    assert locks["rot0"] is not locks["rot45"]
