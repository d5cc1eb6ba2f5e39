"""Dynamic batching (taugate/server/batcher.py, `taugate serve --batch-delay-ms`): concurrent
requests of any modes coalesced into mixed-mode runs answer exactly what unbatched runs answer,
each request gets its own rows in order, an error reaches only its own request, and a full queue
answers 503 with Retry-After."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from taugate.runtime import ModeRuntime, UnknownModeError
from taugate.server.batcher import Batcher, BatchPolicy, QueueFull
from taugate.server.messages import HttpRequest
from taugate.server.prometheus import exposition
from taugate.server.protocol import ProtocolHandler
from taugate.server.stats import model_stats

MODES = ("rot0", "rot45", "dense")


@pytest.fixture(scope="module")
def runtime(tiny_bundle):
    return ModeRuntime.open(tiny_bundle)


def _requests(n: int) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    return [(MODES[i % 3], rng.random((1 + i % 3, 784), dtype=np.float32)) for i in range(n)]


def _predict(handler, mode: str, x: np.ndarray):
    body = json.dumps({"inputs": x.tolist()}).encode()
    return handler.handle(HttpRequest("POST", f"/modes/{mode}/predict", {}, body),
                          handler.runtime.run)


def test_batched_answers_equal_unbatched_ones(runtime):
    requests = _requests(24)
    plain = ProtocolHandler(runtime)
    batched = ProtocolHandler(runtime, batch=BatchPolicy(delay_ms=20, max_rows=16))
    try:
        expected = [_predict(plain, m, x) for m, x in requests]
        barrier = threading.Barrier(len(requests))

        def send(req):
            barrier.wait()
            return _predict(batched, *req)

        with ThreadPoolExecutor(len(requests)) as pool:
            answers = list(pool.map(send, requests))
    finally:
        batched.batcher.close()
    for want, got in zip(expected, answers):
        assert got.status == 200
        assert json.loads(got.body) == json.loads(want.body)  # the same logits, exactly
    m = batched.metrics
    assert m.batch_requests == len(requests)
    assert m.batches < len(requests)  # requests shared runs
    assert m.batch_rows <= 16 * m.batches
    counters = m.modes()
    assert sum(c.queue_ns for c in counters.values()) > 0
    assert model_stats("rot0", counters["rot0"])["inference_stats"]["queue"]["ns"] > 0
    page = exposition(m, runtime)
    assert 'phase="queue"' in page
    assert f"taugate_batch_requests_total {len(requests)}" in page


def _echo(modes, x):
    """Logits naming each row: its first value and its mode's index."""
    return np.stack([x[:, 0], np.array([MODES.index(m) for m in modes], np.float32)], axis=1)


def test_each_request_gets_its_own_rows_in_order():
    batcher = Batcher(_echo, BatchPolicy(delay_ms=50, max_rows=64))
    rng = np.random.default_rng(1)
    inputs = [(MODES[i % 3] if i % 4 else [MODES[(i + r) % 3] for r in range(i % 5 + 1)],
               rng.random((i % 5 + 1, 3), dtype=np.float32)) for i in range(20)]
    barrier = threading.Barrier(len(inputs))

    def send(item):
        barrier.wait()
        return batcher.run(*item)[0]

    try:
        with ThreadPoolExecutor(len(inputs)) as pool:
            outs = list(pool.map(send, inputs))
    finally:
        batcher.close()
    for (modes, x), out in zip(inputs, outs):
        names = [modes] * len(x) if isinstance(modes, str) else modes
        np.testing.assert_array_equal(out[:, 0], x[:, 0])
        np.testing.assert_array_equal(out[:, 1], [MODES.index(m) for m in names])


def test_an_error_reaches_only_its_own_request():
    def run(modes, x):
        if "nope" in modes:
            raise UnknownModeError("unknown mode 'nope'")
        return _echo(modes, x)

    batcher = Batcher(run, BatchPolicy(delay_ms=50))
    items = [("rot0", np.ones((2, 3), np.float32)), ("nope", np.ones((1, 3), np.float32)),
             ("dense", np.zeros((1, 3), np.float32))]
    barrier = threading.Barrier(len(items))

    def send(item):
        barrier.wait()
        try:
            return batcher.run(*item)[0]
        except UnknownModeError as exc:
            return exc

    try:
        with ThreadPoolExecutor(len(items)) as pool:
            ok1, bad, ok2 = pool.map(send, items)
    finally:
        batcher.close()
    assert isinstance(bad, UnknownModeError)
    np.testing.assert_array_equal(ok1[:, 1], [0, 0])
    np.testing.assert_array_equal(ok2[:, 1], [2])


def test_a_full_queue_answers_503_with_retry_after(runtime):
    # one worker: it holds the first request, so the second waits in the queue (a second worker
    # would take it, and whether the third is refused would depend on timing)
    handler = ProtocolHandler(runtime, batch=BatchPolicy(delay_ms=1, max_queue=1, workers=1))
    running, release = threading.Event(), threading.Event()

    def blocked(modes, x):
        running.set()
        release.wait(10)
        return runtime.run_mixed(modes, x)

    handler.batcher._run_mixed = blocked
    x = np.random.default_rng(2).random((1, 784), dtype=np.float32)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(_predict, handler, "rot0", x)
        assert running.wait(10)  # the worker holds the first request: the queue is empty
        second = pool.submit(_predict, handler, "rot45", x)
        while not handler.batcher._queue:  # the second waits in the queue (its one place)
            threading.Event().wait(0.001)
        refused = _predict(handler, "dense", x)
        release.set()
        assert first.result().status == second.result().status == 200
    handler.batcher.close()
    assert refused.status == 503
    assert refused.headers["retry-after"] == "1"
    assert "1 requests wait for a batch" in json.loads(refused.body)["detail"]
    assert handler.metrics.modes()["dense"].failures == {"unavailable": 1}


def test_queue_full_is_a_service_unavailable():
    from taugate.server.messages import ServiceUnavailable

    assert issubclass(QueueFull, ServiceUnavailable)


@pytest.mark.parametrize("kwargs, words", [
    ({"delay_ms": -1}, "batch delay: expected milliseconds in [0, 10000] (0: no batching), "
                       "got -1"),
    ({"delay_ms": True}, "got True"),
    ({"max_rows": 0}, "max_rows: expected an integer >= 1, got 0"),
    ({"max_queue": 2.5}, "max_queue: expected an integer >= 1, got 2.5"),
])
def test_bad_policies_are_refused_naming_the_value(kwargs, words):
    with pytest.raises(ValueError) as info:
        BatchPolicy(**kwargs)
    assert words in str(info.value)


def test_delay_zero_means_no_batcher(runtime):
    assert ProtocolHandler(runtime, batch=BatchPolicy(delay_ms=0)).batcher is None
    with pytest.raises(ValueError, match="batching off"):
        Batcher(_echo, BatchPolicy())
