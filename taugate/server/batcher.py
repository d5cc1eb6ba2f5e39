"""Dynamic batching: concurrent inference requests, of any modes, coalesced into one run.

Framework-neutral (threads only): the protocol handler (:mod:`taugate.server.protocol`) calls
:meth:`Batcher.run` from whichever thread serves a request, so every engine that uses the
handler's synchronous path shares it. Worker threads (``workers``) form batches: one waits
for a first request, then gathers others until ``delay_ms`` has passed since that first one arrived or
``max_rows`` rows are waiting, and runs them as ONE mixed-mode call
(:meth:`ModeRuntime.run_mixed`, row i in its request's mode: exact per row). Each request gets
back its own rows, in order. At most ``max_queue`` requests wait; past that :class:`QueueFull`
(answered 503 with ``Retry-After``) rather than a queue that grows without bound.

:meth:`Batcher.run_async` is the same for a caller on an event loop: it awaits its batch instead
of blocking a thread, so a batched request costs no threadpool hop (under load, each thread
handoff waits for the scheduler and costs more than a small model's run).

A batch that fails is retried request by request, so that an error (an unknown mode, a mode
whose file vanished) reaches only the request that caused it.
"""

from __future__ import annotations

import asyncio
import collections
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Union

import numpy as np

from taugate.server.messages import ServiceUnavailable

_now = time.perf_counter_ns
Modes = Union[str, list]  # one mode for every row, or one name per row
RunMixed = Callable[[list, np.ndarray], np.ndarray]


class QueueFull(ServiceUnavailable):
    """More requests wait for a batch than the queue holds: answer 503, retry later."""

    retry_after_s = 1


@dataclass(frozen=True)
class BatchPolicy:
    """When requests are batched. ``delay_ms`` 0 turns batching off."""

    delay_ms: float = 0.0  # the longest a request waits for others before its batch runs
    max_rows: int = 64  # rows per batch at most (a larger request runs alone)
    max_queue: int = 128  # requests waiting at most; past it 503
    # threads running batches: one forms the next batch while another runs (one worker would
    # use one core where unbatched requests run on all of them); default: the CPU count, <= 4
    workers: int = field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)))

    def __post_init__(self) -> None:
        if isinstance(self.delay_ms, bool) or not isinstance(self.delay_ms, (int, float)) \
                or not 0 <= self.delay_ms <= 10_000:
            raise ValueError(f"batch delay: expected milliseconds in [0, 10000] (0: no "
                             f"batching), got {self.delay_ms!r}")
        for name in ("max_rows", "max_queue", "workers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")

    @property
    def enabled(self) -> bool:
        return self.delay_ms > 0


def _resolve(future: asyncio.Future) -> None:
    if not future.done():  # a cancelled waiter (the client went away) wants nothing
        future.set_result(None)


def _wake(loop: asyncio.AbstractEventLoop, future: asyncio.Future) -> None:
    try:
        loop.call_soon_threadsafe(_resolve, future)
    except RuntimeError:  # the loop is closed: nobody waits any more
        pass


class _Pending:
    __slots__ = ("modes", "x", "rows", "enqueued", "finished", "logits", "error", "queue_ns")

    def __init__(self, modes: Modes, x: np.ndarray, finished: Callable[[], None]):
        self.modes, self.x, self.rows = modes, x, int(x.shape[0])
        self.enqueued = _now()
        self.finished = finished  # called by the worker once logits or error is set
        self.logits = self.error = None
        self.queue_ns = 0

    def row_modes(self) -> list:
        return [self.modes] * self.rows if isinstance(self.modes, str) else list(self.modes)


