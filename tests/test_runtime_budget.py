"""ModeRuntime.open(memory_budget=...): the byte budget over loaded sessions (runtime/budget.py).
A fake byte estimate (every session charged 100 bytes) makes the evictions deterministic."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import build_tiny_bundle

from taugate.bundle.errors import RuntimeConfigError
from taugate.cli import main
from taugate.runtime import ModeRuntime, budget
from taugate.runtime.budget import MemoryBudget, parse_size

X = np.random.default_rng(5).random((2, 784), dtype=np.float32)


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.mktemp("budget") / "b", ("rot0", "rot45", "rot90"))


@pytest.fixture
def charged(monkeypatch):
    """Every session is charged 100 bytes, whatever onnxruntime holds."""
    monkeypatch.setattr(MemoryBudget, "estimate", lambda self, nbytes: 100)


def test_budget_is_respected_under_any_order(three, charged):
    rt = ModeRuntime.open(three, lazy=True, memory_budget=250)
    rng = np.random.default_rng(0)
    for mode in rng.choice(["rot0", "rot45", "rot90", "dense"], 40):
        rt.run(str(mode), X)
        assert len(rt.loaded_modes) <= 2
        assert rt.memory()["used"] == 100 * len(rt.loaded_modes) <= 250
    assert rt.memory()["limit"] == 250


def test_least_recently_used_goes_first(three, charged):
    rt = ModeRuntime.open(three, lazy=True, memory_budget=200)
    reference = {m: rt.run(m, X) for m in ("rot0", "rot45")}
    rt.run("rot0", X)  # rot45 is now the least recently used
    rt.run("rot90", X)
    assert sorted(rt.loaded_modes) == ["rot0", "rot90"]
    np.testing.assert_array_equal(rt.run("rot45", X), reference["rot45"])  # reloaded
    assert sorted(rt.loaded_modes) == ["rot45", "rot90"]


def test_budget_and_max_sessions_both_hold(three, charged):
    rt = ModeRuntime.open(three, lazy=True, memory_budget=1000, max_sessions=2)
    rt.warmup()
    assert sorted(rt.loaded_modes) == ["rot45", "rot90"]


def test_in_flight_request_keeps_its_evicted_session(three, charged):
    rt = ModeRuntime.open(three, lazy=True, memory_budget=100)  # one session at a time
    expected = rt.run("rot0", X)
    started, release = threading.Event(), threading.Event()
    loaded = rt._sessions["rot0"]
    inner = loaded.run

    def held(names, feed):  # the request is inside onnxruntime while rot0 is evicted
        started.set()
        assert release.wait(10)
        return inner(names, feed)

    loaded.run = held
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("out", rt.run("rot0", X)))
    worker.start()
    assert started.wait(10)
    rt.run("rot45", X)
    assert rt.loaded_modes == ["rot45"]  # rot0 evicted while its request runs
    release.set()
    worker.join(10)
    np.testing.assert_array_equal(result["out"], expected)


def test_one_session_over_the_budget_is_kept_alone(three, charged, caplog):
    rt = ModeRuntime.open(three, lazy=True, memory_budget=50)
    with caplog.at_level(logging.WARNING, "taugate.runtime"):
        rt.run("rot0", X)
        rt.run("rot45", X)
    assert rt.loaded_modes == ["rot45"]
    assert "over the memory budget" in caplog.text


def test_unload_and_close_release_the_charge(three, charged):
    rt = ModeRuntime.open(three, lazy=True, memory_budget=1000)
    rt.warmup()
    rt.unload_mode("rot0")
    assert rt.memory()["used"] == 200
    rt.close()
    assert rt.memory()["used"] == 0


@pytest.mark.parametrize("value", [0, -5, True, 1.5, None, "lots", "0M", "12Q", "-1G", ""])
def test_bad_budgets_are_refused_by_name(three, value):
    with pytest.raises(RuntimeConfigError, match=r"memory_budget: expected .* got"):
        ModeRuntime.open(three, memory_budget=value)


@pytest.mark.parametrize("text,size", [("512M", 512 << 20), ("1.5G", 3 << 29), ("2GiB", 2 << 30),
                                       ("64kb", 64 << 10), ("1000", 1000), (4096, 4096),
                                       (np.int64(4096), 4096),
                                       (" none ", None)])
def test_sizes_parse(text, size):
    assert parse_size(text) == size


def test_auto_budget_is_half_the_available_memory_and_logged(three, monkeypatch, caplog):
    monkeypatch.setattr(budget, "available_bytes", lambda: 8 << 30)
    with caplog.at_level(logging.DEBUG, "taugate.runtime"):
        rt = ModeRuntime.open(three, lazy=True)
    assert rt.memory()["limit"] == 4 << 30
    assert "4096.0 MiB (50% of the 8192.0 MiB available" in caplog.text
    monkeypatch.setattr(budget, "available_bytes", lambda: None)
    with caplog.at_level(logging.WARNING, "taugate.runtime"):
        assert ModeRuntime.open(three, lazy=True).memory()["limit"] is None
    assert "no byte budget" in caplog.text


def test_factor_is_measured_from_rss_growth_of_the_first_sessions(monkeypatch):
    monkeypatch.setattr(budget, "SAMPLES", 4)
    rss = iter([0, 10_000,  # the first session: onnxruntime's own setup, not sampled
                0, 300, 0, 200, 0, 250, 0, 400])
    b = MemoryBudget(1 << 20, rss=lambda: next(rss))
    assert b.factor == budget.FALLBACK_FACTOR  # nothing measured yet
    for _ in range(5):
        b.measure(lambda: "session", lambda s: 100)
    assert b.factor == 2.75 and b.report()["samples"] == 4
    b.measure(lambda: "session", lambda s: 100)  # no RSS read past the first few sessions
    assert b.factor == 2.75 and b.estimate(1000) == 2750


def test_real_sessions_are_charged_at_least_their_bytes(three):
    rt = ModeRuntime.open(three, memory_budget="1G")
    memory = rt.memory()
    assert memory["factor"] >= 1
    assert memory["used"] >= sum(rt.resident_bytes().values())


@pytest.mark.parametrize("args,message", [
    (["--memory-budget", "lots"], "--memory-budget: expected a positive number of bytes"),
    (["--memory-budget", "0"], "got '0'"),
    (["--engine", "ray", "--memory-budget", "1G"], "are for --engine fastapi"),
])
def test_serve_refuses_bad_budgets(three, capsys, args, message):
    if "ray" in args:
        pytest.importorskip("ray.serve")
    assert main(["serve", str(three), *args]) == 2
    assert message in capsys.readouterr().err


def test_evictions_hand_freed_memory_back(three, charged, monkeypatch):
    calls = []
    monkeypatch.setattr(budget, "release_freed", lambda: calls.append(1))
    rt = ModeRuntime.open(three, lazy=True, memory_budget=200)
    rt._budget._rss = None  # no measuring (it also hands pages back)
    rt.run("rot0", X)
    rt.run("rot45", X)
    assert calls == []  # nothing evicted yet
    rt.run("rot90", X)
    assert calls == [1]


def test_threads_under_a_tight_budget_get_single_threaded_results(three, charged):
    names = ["dense", "rot0", "rot45", "rot90"]
    batches = [np.random.default_rng(i).random((1 + i % 3, 784), dtype=np.float32)
               for i in range(6)]
    reference = ModeRuntime.open(three, memory_budget="none")
    expected = {(m, i): reference.run(m, b) for m in names for i, b in enumerate(batches)}
    rt = ModeRuntime.open(three, lazy=True, memory_budget=200, intra_op_num_threads=1)

    def worker(seed: int) -> int:
        rng = np.random.default_rng(seed)
        for _ in range(100):  # every call may evict a session another thread is running
            m, i = names[rng.integers(4)], int(rng.integers(len(batches)))
            np.testing.assert_allclose(rt.run(m, batches[i]), expected[m, i], rtol=1e-6,
                                       atol=1e-6)
        return 100

    with ThreadPoolExecutor(6) as pool:
        assert sum(pool.map(worker, range(6))) == 600
    assert len(rt.loaded_modes) <= 2 and rt.memory()["used"] <= 200
