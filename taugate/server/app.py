"""The FastAPI app: health, mode listing, and prediction over a :class:`ModeRuntime`.

Endpoints: ``GET /health``, ``GET /modes``, ``GET /modes/{mode}``, ``POST /modes/{mode}/predict``
with ``{"inputs": [sample, ...]}`` (each sample a nested list of numbers shaped as the bundle's
input spec, e.g. 784 floats in [0, 1] or 28 rows of 28 for the MNIST bundles), answering
``{"mode", "classes", "logits"}``. Every error is JSON ``{"error": ..., "detail": ...}`` with a
4xx status, or a 5xx one for: a bug (500), a model that produced invalid output (500), a mode
whose file changed or vanished since the bundle was opened (503), too many requests in flight
(503). An error the server answers without having parsed the request (400, 408, 413, 500, 503)
closes the connection. Parsing and inference run in the threadpool; ``/health`` runs on the
event loop, so it is answered while inference is saturated (limits: taugate.server.limits).
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus

import numpy as np
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from taugate import __version__
from taugate.runtime import (
    DENSE,
    BundleError,
    InputError,
    InvalidOutputError,
    ModeRuntime,
    UnknownModeError,
)
from taugate.server.limits import (
    BodyLimitMiddleware,
    InFlightLimitMiddleware,
    RateLimitedLog,
    ServerLimits,
)
from taugate.server.schemas import (
    ErrorBody,
    Health,
    ModeInfo,
    ModeList,
    PredictRequest,
    PredictResponse,
)

log = logging.getLogger("taugate.server")

DEFAULT_MAX_BODY_BYTES = ServerLimits.max_body_bytes
_ERRORS = {code: {"model": ErrorBody} for code in (400, 404, 408, 413, 422, 500, 503)}
_CLOSE = {400, 408, 413, 500, 503}  # the request was not (fully) parsed or served: hang up
_NUMBERS = {int, float}


def _error(status: int, error: str, detail) -> JSONResponse:
    headers = {"connection": "close"} if status in _CLOSE else None
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


class _BadRequest(Exception):
    def __init__(self, status: int, error: str, detail: str):
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


def _numbers_only(x: list, depth: int = 0) -> bool:
    """True when ``x`` is a list of numbers or of such lists, at most 3 levels deep (a batch
    of images of rows): JSON strings, booleans and null are refused, not converted."""
    kinds = set(map(type, x))
    if kinds <= _NUMBERS:
        return True
    return kinds == {list} and depth < 2 and all(_numbers_only(v, depth + 1) for v in x)


def _parse_inputs(body: bytes) -> np.ndarray:
    """JSON body -> a float32 array (shape checks are the runtime's)."""
    try:
        payload = json.loads(body)
    except RecursionError:
        raise _BadRequest(400, "malformed JSON", "the body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an int over 4300 digits
        raise _BadRequest(400, "malformed JSON", str(exc)[:500]) from None
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise _BadRequest(422, "invalid request body",
                          'expected a JSON object {"inputs": [sample, ...]}')
    inputs = payload["inputs"]
    if not isinstance(inputs, list):
        raise _BadRequest(422, "invalid request body",
                          f"inputs: expected a list of samples, got {type(inputs).__name__}")
    if not _numbers_only(inputs):
        raise _BadRequest(422, "invalid input",
                          "inputs: expected lists of JSON numbers only (no strings, booleans "
                          "or null), each sample shaped as the bundle's input")
    try:
        with np.errstate(over="raise"):
            return np.asarray(inputs, dtype=np.float32)
    except FloatingPointError:
        raise _BadRequest(400, "number out of range",
                          "inputs: a number is too long or beyond the float32 range") from None
    except (ValueError, TypeError):
        raise _BadRequest(422, "invalid input",
                          "inputs: expected equal-length (nested) lists of numbers, each "
                          "sample shaped as the bundle's input") from None


def _mode_info(runtime: ModeRuntime, mode: str) -> dict:
    info = runtime.info(mode)
    return {k: info.get(k) for k in ModeInfo.model_fields}


def create_app(runtime: ModeRuntime, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, *,
               limits: ServerLimits | None = None) -> FastAPI:
    """The ASGI app serving ``runtime``; bodies over ``max_body_bytes`` get 413. ``limits``
    (default :class:`ServerLimits` with this ``max_body_bytes``) also bounds body time and
    requests in flight; connection limits are the server's (see ``serve``)."""
    if not isinstance(max_body_bytes, int) or isinstance(max_body_bytes, bool) \
            or max_body_bytes < 1:
        raise ValueError(f"max_body_bytes: expected an integer >= 1, got {max_body_bytes!r}")
    if limits is None:
        limits = ServerLimits(max_body_bytes=max_body_bytes)
    app = FastAPI(title="taugate", version=__version__,
                  description="Mode-specialized MNIST classifiers: one compacted ONNX "
                              "subnetwork per mode, run with onnxruntime.")
    app.state.runtime = runtime

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, HTTPStatus(exc.status_code).phrase.lower(),
                      f"{request.method} {request.url.path}: {exc.detail}")

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return _error(422, "invalid request", jsonable_encoder(exc.errors()))

    @app.exception_handler(InvalidOutputError)
    async def invalid_output(request: Request, exc: InvalidOutputError):
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return _error(500, "invalid model output", str(exc))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "internal error", type(exc).__name__)

    @app.get("/health", response_model=Health)
    async def health():
        # async: answered on the event loop even when every inference thread is busy
        down = runtime.unavailable()
        return {"status": "degraded" if down else "ok", "modes": len(runtime.modes),
                "providers": runtime.providers, "unavailable": down}

    @app.get("/modes", response_model=ModeList)
    def modes():
        return {"modes": [_mode_info(runtime, m) for m in runtime.modes],
                "dense": _mode_info(runtime, DENSE)}

    @app.get("/modes/{mode}", response_model=ModeInfo, responses=_ERRORS)
    def mode_info(mode: str):
        try:
            return _mode_info(runtime, mode)
        except UnknownModeError as exc:
            return _error(404, "unknown mode", str(exc))

    def predict_sync(mode: str, body: bytes) -> JSONResponse:
        try:
            logits = runtime.run(mode, _parse_inputs(body))
        except _BadRequest as exc:
            return _error(exc.status, exc.error, exc.detail)
        except UnknownModeError as exc:
            return _error(404, "unknown mode", str(exc))
        except InputError as exc:
            return _error(422, "invalid input", str(exc))
        except InvalidOutputError as exc:
            log.error("%s", exc)
            return _error(500, "invalid model output", str(exc))
        except BundleError as exc:  # its file changed or vanished since open
            return _error(503, "mode unavailable", str(exc))
        classes = logits.argmax(axis=1)
        return JSONResponse({"mode": mode, "classes": classes.tolist(),
                             "logits": logits.tolist()})

    @app.post("/modes/{mode}/predict", response_model=PredictResponse, responses=_ERRORS,
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": PredictRequest.model_json_schema()}}}})
    async def predict(mode: str, request: Request):
        """Class ids and logits of ``mode`` for a batch of images (``"dense"``: the dense
        model). Pixels are floats in [0, 1], white digit on black as in MNIST."""
        body = await request.body()
        return await run_in_threadpool(predict_sync, mode, body)

    app.add_middleware(BodyLimitMiddleware, max_body_bytes=limits.max_body_bytes,
                       body_timeout_s=limits.body_timeout_s)
    app.add_middleware(InFlightLimitMiddleware, max_in_flight=limits.max_in_flight,
                       events=RateLimitedLog())
    return app
