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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Callable, Union

import numpy as np

from taugate.runtime import (
    DENSE,
    BundleError,
    InputError,
    InvalidOutputError,
    ModeRuntime,
    UnknownModeError,
)
from taugate.runtime.routing import (
    AUTO,
    UnknownInputError,
    check_policy,
    groups,
    rows_to_run,
    run_rows,
)
from taugate.server import model_repository, oip, stats, strict_json, token_body
from taugate.server.batcher import Batcher, BatchPolicy, QueueFull
from taugate.server.messages import (
    HttpRequest,
    HttpResponse,
    Inference,
    Route,
    ServiceUnavailable,
)
from taugate.server.metrics import UNKNOWN, ServerMetrics, cause_of
from taugate.server.prometheus import metrics_response
from taugate.server.redact import PathRedactor
from taugate.server.schemas import ModeInfo

log = logging.getLogger("taugate.server")

_MODE_INFO_FIELDS = tuple(ModeInfo.model_fields)
# the routes that run a model: counted per mode in ServerMetrics
INFERENCE_ROUTES = frozenset({"predict", "oip_infer", "oip_infer_version"})
_now = time.perf_counter_ns


Run = Callable[[str, np.ndarray], np.ndarray]
AsyncRun = Callable[[str, np.ndarray], Awaitable[np.ndarray]]
Routed = Union[HttpResponse, Inference]


# -- taugate's JSON API -------------------------------------------------------------------------

def taugate_error(status: int, error: str, detail) -> HttpResponse:
    return HttpResponse.json({"error": error, "detail": detail}, status)


_BadRequest = strict_json.JsonRefused


