"""Pydantic models of the HTTP API: they document the JSON in /openapi.json and /docs."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

from pydantic import BaseModel, Field


class PredictRequest(BaseModel):
    inputs: List[Any] = Field(
        ..., description="A batch of samples, each a (nested) list of numbers shaped as the "
                         "bundle's input spec (`taugate info`); e.g. 784 floats in [0, 1] or 28 "
                         "rows of 28 for a bundle whose input is a 28x28 image.")


class PredictResponse(BaseModel):
    mode: str
    classes: List[int] = Field(..., description="Predicted class id per sample")
    logits: List[List[float]] = Field(..., description="Logits per sample, one per class")


class ErrorBody(BaseModel):
    error: str = Field(..., description="Short kind of error")
    detail: Any = Field(None, description="What was received and what is accepted")


class Health(BaseModel):
    status: str = Field(..., description='"ok", or "degraded" when some modes cannot be served')
    modes: int
    providers: List[str]
    unavailable: dict[str, str] = Field(
        default_factory=dict, description="Modes (or dense) that cannot be served, and why")


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
    mac_ratio: Optional[float] = Field(
        None, description="dense MACs / mode MACs: how many times fewer MACs than the dense "
                          "model (2.0 = half)")
    calibration_accuracy: Optional[float] = None
    # typing.Union: pydantic evaluates annotations, and `X | Y` needs Python 3.10
    test_accuracy: Optional[Union[float, dict[str, float]]] = Field(
        None, description="A mode's accuracy on its test set; for the dense model, the "
                          "accuracy on each mode's test set (a mapping) or one number")
    dense_test_accuracy: Optional[float] = Field(
        None, description="The dense model's accuracy on this mode's test set")
    loaded: bool


class ModeList(BaseModel):
    modes: List[ModeInfo]
    dense: ModeInfo
