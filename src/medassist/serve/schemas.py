"""What the service's routes answer and accept: the pydantic models its OpenAPI schema is generated from."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ModelRef(BaseModel):
    id: str = Field(description="the id to select this model with (the 'model' field of a request)")
    name: str
    version: str = Field(description="the first 12 hex digits of the model file's SHA-256")


class ImageAnswer(BaseModel):
    request_id: str
    model: ModelRef
    label: str = Field(description="the most probable class (shown even when the model abstains)")
    probabilities: dict[str, float] = Field(description="calibrated (temperature-scaled), most probable first")
    confidence: float
    abstained: bool = Field(description="true: the confidence is below the abstention threshold chosen on validation")
    reason: str = Field(description="why it abstained; empty when it did not")
    overlay_png: str | None = Field(
        description="data: URL of a PNG: the Grad-CAM heatmap of the predicted class over the image; null when the "
        "model has no class-activation output"
    )
    latency_ms: float = Field(description="time in the service, from the upload read to the answer")
    model_latency_ms: float = Field(description="time of the model call (shared by a micro-batch)")
    batch_size: int = Field(description="requests answered by the same model call")


class Finding(BaseModel):
    label: str
    probability: float
    present: bool


class ReportAnswer(BaseModel):
    request_id: str
    model: ModelRef
    task: str
    findings: list[Finding] = Field(description="every label, most probable first")
    label: str | list[str] = Field(description="multi-label: the findings present; multi-class: the class")
    confidence: float
    abstained: bool
    reason: str
    latency_ms: float
    model_latency_ms: float
    batch_size: int


class ReportRequest(BaseModel):
    text: str = Field(description="the report text (never logged)")
    model: str | None = Field(default=None, description="a text model's id from /v1/models; default: the first")


class ModelInfo(BaseModel):
    id: str
    name: str
    kind: str
    task: str
    labels: list[str]
    version: str
    created: str | None
    metrics: dict[str, Any]
    threshold: float | list[float]
    temperature: float
    abstain: dict[str, Any] | None
    overlay: bool = Field(description="whether answers carry a Grad-CAM overlay")
    model_card: str | None = Field(description="the bundle's model_card.md (Markdown), if it has one")


class Models(BaseModel):
    models: list[ModelInfo]
    notice: str


class Problem(BaseModel):
    detail: str | list[dict[str, Any]]
    request_id: str | None = None
