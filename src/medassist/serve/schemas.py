"""What the service's routes answer and accept: the pydantic models its OpenAPI schema is generated from."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ModelRef(BaseModel):
    id: str = Field(description="the id to select this model with (the 'model' field of a request)")
    name: str = Field(description="the technical name: data set, model and shipped variant")
    version: str = Field(description="the first 12 hex digits of the model file's SHA-256 ('version' of a request)")
    title: str = Field(description="the model in a clinician's words, with its version and date")


class ImageAnswer(BaseModel):
    request_id: str
    model: ModelRef
    label: str = Field(description="the most probable class (shown even when the model abstains)")
    probabilities: dict[str, float] = Field(description="calibrated (temperature-scaled), most probable first")
    confidence: float
    abstained: bool = Field(description="true: the rule chosen on validation refers this case to a clinician")
    reason: str = Field(description="why it abstained; empty when it did not")
    referred: list[str] = Field(description="the classes left unanswered (the predicted one, when referred)")
    overlay_png: str | None = Field(
        description="data: URL of a PNG: the Grad-CAM heatmap of the predicted class over the image; null when the "
        "model has no class-activation output"
    )
    latency_ms: float = Field(description="time in the service, from the upload read to the answer")
    model_latency_ms: float = Field(description="time of the model call (shared by a micro-batch)")
    batch_size: int = Field(description="requests answered by the same model call")


class SegmentationAnswer(BaseModel):
    request_id: str
    model: ModelRef
    labels: list[str] = Field(description="the classes, index order (0 = background)")
    area_pixels: dict[str, int] = Field(description="each foreground class's area, in the uploaded image's pixels")
    area_mm2: dict[str, float] | None = Field(description="the same in mm², when a DICOM gives its pixel spacing")
    mask_png: str = Field(description="data: URL of the mask PNG at the upload's size (class k stored as k*255/(K-1))")
    overlay_png: str = Field(description="data: URL of a PNG: the upload with the predicted outline in red")
    latency_ms: float = Field(description="time in the service, from the upload read to the answer")
    model_latency_ms: float = Field(description="time of the model call")


class DetectionAnswer(BaseModel):
    request_id: str
    model: ModelRef
    boxes: list[list[float]] = Field(description="x_min, y_min, x_max, y_max of each counted box, upload pixels")
    labels: list[str] = Field(description="each box's class")
    scores: list[float] = Field(description="each box's score")
    counts: dict[str, int] = Field(description="per class, the boxes whose score reaches the class's threshold")
    thresholds: dict[str, float] = Field(description="per class, the score threshold chosen on validation")
    boxes_png: str = Field(description="data: URL of a PNG: the upload with the counted boxes drawn and labelled")
    latency_ms: float = Field(description="time in the service, from the upload read to the answer")
    model_latency_ms: float = Field(description="time of the model call and its post-processing")


class Finding(BaseModel):
    label: str
    probability: float
    present: bool = Field(description="the probability is at least the finding's decision threshold")
    status: str = Field(description="present | absent (answered) or uncertain (referred to a clinician)")


class ReportAnswer(BaseModel):
    request_id: str
    model: ModelRef
    task: str
    findings: list[Finding] = Field(description="every label, most probable first")
    label: str | list[str] = Field(description="multi-label: the findings present; multi-class: the class")
    confidence: float
    abstained: bool = Field(description="true: some findings (or the whole report) are referred to a clinician")
    reason: str = Field(description="which findings are uncertain; empty when every one is answered")
    latency_ms: float
    model_latency_ms: float
    batch_size: int


class ReportRequest(BaseModel):
    text: str = Field(description="the report text (never logged)")
    model: str | None = Field(default=None, description="a text model's id from /v1/models; default: the first")
    version: str | None = Field(default=None, description="a version of that model; default: its default version")


class ReloadRequest(BaseModel):
    model: str = Field(description="the id of the model whose bundle folders are verified and loaded again")


class Reloaded(BaseModel):
    changes: list[dict[str, str]] = Field(description="each version replaced: id, from and to")


class ModelInfo(BaseModel):
    id: str
    name: str
    title: str = Field(description="the model in a clinician's words, with its version and date")
    default: bool = Field(description="the version a request gets when it names none")
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
    model_card: str | None = Field(description="the bundle's model card as HTML, if it has one")


class Models(BaseModel):
    models: list[ModelInfo]
    notice: str


class Problem(BaseModel):
    detail: str | list[dict[str, Any]]
    request_id: str | None = None
