"""The server's counters, in one place that knows no web framework: the protocol handler
(:mod:`taugate.server.protocol`) records every inference request here, whichever engine serves
it (FastAPI, Ray Serve's ingress), and the ``/metrics`` page
(:mod:`taugate.server.prometheus`) and the statistics extension (:mod:`taugate.server.stats`)
read them.

Per mode: requests, failures by cause, rows inferred, a latency histogram (seconds, fixed
buckets) and the time spent per phase (input: parse and validate; infer: the model run; output:
encoding the answer) and, with dynamic batching on (:mod:`taugate.server.batcher`), the time a
request waited for its batch (queue), kept apart from the model run. Per server: batches run and
their rows. Updates take one lock for a few additions.
"""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass, field, replace

# upper bounds (seconds) of the latency histogram's buckets; +Inf follows
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
           1.0, 2.5, 5.0, 10.0)
UNKNOWN = "(unknown)"  # the label of requests naming no known mode (bounded label values)

# a refused request's cause, from its status (failures of the run itself are named by what
# raised: see taugate.server.run_answer.run_failed)
CAUSES = {400: "bad_request", 404: "unknown_model", 408: "body_timeout", 413: "body_too_large",
          422: "invalid_input", 500: "internal", 503: "unavailable"}


def cause_of(status: int) -> str:
    """The failure cause of an answer with ``status``."""
    return CAUSES.get(status, "server_error" if status >= 500 else "client_error")


@dataclass
class ModeCounters:
    """Everything counted for one mode (``dense`` included) since the server started."""

    requests: int = 0  # inference requests answered
    rows: int = 0  # samples inferred (successful requests)
    success: int = 0
    success_ns: int = 0  # summed duration of successful requests
    fail: int = 0
    fail_ns: int = 0
    input_ns: int = 0  # parse + validate, successful requests
    infer_ns: int = 0  # the model run (its batch's run, when batched)
    queue_ns: int = 0  # waiting for a batch to form and run (0 without batching)
    output_ns: int = 0  # encoding the answer
    last_inference_ms: int = 0  # wall clock (ms since the epoch) of the last success
    failures: dict = field(default_factory=dict)  # cause -> count
    buckets: list = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))  # not cumulative
    duration_s: float = 0.0  # summed duration of every request (the histogram's _sum)

    def _observe(self, ns: int) -> None:
        seconds = ns / 1e9
        self.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.duration_s += seconds
        self.requests += 1


class ServerMetrics:
    """Thread-safe counters per mode, and HTTP answers per status code."""

    def __init__(self):
        self._lock = threading.Lock()
        self._modes: dict[str, ModeCounters] = {}
        self._responses: dict[int, int] = {}
        self.batches = 0  # batches run by the dynamic batcher
        self.batch_requests = 0  # requests in them
        self.batch_rows = 0  # rows in them
        self.started = time.time()

    def _mode(self, mode: str) -> ModeCounters:
        counters = self._modes.get(mode)
        if counters is None:
            counters = self._modes[mode] = ModeCounters()
        return counters

    def seen(self, mode: str) -> bool:
        """Whether ``mode`` has counters (it stays a label after an unload)."""
        return mode in self._modes

    def success(self, mode: str, rows: int, input_ns: int, infer_ns: int,
                output_ns: int, queue_ns: int = 0) -> None:
        total = input_ns + queue_ns + infer_ns + output_ns
        with self._lock:
            c = self._mode(mode)
            c._observe(total)
            c.rows += rows
            c.success += 1
            c.success_ns += total
            c.input_ns += input_ns
            c.infer_ns += infer_ns
            c.output_ns += output_ns
            c.queue_ns += queue_ns
            c.last_inference_ms = int(time.time() * 1000)

    def failure(self, mode: str, cause: str, ns: int) -> None:
        with self._lock:
            c = self._mode(mode)
            c._observe(ns)
            c.fail += 1
            c.fail_ns += ns
            c.failures[cause] = c.failures.get(cause, 0) + 1

    def batched(self, requests: int, rows: int) -> None:
        """Count one batch of ``requests`` requests holding ``rows`` rows."""
        with self._lock:
            self.batches += 1
            self.batch_requests += requests
            self.batch_rows += rows

    def responded(self, status: int) -> None:
        """Count one HTTP answer (every route, and refusals made before the handler)."""
        with self._lock:
            self._responses[status] = self._responses.get(status, 0) + 1

    def modes(self) -> dict[str, ModeCounters]:
        """A consistent copy of the per-mode counters."""
        with self._lock:
            return {m: replace(c, failures=dict(c.failures), buckets=list(c.buckets))
                    for m, c in self._modes.items()}

    def responses(self) -> dict[int, int]:
        with self._lock:
            return dict(self._responses)
