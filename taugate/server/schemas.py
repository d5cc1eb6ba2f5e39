"""Pydantic models of the HTTP API: they document the JSON in /openapi.json and /docs."""

from __future__ import annotations

from typing import Any, List, Optional, Union

from pydantic import BaseModel, Field


class PredictRequest(BaseModel):
    inputs: List[Union[List[float], List[List[float]]]] = Field(
        ..., description="A batch of images: each 784 floats in [0, 1] (row-major 28x28) or "
                         "28 rows of 28 floats; white digit on black, as in MNIST.")


class PredictResponse(BaseModel):
    mode: str
    classes: List[int] = Field(..., description="Predicted class id per image")
    logits: List[List[float]] = Field(..., description="Logits per image, one per class")


class ErrorBody(BaseModel):
    error: str = Field(..., description="Short kind of error")
    detail: Any = Field(None, description="What was received and what is accepted")


class Health(BaseModel):
    status: str
    modes: int
    providers: List[str]


class ModeInfo(BaseModel):
    name: str
    file: str
    sha256: str
    method: Optional[str] = None
    angle: Optional[float] = None
    units_kept: Optional[List[int]] = None
    units_total: Optional[List[int]] = None
    macs: int
    mac_ratio: Optional[float] = Field(None, description="MACs relative to the dense model")
    calibration_accuracy: Optional[float] = None
    test_accuracy: Optional[float] = None
    loaded: bool


class ModeList(BaseModel):
    modes: List[ModeInfo]
    dense: ModeInfo
