"""The point-of-care service: a FastAPI app over verified bundles, with a web page at ``/``.

Routes (versioned, described by the OpenAPI schema at ``/openapi.json`` and ``/docs``):

- ``POST /v1/images``: a PNG, JPEG or DICOM upload -> label, calibrated probabilities, abstention and why, the
  Grad-CAM overlay of the shipped model (PNG), latency, model name and version.
- ``POST /v1/reports``: ``{"text": ...}`` -> findings with probabilities, abstention, latency.
- ``GET /v1/models``: each bundle's metadata and model card; ``GET /healthz`` (alive), ``GET /readyz`` (models
  loaded and batchers running).

Every bundle is verified against its manifest when the app is made (:func:`load_served`), so a tampered bundle
stops the service before it listens. Concurrent requests to one model are micro-batched
(:mod:`medassist.serve.batching`). Errors answer with a message and the request id, never a stack trace; the access
log (:mod:`medassist.serve.logs`) holds no patient data.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from medassist.deploy.bundle import Bundle, BundleError, load_bundle
from medassist.deploy.bundle_model import ort_providers
from medassist.deploy.manifest import read_manifest, verified_bytes
from medassist.deploy.prediction import Prediction
from medassist.errors import MedAssistError
from medassist.serve.batching import MicroBatcher
from medassist.serve.config import ServeConfig
from medassist.serve.limits import Limits, Refused, check_text, check_upload, read_image
from medassist.serve.logs import AccessLog, access_logger
from medassist.serve.middleware import BodyLimit
from medassist.serve.overlay import overlay_png
from medassist.serve.schemas import (
    Finding,
    ImageAnswer,
    ModelInfo,
    ModelRef,
    Models,
    Problem,
    ReportAnswer,
    ReportRequest,
)

MODEL_CARD_FILE = "model_card.md"
NOT_A_DEVICE = (
    "Research software, not a medical device: it has not been cleared for clinical use, and every answer needs a "
    "clinician's judgement."
)
CONFIG_ENV = "MEDASSIST_SERVE_CONFIG"
STATIC = Path(str(resources.files("medassist.serve") / "static"))


# -- models, each behind its micro-batcher ------------------------------------------------------------------------


@dataclass
class Served:
    """One verified bundle with its id, version, model card and batcher."""

    id: str
    bundle: Bundle
    version: str
    card: str | None
    batcher: MicroBatcher | None = field(default=None, repr=False)

    @property
    def ref(self) -> ModelRef:
        return ModelRef(id=self.id, name=self.bundle.meta["name"], version=self.version)

    def info(self) -> ModelInfo:
        b = self.bundle
        return ModelInfo(
            id=self.id,
            name=b.meta["name"],
            kind=b.kind,
            task=b.task,
            labels=b.labels,
            version=self.version,
            created=b.meta.get("info", {}).get("created"),
            metrics=b.meta.get("metrics", {}),
            threshold=b.threshold,
            temperature=b.temperature,
            abstain=b.meta.get("abstain"),
            overlay=b.cam_output is not None,
            model_card=self.card,
        )


def _bundle_id(path: Path) -> str:
    """A deploy run's bundle is the folder ``bundle`` of the run: it is known by the run's name."""
    path = path.resolve()
    return path.parent.name if path.name == "bundle" else path.name


def load_served(paths: Sequence[str | os.PathLike[str]], *, threads: int = 0, provider: str = "cpu") -> list[Served]:
    """Verify and open every bundle; the first problem raises :class:`BundleError` naming the bundle and file."""
    if not paths:
        raise MedAssistError("give at least one bundle folder to serve: medassist serve runs/deploy-.../bundle")
    served: list[Served] = []
    for path in map(Path, paths):
        bundle = load_bundle(
            path, threads=threads, spin=False, provider=provider
        )  # waiting threads leave the CPUs to requests
        files = read_manifest(path)
        version = files[bundle.meta["model_file"]]["sha256"][:12]
        card = None
        if MODEL_CARD_FILE in files:  # verified as every other file of the bundle
            card = verified_bytes(path, MODEL_CARD_FILE, files[MODEL_CARD_FILE]).decode("utf-8", errors="replace")
        model_id = _bundle_id(path)
        if any(s.id == model_id for s in served):
            raise MedAssistError(
                f"two bundles would both be known as {model_id!r} ({path}); serve bundles from folders with "
                "different names"
            )
        served.append(Served(model_id, bundle, version, card))
    return served


def _run_images(bundle: Bundle) -> Any:
    def run(images: Sequence[np.ndarray]) -> list[tuple[Prediction, str | None, int]]:
        preds = bundle.predict_images(np.stack(images), batch_size=len(images), cam=bundle.cam_output is not None)
        n = len(images)
        pairs = zip(preds, images, strict=True)
        return [(p, overlay_png(x, p.cam) if p.cam is not None else None, n) for p, x in pairs]

    return run


def _run_texts(bundle: Bundle) -> Any:
    def run(texts: Sequence[str]) -> list[tuple[Prediction, None, int]]:
        return [(p, None, len(texts)) for p in bundle.predict_texts(list(texts), batch_size=len(texts))]

    return run


async def _warm_up(s: Served, limits: Limits) -> None:
    """One answer through the whole path (decoding, model, overlay), so that lazy imports and ONNX Runtime's first
    run happen before the service reports ready."""
    from PIL import Image

    if s.bundle.kind == "image":
        buf = io.BytesIO()
        Image.fromarray(np.zeros((s.bundle.image_size,) * 2, dtype=np.uint8)).save(buf, format="PNG")
        data = buf.getvalue()
        await s.batcher.submit(read_image(data, check_upload(data, limits), s.bundle))
    else:
        await s.batcher.submit("warm-up")


# -- the app -----------------------------------------------------------------------------------------------------


def _request_id(request: Request) -> str | None:
    return request.scope.get("state", {}).get("request_id")


def _problem(request: Request, status: int, detail: Any) -> JSONResponse:
    return JSONResponse(
        status_code=status, content={"detail": detail, "request_id": _request_id(request)}, headers=None
    )


def create_app(served: list[Served], cfg: ServeConfig | None = None) -> FastAPI:
    """The FastAPI app over ``served`` (from :func:`load_served`)."""
    cfg = cfg or ServeConfig()
    limits = Limits(
        max_upload_bytes=int(cfg.max_upload_mb * 1024 * 1024),
        max_pixels=cfg.max_pixels,
        max_text_chars=cfg.max_text_chars,
    )
    logger = access_logger()
    by_kind = {k: [s for s in served if s.bundle.kind == k] for k in ("image", "text")}

    for s in served:
        run = _run_images(s.bundle) if s.bundle.kind == "image" else _run_texts(s.bundle)
        s.batcher = MicroBatcher(run, max_batch=cfg.max_batch, max_wait_ms=cfg.max_wait_ms, name=s.id)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> Any:
        for s in served:
            await s.batcher.start()
            await _warm_up(s, limits)  # the first answer is not slower than the others; /readyz means ready
        try:
            yield
        finally:
            for s in served:
                await s.batcher.stop()

    # Room for the multipart envelope around the largest file, and for a JSON report of the longest text (a
    # character is at most 12 bytes as a JSON escape); each route then checks its own limit exactly.
    body_cap = max(limits.max_upload_bytes, 12 * limits.max_text_chars) + 64 * 1024
    app = FastAPI(
        title="medassist point-of-care assistant",
        version="1",
        description=f"Chest X-ray and radiology-report models from verified medassist bundles. {NOT_A_DEVICE}",
        lifespan=lifespan,
    )
    too_large = (
        f"the request body is larger than the {body_cap:,} bytes accepted (files: at most "
        f"{limits.max_upload_bytes:,} bytes; reports: at most {limits.max_text_chars:,} characters)"
    )
    app.add_middleware(BodyLimit, max_bytes=body_cap, message=too_large)
    app.add_middleware(AccessLog)  # the outermost: it sees every answer, the body limit's too

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> JSONResponse:
        return _problem(request, exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Where and what, never the input: a report or a file must not be echoed back.
        detail = [{"loc": list(e.get("loc", [])), "msg": e.get("msg", "invalid")} for e in exc.errors()]
        return _problem(request, 422, detail)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _problem(request, exc.status_code, exc.detail)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        # The type only: an exception's message could quote an input.
        logger.error("error", extra={"fields": {"request_id": _request_id(request), "error": type(exc).__name__}})
        return _problem(request, 500, "internal error; the request id names it in the service's log")

    def pick(kind: str, model: str | None) -> Served:
        candidates = by_kind[kind]
        if not candidates:
            raise Refused(404, f"this service has no {kind} model; it serves {', '.join(s.id for s in served)}")
        if model is None:
            return candidates[0]
        for s in candidates:
            if s.id == model:
                return s
        known = ", ".join(s.id for s in candidates)
        raise Refused(404, f"no {kind} model with id {model[:80]!r}; the {kind} models are: {known}")

    async def answer(s: Served, item: Any) -> tuple[Prediction, str | None, int]:
        assert s.batcher is not None
        try:
            return await s.batcher.submit(item)
        except BundleError:
            raise Refused(500, "the model failed to run on this input; the request id names it in the log") from None

    problems = {413: {"model": Problem}, 415: {"model": Problem}, 422: {"model": Problem}, 404: {"model": Problem}}

    @app.post("/v1/images", response_model=ImageAnswer, responses=problems, tags=["predict"])
    async def predict_image(
        request: Request,
        file: Annotated[UploadFile, File(description="a PNG, JPEG or DICOM image (at most the upload limit)")],
        model: Annotated[str | None, Form(description="an image model's id from /v1/models")] = None,
    ) -> ImageAnswer:
        """Classify one chest X-ray, with calibrated probabilities, abstention and the Grad-CAM overlay."""
        start = time.perf_counter()
        s = pick("image", model)
        data = await file.read(limits.max_upload_bytes + 1)
        kind = check_upload(data, limits)
        image = read_image(data, kind, s.bundle)
        pred, overlay, n = await answer(s, image)
        return ImageAnswer(
            request_id=_request_id(request) or "",
            model=s.ref,
            label=str(pred.label),
            probabilities=dict(pred.ranked()),
            confidence=pred.confidence,
            abstained=pred.abstained,
            reason=pred.reason,
            overlay_png=overlay,
            latency_ms=(time.perf_counter() - start) * 1000.0,
            model_latency_ms=pred.latency_ms,
            batch_size=n,
        )

    @app.post("/v1/reports", response_model=ReportAnswer, responses=problems, tags=["predict"])
    async def predict_report(request: Request, body: ReportRequest) -> ReportAnswer:
        """Find the findings of one radiology report, with calibrated probabilities and abstention."""
        start = time.perf_counter()
        s = pick("text", body.model)
        text = check_text(body.text, limits)
        pred, _, n = await answer(s, text)
        present = set(pred.label) if isinstance(pred.label, list) else {pred.label}
        return ReportAnswer(
            request_id=_request_id(request) or "",
            model=s.ref,
            task=s.bundle.task,
            findings=[Finding(label=k, probability=v, present=k in present) for k, v in pred.ranked()],
            label=pred.label,
            confidence=pred.confidence,
            abstained=pred.abstained,
            reason=pred.reason,
            latency_ms=(time.perf_counter() - start) * 1000.0,
            model_latency_ms=pred.latency_ms,
            batch_size=n,
        )

    @app.get("/v1/models", response_model=Models, tags=["models"])
    async def models() -> Models:
        """Every served bundle's metadata and model card."""
        return Models(models=[s.info() for s in served], notice=NOT_A_DEVICE)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"model": Problem}})
    async def readyz(request: Request) -> Any:
        """Every model is loaded and its batcher is running."""
        if all(s.batcher is not None and s.batcher.running for s in served):
            return {"status": "ready", "models": [s.id for s in served]}
        return _problem(request, 503, "not ready: the models are still starting")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def app_from_env() -> FastAPI:
    """The app of one uvicorn worker, from the configuration the ``serve`` command put in ``MEDASSIST_SERVE_CONFIG``."""
    from medassist.config import from_dict

    spec = json.loads(os.environ[CONFIG_ENV])
    cfg = from_dict(ServeConfig, spec["config"])
    return create_app(load_served(spec["bundles"], threads=worker_threads(cfg), provider=cfg.provider), cfg)