def parse_predict_body(body: bytes, max_depth: int = 3, tokens: bool = False):
    """``{"inputs": [...]}`` -> the inputs as a float32 array (shape checks are the runtime's).
    Strict: numbers only, at most ``max_depth`` lists deep (the handler passes one more than the
    rank of a sample of the bundle's input, e.g. 3 for a batch of 28x28 images). ``tokens``:
    the bundle takes token ids (:func:`token_body.parse_token_inputs`: int64, or a dict)."""
    payload = strict_json.loads(body)
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise _BadRequest(422, "invalid request body",
                          'expected a JSON object {"inputs": [sample, ...]}' + (
                              ' or {"inputs": {"input_ids": [[...]], "attention_mask": '
                              '[[...]]}}' if tokens else ""))
    inputs = payload["inputs"]
    if tokens:
        return token_body.parse_token_inputs(inputs)
    if not isinstance(inputs, list):
        raise _BadRequest(422, "invalid request body",
                          f"inputs: expected a list of samples, got {type(inputs).__name__}")
    if not strict_json.numbers_only(inputs, max_depth=max_depth):
        raise _BadRequest(422, "invalid input",
                          f"inputs: expected lists of JSON numbers only (no strings, booleans "
                          f"or null), at most {max_depth} lists deep, each sample shaped as the "
                          f"bundle's input")
    try:
        return strict_json.as_array(inputs, np.float32, "inputs")
    except (ValueError, TypeError):
        raise _BadRequest(422, "invalid input",
                          "inputs: expected equal-length (nested) lists of numbers, each sample "
                          "shaped as the bundle's input") from None


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
        spec = runtime.manifest.input
        # a batch of samples; image inputs may also come as [N, H, W] or [N, C, H, W] lists
        self._json_depth = max(len(spec.shape) + 1, 4 if spec.layout is not None else 0)
        self._tokens = token_body.is_tokens(spec)
        self.routes = [
            Route("GET", "/health", "health", self.health, inline=True),
            Route("GET", "/modes", "modes", self.modes),
            Route("GET", "/modes/{mode}", "mode_info", self.mode_info),
            Route("POST", "/modes/{mode}/predict", "predict", self.predict),
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
            answer = self.run_failed(routed, req, exc)
            self.metrics.failure(label, _run_cause(exc, answer.status), _now() - start)
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
                logits = await self._run_rows_async(run, routed)
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

    async def _run_rows_async(self, run: AsyncRun, routed: Inference) -> np.ndarray:
        """Mode "auto": one awaited ``run`` per mode present, concurrently."""
        parts = groups(routed.rows)
        outs = await asyncio.gather(*(run(m, routed.x[ix]) for m, ix in parts.items()))
        logits = np.empty((routed.x.shape[0], self.runtime.manifest.output.classes), np.float32)
        for ix, out in zip(parts.values(), outs):
            logits[ix] = out
        return logits

    def auto_rows(self, x: np.ndarray) -> tuple[list, list]:
        """Mode "auto": (the routed mode of each row or "unknown", the mode each row runs in
        under :attr:`unknown` policy); :class:`UnknownInputError` when refused."""
        routing = self.runtime.routing(x)
        return routing.modes, rows_to_run(routing, self.unknown)

    def run_failed(self, inference: Inference, req: HttpRequest, exc: Exception) -> HttpResponse:
        """The answer when ``run`` raised ``exc``: its message without absolute paths."""
        message = self.redact(str(exc))
        if isinstance(exc, UnknownModeError):
            return inference.error(404, "unknown mode", message)
        if isinstance(exc, InputError):
            return inference.error(422, "invalid input", message)
        if isinstance(exc, QueueFull):
            answer = inference.error(503, "server busy", message)
            answer.headers["retry-after"] = str(exc.retry_after_s)
            return answer
        if isinstance(exc, ServiceUnavailable):
            return inference.error(503, "unavailable", message)
        if isinstance(exc, InvalidOutputError):  # a broken or hostile bundle, not the input
            log.error("%s %s: %s", req.method, req.path, exc)
            return inference.error(500, "invalid model output", message)
        if isinstance(exc, BundleError):  # its file changed or vanished since open
            return inference.error(503, "mode unavailable", message)
        log.error("inference failed on %s %s", req.method, req.path, exc_info=exc)
        kind = "internal error"
        return inference.error(500, kind, f"{kind}: {type(exc).__name__}")

    def scrape(self, req: HttpRequest) -> HttpResponse:
        """``GET /metrics``: Prometheus' text format (:mod:`taugate.server.prometheus`)."""
        return metrics_response(self.metrics, self.runtime)

    # -- facts -------------------------------------------------------------------------------

    def knows(self, mode: str) -> bool:
        return mode == DENSE or mode in self.runtime.manifest.modes or (
            mode == AUTO and self.runtime.manifest.router is not None)

    def _info(self, mode: str) -> dict:
        info = self.runtime.info(mode)
        return {k: info.get(k) for k in _MODE_INFO_FIELDS}

    def checked_input(self, x) -> np.ndarray:
        return validate_input(self.runtime, x)

    # -- taugate's JSON API ------------------------------------------------------------------

    def health(self, req: HttpRequest) -> HttpResponse:
        # cheap (a stat per mode file): mounted on the event loop, so it answers while every
        # inference thread is busy
        rt = self.runtime
        down = self.redact.values(rt.unavailable())
        return HttpResponse.json({"status": "degraded" if down else "ok", "modes": len(rt.modes),
                                  "providers": rt.providers, "unavailable": down})

    def modes(self, req: HttpRequest) -> HttpResponse:
        return HttpResponse.json({"modes": [self._info(m) for m in self.runtime.modes],
                                  "dense": self._info(DENSE)})

    def mode_info(self, req: HttpRequest, mode: str) -> HttpResponse:
        try:
            return HttpResponse.json(self._info(mode))
        except UnknownModeError as exc:
            return taugate_error(404, "unknown mode", str(exc))

    def predict(self, req: HttpRequest, mode: str) -> Routed:
        try:
            x = parse_predict_body(req.body, self._json_depth, self._tokens)
            if not self.knows(mode):
                self.runtime.info(mode)  # raises UnknownModeError with the valid choices
            x = self.checked_input(x)
            routed, rows = self.auto_rows(x) if mode == AUTO else (None, None)
        except _BadRequest as exc:
            return taugate_error(exc.status, exc.error, exc.detail)
        except UnknownModeError as exc:
            return taugate_error(404, "unknown mode", str(exc))
        except UnknownInputError as exc:
            return taugate_error(422, "unknown input", str(exc))
        except InputError as exc:
            return taugate_error(422, "invalid input", str(exc))

        def respond(logits: np.ndarray) -> HttpResponse:
            answer = {"mode": mode, "classes": logits.argmax(axis=1).tolist(),
                      "logits": logits.tolist()}
            if routed is not None:
                answer["modes"] = routed  # per row: its routed mode, or "unknown" (ran dense)
            return HttpResponse.json(answer)

        return Inference(mode, x, respond, taugate_error, rows)


def _run_cause(exc: Exception, status: int) -> str:
    """The failure cause of a run that raised ``exc`` (answered with ``status``)."""
    for kind, cause in ((InvalidOutputError, "invalid_output"), (BundleError, "mode_unavailable"),
                        (UnknownModeError, "unknown_model"), (InputError, "invalid_input")):
        if isinstance(exc, kind):
            return cause
    return cause_of(status)
