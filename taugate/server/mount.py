"""Mount the protocol handler on a FastAPI app: one route per handler route, each answered by
:meth:`ProtocolHandler.handle` in the threadpool (parsing and inference stay off the event loop),
except the cheap bodiless ones marked ``inline`` (the health checks), answered on the event loop
so that they answer while every inference thread is busy. FastAPI adds only routing, the OpenAPI
description below, and its error handlers for routes that do not exist."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from taugate.server.messages import HttpRequest
from taugate.server.oip_schemas import InferRequest, InferResponse, ModelMetadata
from taugate.server.protocol import ProtocolHandler, Run
from taugate.server.schemas import (
    ErrorBody,
    Health,
    ModeInfo,
    ModeList,
    PredictRequest,
    PredictResponse,
)

_ERRORS = {code: {"model": ErrorBody} for code in (400, 404, 408, 413, 422, 500, 503)}


def _body(schema, binary: bool = False) -> dict:
    content = {"application/json": {"schema": schema.model_json_schema()}}
    if binary:  # the binary tensor extension: JSON header + raw tensors
        content["application/octet-stream"] = {"schema": {"type": "string", "format": "binary"}}
    return {"requestBody": {"required": True, "content": content}}


_OIP = ["Open Inference Protocol v2"]
_DOCS = {  # FastAPI route options: the OpenAPI description of each handler route
    "health": {"response_model": Health},
    "modes": {"response_model": ModeList},
    "mode_info": {"response_model": ModeInfo, "responses": _ERRORS},
    "predict": {
        "response_model": PredictResponse, "responses": _ERRORS,
        "openapi_extra": _body(PredictRequest),
        "description": "Class ids and logits of a mode (or 'dense') for a batch of inputs "
                       "shaped as the bundle's input spec (GET /modes, `taugate info`)."},
    "oip_model_metadata": {"response_model": ModelMetadata, "responses": _ERRORS},
    "oip_infer": {
        "response_model": InferResponse, "responses": _ERRORS,
        "openapi_extra": _body(InferRequest, binary=True),
        "description": "JSON tensors, or with Inference-Header-Content-Length a JSON header "
                       "followed by raw little-endian tensors (binary tensor data extension)."},
}


def mount(app: FastAPI, handler: ProtocolHandler, run: Run) -> None:
    """Add every route of ``handler`` to ``app``; inference calls ``run(mode, x)``."""

    async def endpoint(request: Request) -> Response:
        req = HttpRequest(request.method, request.url.path, request.headers,
                          await request.body())
        answer = await run_in_threadpool(handler.handle, req, run)
        return Response(answer.body, answer.status, headers=answer.headers)

    async def inline_endpoint(request: Request) -> Response:
        answer = handler.handle(HttpRequest(request.method, request.url.path, request.headers),
                                run)
        return Response(answer.body, answer.status, headers=answer.headers)

    for route in handler.routes:
        docs = dict(_DOCS.get(route.name) or _DOCS.get(route.name.removesuffix("_version"), {}))
        if route.name.startswith("oip_"):
            docs["tags"] = _OIP
        app.add_api_route(route.template, inline_endpoint if route.inline else endpoint,
                          methods=[route.method], name=route.name, **docs)
