"""Pydantic models of the HTTP API: they document the JSON in /openapi.json and /docs."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from pydantic import BaseModel, Field


class PredictRequest(BaseModel):
    inputs: List[Any] = Field(
        ..., description="A batch of samples, each a (nested) list of numbers shaped as the "
                         "bundle's input spec (`taugate info`); e.g. for the MNIST bundles 784 "
                         "floats in [0, 1] (row-major 28x28) or 28 rows of 28 floats, white "
                         "digit on black.")


class PredictResponse(BaseModel):
    mode: str
    classes: List[int] = Field(..., description="Predicted class id per sample")
    logits: List[List[float]] = Field(..., description="Logits per sample, one per class")


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
    facts: Optional[Dict[str, Any]] = Field(
        None, description="The mode's free-form facts (a rotation mode: its angle)")
    units_kept: Optional[List[int]] = None
    units_total: Optional[List[int]] = None
    macs: int
    mac_ratio: Optional[float] = Field(None, description="MACs relative to the dense model")
    calibration_accuracy: Optional[float] = None
    test_accuracy: Optional[float] = None
    dense_test_accuracy: Optional[float] = Field(
        None, description="The dense model's accuracy on this mode's test set")
    loaded: bool


class ModeList(BaseModel):
    modes: List[ModeInfo]
    dense: ModeInfo
