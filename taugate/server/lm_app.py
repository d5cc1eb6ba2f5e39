"""The FastAPI app of a language-model bundle: :class:`~taugate.server.generate.GenerateHandler`
behind the same hardening as the classifier app (body size and time limits, requests in flight,
connection and header limits through :func:`~taugate.server.background.uvicorn_config`)."""

from __future__ import annotations

from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from taugate import __version__
from taugate.server.generate import GenerateHandler
from taugate.server.limits import (
    BodyLimitMiddleware,
    InFlightLimitMiddleware,
    RateLimitedLog,
    ServerLimits,
)
from taugate.server.messages import HttpRequest, HttpResponse
from taugate.server.sse import SSEResponse


def create_lm_app(bundle: str | Path, *, limits: ServerLimits | None = None,
                  precision: str = "fp32", threads: int = 1, unknown: str = "refuse",
                  stream_timeout_s: float | None = None) -> FastAPI:
    """The ASGI app serving the LM bundle at ``bundle`` (docs/lm.md, "Serving").
    ``unknown``: what ``auto`` does with a prompt of no known domain (refuse, or dense);
    ``stream_timeout_s``: the time limit of one ``generate_stream`` answer."""
    limits = limits or ServerLimits()
    extra = {} if stream_timeout_s is None else {"stream_timeout_s": stream_timeout_s}
    handler = GenerateHandler(bundle, precision, threads, unknown=unknown, **extra)
    app = FastAPI(title="taugate", version=__version__, docs_url=None, redoc_url=None,
                  description=f"Text generation with the dense model and "
                              f"{len(handler.manifest.modes)} modes of one decoder ({precision}).")
    app.state.handler = handler

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        return JSONResponse({"error": "internal error", "detail": type(exc).__name__}, 500)

    async def endpoint(request: Request) -> Response:
        req = HttpRequest(request.method, request.url.path, request.headers,
                          await request.body())
        answer = await run_in_threadpool(handler.handle, req)
        return Response(answer.body, answer.status, headers=answer.headers)

    async def stream_endpoint(request: Request):
        prepared = await run_in_threadpool(handler.prepare, request.path_params["mode"],
                                           await request.body())
        if isinstance(prepared, HttpResponse):
            return Response(prepared.body, prepared.status, headers=prepared.headers)
        final = {"finish_reason": "length"}  # bytes have no end token
        return SSEResponse(handler.stream(prepared), prepared.head, final,
                           handler.stream_timeout_s)

    app.add_api_route("/v2/models/{mode}/generate_stream", stream_endpoint, methods=["POST"])
    for path, methods in (("/health", ["GET"]), ("/v2/health/ready", ["GET"]),
                          ("/v2/health/live", ["GET"]), ("/v2/models/{mode}", ["GET"]),
                          ("/v2/models/{mode}/generate", ["POST"])):
        app.add_api_route(path, endpoint, methods=methods)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=limits.max_body_bytes,
                       body_timeout_s=limits.body_timeout_s)
    app.add_middleware(InFlightLimitMiddleware, max_in_flight=limits.max_in_flight,
                       events=RateLimitedLog())
    return app


def serve_lm(bundle: str | Path, host: str = "127.0.0.1", port: int = 8000,
             limits: ServerLimits | None = None, precision: str = "fp32",
             threads: int = 1, unknown: str = "refuse",
             stream_timeout_s: float | None = None) -> None:
    """Serve the LM bundle over HTTP until interrupted (arguments: :func:`create_lm_app`)."""
    from taugate.server.background import uvicorn_config

    limits = limits or ServerLimits()
    app = create_lm_app(bundle, limits=limits, precision=precision, threads=threads,
                        unknown=unknown, stream_timeout_s=stream_timeout_s)
    uvicorn.Server(uvicorn_config(app, limits, host=host, port=port)).run()