class Batcher:
    """Coalesces :meth:`run` calls into batches run by ``run_mixed(modes_per_row, x)``.

    ``on_batch(requests, rows)``, if given, is told of every batch run (metrics).
    """

    def __init__(self, run_mixed: RunMixed, policy: BatchPolicy,
                 on_batch: Callable[[int, int], None] | None = None):
        if not policy.enabled:
            raise ValueError("Batcher: the policy's delay_ms is 0 (batching off)")
        self._run_mixed = run_mixed
        self.policy = policy
        self._on_batch = on_batch
        self._delay_ns = int(policy.delay_ms * 1e6)
        self._queue: collections.deque[_Pending] = collections.deque()
        self._queued_rows = 0
        self._cond = threading.Condition()
        self._closed = False
        self._workers = [threading.Thread(target=self._loop, name=f"taugate-batcher-{i}",
                                          daemon=True) for i in range(policy.workers)]
        for worker in self._workers:
            worker.start()

    def run(self, modes: Modes, x: np.ndarray) -> tuple[np.ndarray, int]:
        """(the logits of ``x``'s rows, each in its mode; nanoseconds it waited for its batch).
        Raises what the run raised, or :class:`QueueFull`."""
        done = threading.Event()
        item = self._enqueue(modes, x, done.set)
        done.wait()
        return self._result(item)

    async def run_async(self, modes: Modes, x: np.ndarray) -> tuple[np.ndarray, int]:
        """:meth:`run` awaited on the running event loop, with no thread blocked meanwhile."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        item = self._enqueue(modes, x, lambda: _wake(loop, future))
        await future
        return self._result(item)

    @staticmethod
    def _result(item: _Pending) -> tuple[np.ndarray, int]:
        if item.error is not None:
            raise item.error
        return item.logits, item.queue_ns

    def _enqueue(self, modes: Modes, x: np.ndarray, finished: Callable[[], None]) -> _Pending:
        item = _Pending(modes, x, finished)
        with self._cond:
            if self._closed:
                raise ServiceUnavailable("the server is shutting down")
            if len(self._queue) >= self.policy.max_queue:
                raise QueueFull(f"{self.policy.max_queue} requests wait for a batch (the "
                                f"limit); retry later")
            self._queue.append(item)
            self._queued_rows += item.rows
            self._cond.notify()
        return item

    def close(self, timeout: float = 5.0) -> None:
        """Run what is queued, then stop the workers."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()  # every worker, each possibly waiting
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))

    # -- the worker --------------------------------------------------------------------------

    def _next_batch(self) -> list[_Pending] | None:
        with self._cond:
            while True:
                while not self._queue:
                    if self._closed:
                        return None
                    self._cond.wait()
                deadline = self._queue[0].enqueued + self._delay_ns
                while self._queue and self._queued_rows < self.policy.max_rows \
                        and not self._closed:
                    left = deadline - _now()
                    if left <= 0:
                        break
                    self._cond.wait(left / 1e9)
                if self._queue:  # else another worker took them while this one waited
                    break
            batch = [self._queue.popleft()]
            rows = batch[0].rows
            while self._queue and rows + self._queue[0].rows <= self.policy.max_rows:
                rows += self._queue[0].rows
                batch.append(self._queue.popleft())
            self._queued_rows -= rows
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            started = _now()
            for item in batch:
                item.queue_ns = started - item.enqueued
            try:
                self._run(batch)
            finally:
                for item in batch:
                    item.finished()

    def _run(self, batch: list[_Pending]) -> None:
        if self._on_batch is not None:
            self._on_batch(len(batch), sum(item.rows for item in batch))
        if len(batch) > 1:
            try:
                x = np.concatenate([item.x for item in batch])
                logits = self._run_mixed([m for item in batch for m in item.row_modes()], x)
            except Exception:  # retried one by one below: an error reaches only its request
                pass
            else:
                start = 0
                for item in batch:
                    item.logits = logits[start:start + item.rows]
                    start += item.rows
                return
        for item in batch:
            try:
                item.logits = self._run_mixed(item.row_modes(), item.x)
            except Exception as exc:  # raised again in the request's own thread
                item.error = exc
