"""The one request handler behind every way taugate is served.

It owns both HTTP APIs -- taugate's JSON API (``/health``, ``/modes``, ``/modes/{mode}/predict``)
and the Open Inference Protocol v2 REST (``/v2/...``, see :mod:`taugate.server.oip`) -- as pure
request -> response logic: it knows no web framework. FastAPI (``taugate.server.app``) and Ray
Serve (``taugate.server.ray_app``) only turn their request into an :class:`HttpRequest` and the
answer back. Both therefore parse, validate (through the runtime's own input checker) and answer
byte for byte the same way; only *where* the model runs differs, which is the ``run`` callable
they pass:

    handler = ProtocolHandler(runtime)
    response = handler.handle(HttpRequest("POST", "/v2/models/rot45/infer", headers, body),
                              runtime.run)

:meth:`ProtocolHandler.route` does the first half alone (parse, validate, or answer outright) and
returns an :class:`Inference` when the model must run; Ray's ingress awaits a remote call between
``route`` and ``Inference.respond``.

The handler keeps the routes, the dispatch and the counting; the endpoints are their modules':
taugate's JSON API :mod:`taugate.server.json_api`, the Open Inference Protocol
:mod:`taugate.server.oip`, and the run half of an inference (the answer when a run raises)
:mod:`taugate.server.run_answer`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Union

import numpy as np

from taugate.runtime import DENSE, ModeRuntime
from taugate.runtime.routing import AUTO, check_policy, rows_to_run, run_rows
from taugate.server import json_api, model_repository, oip, stats
from taugate.server.batcher import Batcher, BatchPolicy
from taugate.server.json_api import taugate_error
from taugate.server.messages import HttpRequest, HttpResponse, Inference, Route
from taugate.server.metrics import UNKNOWN, ServerMetrics, cause_of
from taugate.server.prometheus import metrics_response
from taugate.server.redact import PathRedactor
from taugate.server.run_answer import AsyncRun, Run, run_cause, run_failed, run_rows_async

# the routes that run a model: counted per mode in ServerMetrics
INFERENCE_ROUTES = frozenset({"predict", "oip_infer", "oip_infer_version"})
_now = time.perf_counter_ns

Routed = Union[HttpResponse, Inference]


def validate_input(runtime: ModeRuntime, x) -> np.ndarray:
    """The runtime's own input check, used on every path (JSON, binary, Ray's ingress) so that
    every engine accepts and refuses exactly what ``ModeRuntime.run`` does, with its messages."""
    return runtime.checker.coerce(x)


class ProtocolHandler:
    """Answers taugate's JSON API and the Open Inference Protocol v2 for one bundle.

    ``runtime`` supplies the facts (modes, manifest, input checker); it need not hold loaded
    sessions (Ray's ingress opens it with ``lazy=True`` and runs models elsewhere). Messages
    from the runtime reach clients through :attr:`redact`: the bundle named by its directory
    name, no absolute path (the log keeps them). Every inference request is counted in
    :attr:`metrics` (``GET /metrics``, the statistics extension); ``model_control`` allows the
    repository extension's load and unload (:mod:`taugate.server.model_repository`).
    """

    def __init__(self, runtime: ModeRuntime, model_control: bool = False,
                 unknown: str = "refuse", batch: BatchPolicy | None = None):
        self.runtime = runtime
        self.unknown = check_policy(unknown)  # mode "auto": rows of no known mode
        self.metrics = ServerMetrics()
        # concurrent requests of :meth:`handle` coalesced into mixed-mode runs (delay_ms > 0)
        self.batcher = Batcher(runtime.run_mixed, batch, self.metrics.batched) \
            if batch is not None and batch.enabled else None
        self.redact = PathRedactor(runtime.bundle_dir)
        self.routes = [
            *json_api.routes(self),
            Route("GET", "/metrics", "metrics", self.scrape),
            *stats.routes(self),  # before /v2/models/{mode}, which would take "stats"
            *model_repository.routes(self, model_control),
            *oip.routes(self),
        ]
        self._compiled = [(r, r.compile()) for r in self.routes]

    # -- dispatch ----------------------------------------------------------------------------

    def route(self, req: HttpRequest) -> Routed:
        """Answer ``req`` outright, or return the :class:`Inference` it asks for."""
        return self._dispatch(req)[1]

    def _dispatch(self, req: HttpRequest) -> tuple[str | None, Routed]:
        """(the mode label when ``req`` asks for an inference, else None; the routed answer)"""
        allowed = []
        for r, pattern in self._compiled:
            match = pattern.match(req.path)
            if match is None:
                continue
            if r.method != req.method:
                allowed.append(r.method)
                continue
            params = match.groupdict()
            label = self._label(params["mode"]) if r.name in INFERENCE_ROUTES else None
            return label, r.target(req, **params)
        status, phrase = (405, "Method Not Allowed") if allowed else (404, "Not Found")
        return None, taugate_error(status, phrase.lower(), f"{req.method} {req.path}: {phrase}")

    def _label(self, mode: str) -> str:
        """``mode`` as a metrics label: a mode served now or counted before, else UNKNOWN (a
        client cannot grow the label set with made-up names)."""
        known = self.knows(mode) or oip.is_mixed(mode, self.runtime.manifest)
        return mode if known or self.metrics.seen(mode) else UNKNOWN

    def _refused(self, label: str | None, answer: HttpResponse, start: int) -> HttpResponse:
        if label is not None:
            self.metrics.failure(label, cause_of(answer.status), _now() - start)
        return answer

    def _ran(self, label: str, routed: Inference, req: HttpRequest, start: int, routed_at: int,
             logits=None, exc: Exception | None = None, queue_ns: int = 0) -> HttpResponse:
        """The answer after the run (``logits``, or the ``exc`` it raised), counted;
        ``queue_ns`` of the run's time was spent waiting for a batch."""
        if exc is not None:
            answer = run_failed(routed, req, exc, self.redact)
            self.metrics.failure(label, run_cause(exc, answer.status), _now() - start)
            return answer
        ran_at = _now()
        answer = routed.respond(logits)
        self.metrics.success(label, int(routed.x.shape[0]), routed_at - start,
                             ran_at - routed_at - queue_ns, _now() - ran_at, queue_ns)
        return answer

    @staticmethod
    def json_size(req: HttpRequest) -> int:
        """Bytes of JSON that routing ``req`` parses (the binary tensors after it are cheap)."""
        return oip.json_size(req.body, req.headers.get(oip.HEADER_LENGTH))

    def handle(self, req: HttpRequest, run: Run) -> HttpResponse:
        """Route ``req`` and, when it asks for inference, compute it with ``run(mode, x)``
        (or in a batch of concurrent requests through :attr:`batcher` when batching is on)."""
        start = _now()
        label, routed = self._dispatch(req)
        if isinstance(routed, HttpResponse):
            return self._refused(label, routed, start)
        routed_at = _now()
        queue_ns = 0
        try:
            if self.batcher is not None:  # the rows of "auto" and mixed requests: one batch
                modes = routed.mode if routed.rows is None else routed.rows
                logits, queue_ns = self.batcher.run(modes, routed.x)
            elif routed.rows is None:
                logits = run(routed.mode, routed.x)
            else:
                logits = run_rows(run, routed.x, routed.rows,
                                  self.runtime.manifest.output.classes)
        except Exception as exc:  # mapped to an HTTP error
            return self._ran(label, routed, req, start, routed_at, exc=exc)
        return self._ran(label, routed, req, start, routed_at, logits, queue_ns=queue_ns)

    async def handle_async(self, req: HttpRequest, run: AsyncRun,
                           offload_json_above: int | None = None) -> HttpResponse:
        """:meth:`handle` with an awaitable ``run`` (Ray Serve's deployment handles). Routing
        runs in a worker thread when the body holds more than ``offload_json_above`` bytes of
        JSON (parsing a large batch would block the event loop; a thread hop costs more than
        parsing a small or binary one)."""
        start = _now()
        if offload_json_above is not None and self.json_size(req) > offload_json_above:
            label, routed = await asyncio.to_thread(self._dispatch, req)
        else:
            label, routed = self._dispatch(req)
        if isinstance(routed, HttpResponse):
            return self._refused(label, routed, start)
        routed_at = _now()
        try:
            if routed.rows is None:
                logits = await run(routed.mode, routed.x)
            else:
                logits = await run_rows_async(run, routed, self.runtime.manifest.output.classes)
        except Exception as exc:
            return self._ran(label, routed, req, start, routed_at, exc=exc)
        return self._ran(label, routed, req, start, routed_at, logits)

    async def handle_batched_async(self, req: HttpRequest) -> HttpResponse:
        """:meth:`handle` through :attr:`batcher` for a caller on the event loop: routing inline
        (call it for small bodies only), the batch awaited without blocking a thread."""
        start = _now()
        label, routed = self._dispatch(req)
        if isinstance(routed, HttpResponse):
            return self._refused(label, routed, start)
        routed_at = _now()
        try:
            modes = routed.mode if routed.rows is None else routed.rows
            logits, queue_ns = await self.batcher.run_async(modes, routed.x)
        except Exception as exc:  # mapped to an HTTP error
            return self._ran(label, routed, req, start, routed_at, exc=exc)
        return self._ran(label, routed, req, start, routed_at, logits, queue_ns=queue_ns)

    def auto_rows(self, x: np.ndarray) -> tuple[list, list]:
        """Mode "auto": (the routed mode of each row or "unknown", the mode each row runs in
        under :attr:`unknown` policy); :class:`UnknownInputError` when refused."""
        routing = self.runtime.routing(x)
        return routing.modes, rows_to_run(routing, self.unknown)

    def scrape(self, req: HttpRequest) -> HttpResponse:
        """``GET /metrics``: Prometheus' text format (:mod:`taugate.server.prometheus`)."""
        return metrics_response(self.metrics, self.runtime)

    # -- facts -------------------------------------------------------------------------------

    def knows(self, mode: str) -> bool:
        return mode == DENSE or mode in self.runtime.manifest.modes or (
            mode == AUTO and self.runtime.manifest.router is not None)

    def checked_input(self, x) -> np.ndarray:
        return validate_input(self.runtime, x)