def worker_threads(cfg: ServeConfig) -> int:
    """ONNX Runtime threads per model in each worker: the given number, or the CPUs shared among the workers."""
    return cfg.threads or max(1, (os.cpu_count() or 1) // max(1, cfg.workers))


def serve(bundles: Sequence[str], cfg: ServeConfig) -> None:
    """Verify every bundle (a problem stops here, before anything listens), then run uvicorn."""
    import uvicorn

    if cfg.workers < 1:
        raise MedAssistError(f"workers must be at least 1, got {cfg.workers}")
    if cfg.max_batch < 1 or cfg.max_wait_ms < 0:
        raise MedAssistError(f"max_batch must be >= 1 and max_wait_ms >= 0, got {cfg.max_batch}, {cfg.max_wait_ms}")
    ort_providers(cfg.provider)  # a provider this machine lacks is refused before any bundle is read
    served = load_served(bundles, threads=worker_threads(cfg), provider=cfg.provider)
    common = {"host": cfg.host, "port": cfg.port, "log_level": cfg.log_level, "access_log": False}
    if cfg.workers == 1:
        uvicorn.run(create_app(served, cfg), **common)
        return
    from medassist.config import to_dict

    os.environ[CONFIG_ENV] = json.dumps({"bundles": [str(Path(b).resolve()) for b in bundles], "config": to_dict(cfg)})
    uvicorn.run("medassist.serve.app:app_from_env", factory=True, workers=cfg.workers, **common)
