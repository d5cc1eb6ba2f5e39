"""The FastAPI app: health, mode listing, and prediction over a :class:`ModeRuntime`.

Endpoints: ``GET /health``, ``GET /modes``, ``GET /modes/{mode}``, ``POST /modes/{mode}/predict``
with ``{"inputs": [sample, ...]}`` (each sample a nested list of numbers shaped as the bundle's
input spec, e.g. 784 floats in [0, 1] or 28 rows of 28 for the MNIST bundles), answering
``{"mode", "classes", "logits"}``. Every error is JSON ``{"error": ..., "detail": ...}`` with a
4xx status (5xx only for a bug); the server keeps serving. Parsing and inference run in the
threadpool so the event loop stays free.
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
from taugate.runtime import DENSE, InputError, ModeRuntime, UnknownModeError
from taugate.server.limits import BodyLimitMiddleware
from taugate.server.schemas import (
    ErrorBody,
    Health,
    ModeInfo,
    ModeList,
    PredictRequest,
    PredictResponse,
)

log = logging.getLogger("taugate.server")

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024  # ~1000 images of 784 floats as JSON text
_ERRORS = {code: {"model": ErrorBody} for code in (400, 404, 413, 422)}


def _error(status: int, error: str, detail) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


class _BadRequest(Exception):
    def __init__(self, status: int, error: str, detail: str):
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


def _parse_inputs(body: bytes) -> np.ndarray:
    """JSON body -> a numeric array (shape checks are the runtime's)."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _BadRequest(400, "malformed JSON", str(exc)) from None
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise _BadRequest(422, "invalid request body",
                          'expected a JSON object {"inputs": [sample, ...]}')
    inputs = payload["inputs"]
    if not isinstance(inputs, list):
        raise _BadRequest(422, "invalid request body",
                          f"inputs: expected a list of samples, got {type(inputs).__name__}")
    try:
        return np.asarray(inputs, dtype=np.float32)
    except (ValueError, TypeError):
        raise _BadRequest(422, "invalid input",
                          "inputs: expected equal-length (nested) lists of numbers, each "
                          "sample shaped as the bundle's input") from None


def _mode_info(runtime: ModeRuntime, mode: str) -> dict:
    info = runtime.info(mode)
    return {k: info.get(k) for k in ModeInfo.model_fields}


def create_app(runtime: ModeRuntime, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    """The ASGI app serving ``runtime``; bodies over ``max_body_bytes`` get 413."""
    if not isinstance(max_body_bytes, int) or isinstance(max_body_bytes, bool) \
            or max_body_bytes < 1:
        raise ValueError(f"max_body_bytes: expected an integer >= 1, got {max_body_bytes!r}")
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

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "internal error", type(exc).__name__)

    @app.get("/health", response_model=Health)
    def health():
        return {"status": "ok", "modes": len(runtime.modes), "providers": runtime.providers}

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

    app.add_middleware(BodyLimitMiddleware, max_body_bytes=max_body_bytes)
    return app
