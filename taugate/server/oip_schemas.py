"""Pydantic models of the Open Inference Protocol v2 bodies, for /openapi.json and /docs only:
:mod:`taugate.server.oip` parses and writes the bodies itself."""

# pydantic evaluates these annotations at runtime, and Python 3.9 (still supported) has no
# ``X | None`` there.

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, Field


class TensorMetadata(BaseModel):
    name: str
    datatype: str = Field(..., description='e.g. "FP32"')
    shape: list[int] = Field(..., description="-1 for the batch axis")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class InferTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str = Field(..., description='"FP32"')
    parameters: Optional[dict] = Field(None, description='{"binary_data_size": bytes} when the '
                                                         "tensor follows the JSON header")
    data: Optional[list[Any]] = Field(None, description="values, row-major (flat or nested)")


class RequestedOutput(BaseModel):
    name: str
    parameters: Optional[dict] = Field(None, description='{"binary_data": true}')


class InferRequest(BaseModel):
    id: Optional[str] = None
    parameters: Optional[dict] = Field(None, description='{"binary_data_output": true}')
    inputs: list[InferTensor]
    outputs: Optional[list[RequestedOutput]] = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: Optional[str] = None
    outputs: list[InferTensor]
