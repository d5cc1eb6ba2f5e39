"""The FastAPI app over a :class:`ModeRuntime`: it mounts the protocol handler
(:mod:`taugate.server.protocol`: taugate's JSON API and the Open Inference Protocol v2) and adds
the limits (:mod:`taugate.server.limits`) and JSON error handlers.

taugate's endpoints: ``GET /health``, ``GET /modes``, ``GET /modes/{mode}``, ``POST
/modes/{mode}/predict`` with ``{"inputs": [sample, ...]}`` (each sample a nested
list shaped as the bundle's input), answering ``{"mode", "classes", "logits"}``; the protocol's under ``/v2``. Every error
is JSON with ``"error"`` and a 4xx status, or a 5xx one for: a bug (500), a model that produced
invalid output (500), a mode whose file changed or vanished since the bundle was opened (503), too
many requests in flight (503). An error answered on a request that was not (fully) parsed or
served (400, 408, 413, 500, 503) closes the connection. Parsing and inference run in the
threadpool; the health checks (``/health``, ``/v2/health/*``) run on the event loop, so they are
answered while inference is saturated. ``/docs`` is a self-contained page (no CDN) pointing to
``/openapi.json``; client-facing messages name the bundle by its directory name, never by an
absolute path.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from taugate import __version__
from taugate.runtime import InvalidOutputError, ModeRuntime
from taugate.server.batcher import BatchPolicy
from taugate.server.docs_page import mount_docs
from taugate.server.limits import (
    BodyLimitMiddleware,
    InFlightLimitMiddleware,
    RateLimitedLog,
    ServerLimits,
)
from taugate.server.messages import CLOSE_STATUSES
from taugate.server.mount import mount
from taugate.server.protocol import ProtocolHandler
from taugate.server.redact import PathRedactor

log = logging.getLogger("taugate.server")

DEFAULT_MAX_BODY_BYTES = ServerLimits.max_body_bytes


def _error(status: int, error: str, detail) -> JSONResponse:
    headers = {"connection": "close"} if status in CLOSE_STATUSES else None
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def describe_bundle(manifest) -> str:
    """The OpenAPI description: what this bundle serves, from its manifest."""
    spec = manifest.input
    shape = ", ".join(str(d) for d in ("batch", *spec.shape))
    value_range = f", values in [{spec.range[0]:g}, {spec.range[1]:g}]" if spec.range else ""
    return (f"Mode-specialized subnetworks of one frozen {manifest.family} model: "
            f"{len(manifest.modes)} modes, each one compacted ONNX subnetwork, beside the dense "
            f"model, run with onnxruntime. Input `{spec.name}`: float32 [{shape}]{value_range}; "
            f"output: logits over {manifest.output.classes} classes.")


class CountResponses:
    """Outermost ASGI middleware: every answer's status into ``metrics.responded`` (refusals
    of the limits middlewares included, which the protocol handler never sees)."""

    def __init__(self, app, metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def counted(message):
            if message["type"] == "http.response.start":
                self.metrics.responded(message["status"])
            await send(message)

        await self.app(scope, receive, counted)


def create_app(runtime: ModeRuntime, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, *,
               limits: ServerLimits | None = None, model_control: bool = False,
               unknown: str = "refuse", batch: BatchPolicy | None = None) -> FastAPI:
    """The ASGI app serving ``runtime``; bodies over ``max_body_bytes`` get 413. ``limits``
    (default :class:`ServerLimits` with this ``max_body_bytes``) also bounds body time and
    requests in flight; connection limits are the server's (see ``serve``).
    ``model_control``: allow ``POST /v2/repository/models/{m}/load`` and ``.../unload``.
    ``batch``: coalesce concurrent inference requests (:mod:`taugate.server.batcher`)."""
    if not isinstance(max_body_bytes, int) or isinstance(max_body_bytes, bool) \
            or max_body_bytes < 1:
        raise ValueError(f"max_body_bytes: expected an integer >= 1, got {max_body_bytes!r}")
    if limits is None:
        limits = ServerLimits(max_body_bytes=max_body_bytes)
    app = FastAPI(title="taugate", version=__version__,
                  description=describe_bundle(runtime.manifest),
                  docs_url=None, redoc_url=None)  # theirs load JavaScript from a CDN
    app.state.runtime = runtime
    redact = PathRedactor(runtime.bundle_dir)
    mount_docs(app)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, HTTPStatus(exc.status_code).phrase.lower(),
                      f"{request.method} {request.url.path}: {exc.detail}")

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return _error(422, "invalid request", jsonable_encoder(exc.errors()))

    @app.exception_handler(InvalidOutputError)
    async def invalid_output(request: Request, exc: InvalidOutputError):
        # the handler maps it around inference; this catches it anywhere else
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return _error(500, "invalid model output", redact(str(exc)))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "internal error", type(exc).__name__)

    handler = ProtocolHandler(runtime, model_control=model_control, unknown=unknown,
                              batch=batch)
    app.state.handler = handler
    mount(app, handler, runtime.run)  # both APIs: taugate.server.protocol
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=limits.max_body_bytes,
                       body_timeout_s=limits.body_timeout_s)
    app.add_middleware(InFlightLimitMiddleware, max_in_flight=limits.max_in_flight,
                       events=RateLimitedLog())
    app.add_middleware(CountResponses, metrics=handler.metrics)
    return app
