"""Mount the protocol handler on a FastAPI app: one route per handler route, each answered by
:meth:`ProtocolHandler.handle` in the threadpool (parsing and inference stay off the event loop),
except the cheap bodiless ones marked ``inline`` (the health checks), answered on the event loop
so that they answer while every inference thread is busy. With batching on, an inference whose
body holds little JSON is routed on the event loop and awaits its batch there
(:meth:`ProtocolHandler.handle_batched_async`): no threadpool hop, the costliest step of a small
request under load. FastAPI adds only routing, the OpenAPI
description below, and its error handlers for routes that do not exist."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from taugate.server.messages import HttpRequest
from taugate.server.oip_schemas import InferRequest, InferResponse, ModelMetadata
from taugate.server.protocol import INFERENCE_ROUTES, ProtocolHandler
from taugate.server.run_answer import Run
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
INLINE_JSON_BYTES = 64 * 1024  # batched requests with less JSON are routed on the event loop
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

    async def batched_endpoint(request: Request) -> Response:
        req = HttpRequest(request.method, request.url.path, request.headers,
                          await request.body())
        if handler.json_size(req) > INLINE_JSON_BYTES:  # parsing it would stall the loop
            answer = await run_in_threadpool(handler.handle, req, run)
        else:
            answer = await handler.handle_batched_async(req)
        return Response(answer.body, answer.status, headers=answer.headers)

    for route in handler.routes:
        docs = dict(_DOCS.get(route.name) or _DOCS.get(route.name.removesuffix("_version"), {}))
        if route.name.startswith("oip_"):
            docs["tags"] = _OIP
        target = inline_endpoint if route.inline else endpoint
        if handler.batcher is not None and route.name in INFERENCE_ROUTES:
            target = batched_endpoint
        app.add_api_route(route.template, target,
                          methods=[route.method], name=route.name, **docs)
