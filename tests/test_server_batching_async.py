"""Batched requests awaited on the event loop (Batcher.run_async, the batched endpoint of
taugate/server/mount.py) and batching on Ray Serve's model replicas (taugate/server/ray_app.py):
the same exact answers as one run per request, coalesced runs, and no threadpool hop for a
small batched request."""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from taugate.runtime import ModeRuntime
from taugate.server.batcher import Batcher, BatchPolicy

httpx = pytest.importorskip("httpx")
MODES = ("rot0", "rot45", "dense")


@pytest.fixture(scope="module")
def runtime(tiny_bundle):
    return ModeRuntime.open(tiny_bundle)


def _requests(n: int) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(11)
    return [(MODES[i % 3], rng.random((1 + i % 2, 784), dtype=np.float32)) for i in range(n)]


def test_run_async_coalesces_and_answers_exactly(runtime):
    batches = []
    batcher = Batcher(runtime.run_mixed, BatchPolicy(delay_ms=50, max_rows=64),
                      on_batch=lambda n, rows: batches.append(n))
    requests = _requests(12)

    async def all_at_once():
        return await asyncio.gather(*(batcher.run_async(m, x) for m, x in requests))

    try:
        answers = asyncio.run(all_at_once())
    finally:
        batcher.close()
    for (mode, x), (logits, queue_ns) in zip(requests, answers):
        np.testing.assert_array_equal(logits, runtime.run(mode, x))
        assert queue_ns >= 0
    assert sum(batches) == len(requests) and len(batches) < len(requests)


def test_run_async_raises_the_requests_own_error(runtime):
    batcher = Batcher(runtime.run_mixed, BatchPolicy(delay_ms=5))
    x = np.zeros((1, 784), np.float32)

    async def both():
        return await asyncio.gather(batcher.run_async("rot0", x),
                                    batcher.run_async("nope", x), return_exceptions=True)

    try:
        good, bad = asyncio.run(both())
    finally:
        batcher.close()
    np.testing.assert_array_equal(good[0], runtime.run("rot0", x))
    assert "nope" in str(bad)


def test_a_small_batched_request_takes_no_threadpool_thread(runtime, monkeypatch):
    from taugate.server import BackgroundServer

    x = np.random.default_rng(0).random((2, 784), dtype=np.float32)
    with BackgroundServer(runtime, batch=BatchPolicy(delay_ms=1)) as srv:
        handler = srv.app.state.handler

        def no_thread(*args, **kwargs):
            raise AssertionError("a small batched request went through the threadpool")

        monkeypatch.setattr(handler, "handle", no_thread)
        r = httpx.post(srv.url + "/modes/rot45/predict", json={"inputs": x.tolist()})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(json.loads(r.text)["logits"], runtime.run("rot45", x),
                                   rtol=1e-6)
        handler.batcher.close()


def test_ray_config_takes_the_batching_options(tiny_bundle):
    pytest.importorskip("ray.serve")
    from taugate.server.ray_app import RayServeConfig

    config = RayServeConfig(tiny_bundle, batch_delay_ms="2", max_queue="16", batcher="serve")
    assert config.batch_policy == BatchPolicy(2.0, 64, 16)
    with pytest.raises(ValueError, match="batcher: expected 'taugate' or 'serve', got 'x'"):
        RayServeConfig(tiny_bundle, batcher="x")
    with pytest.raises(ValueError, match=r"batch delay: expected milliseconds in \[0, 10000\]"):
        RayServeConfig(tiny_bundle, batch_delay_ms=-1)


@pytest.mark.parametrize("kind", ["taugate", "serve"])
def test_ray_replica_batched_paths_answer_exactly(runtime, kind):
    pytest.importorskip("ray.serve")
    from taugate.server.ray_app import TaugateModel

    replica = TaugateModel.__new__(TaugateModel)  # the replica's state without a Ray context
    replica.runtime = runtime
    replica.batcher = Batcher(runtime.run_mixed, BatchPolicy(delay_ms=20)) \
        if kind == "taugate" else None
    requests = _requests(6)

    async def run():
        if kind == "serve":  # what @serve.batch hands the target: one list per argument
            return await replica._serve_batch([m for m, _ in requests], [x for _, x in requests])
        return await asyncio.gather(*(replica._infer(m, x) for m, x in requests))

    try:
        answers = asyncio.run(run())
    finally:
        if replica.batcher is not None:
            replica.batcher.close()
    for (mode, x), logits in zip(requests, answers):
        np.testing.assert_array_equal(logits, runtime.run(mode, x))


def test_batches_run_on_several_workers_at_once():
    both = threading.Barrier(2, timeout=5)  # passes only when two batches run concurrently

    def run(modes, x):
        both.wait()
        return x[:, :2]

    batcher = Batcher(run, BatchPolicy(delay_ms=1, max_rows=1, workers=2))
    x = np.ones((1, 784), np.float32)
    try:
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda _: batcher.run("m", x)[0], range(2)))
    finally:
        batcher.close()
    assert [a.shape for a in answers] == [(1, 2), (1, 2)]
    with pytest.raises(ValueError, match="workers: expected an integer >= 1, got 0"):
        BatchPolicy(delay_ms=1, workers=0)


def test_workers_that_wait_together_never_pop_an_empty_queue(runtime):
    """Two workers waiting out the same delay: the one that wakes second finds the queue
    taken and goes back to waiting, instead of dying on an empty pop (which left requests
    unanswered); close() wakes every worker."""
    died = []
    hook, threading.excepthook = threading.excepthook, died.append
    batcher = Batcher(runtime.run_mixed, BatchPolicy(delay_ms=20, max_rows=64, workers=2))
    x = np.zeros((1, 784), np.float32)
    try:
        for _ in range(5):  # each request alone: both workers wait on its deadline
            np.testing.assert_array_equal(batcher.run("rot0", x)[0], runtime.run("rot0", x))
    finally:
        batcher.close(timeout=2.0)
        threading.excepthook = hook
    assert not died, [d.exc_value for d in died]
    assert not any(w.is_alive() for w in batcher._workers)
