"""The point-of-care service: a FastAPI app over verified bundles, with a web page at ``/``.

Routes (versioned, described by the OpenAPI schema at ``/openapi.json`` and ``/docs``):

- ``POST /v1/images``: a PNG, JPEG or DICOM upload -> label, calibrated probabilities, abstention and why, the
  Grad-CAM overlay of the shipped model (PNG), latency, model name and version.
- ``POST /v1/reports``: ``{"text": ...}`` -> findings with probabilities, abstention, latency.
- ``GET /v1/models``: each model version's metadata and model card (HTML); ``GET /healthz`` (alive, and whether
  keys are required), ``GET /readyz`` (every model has answered once).
- ``GET /metrics``: Prometheus' text format (:mod:`medassist.serve.metrics`).
- ``POST /v1/admin/reload``: verify a model's bundle folders again and swap in the new versions (admin key).

Callers need an API key (:mod:`medassist.serve.auth`), checked before a body is read. Every bundle is verified
against its manifest when the service starts (:func:`load_served`), so a tampered bundle stops it before it listens;
a reload that fails verification keeps the old version serving. Concurrent requests to one model are micro-batched
(:mod:`medassist.serve.batching`). Errors answer with a message and the request id, never a stack trace; the access
log (:mod:`medassist.serve.logs`) holds no patient data.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from medassist.deploy.bundle import Bundle, BundleError
from medassist.deploy.bundle_model import ort_providers
from medassist.deploy.prediction import Prediction
from medassist.errors import MedAssistError
from medassist.hospital.commands import audit_trail
from medassist.serve.auth import Gate, KeyRing, read_keys
from medassist.serve.batching import MicroBatcher
from medassist.serve.config import ServeConfig
from medassist.serve.hospital import add_dicomweb_routes, alternative, audit, source_of
from medassist.serve.limits import Limits, Refused, check_text, check_upload, read_image, read_segmentation_image
from medassist.serve.logs import AccessLog, access_logger
from medassist.serve.metrics import ServiceMetrics
from medassist.serve.middleware import BodyLimit
from medassist.serve.overlay import overlay_png, png_data_url
from medassist.serve.schemas import (
    DetectionAnswer,
    Finding,
    ImageAnswer,
    Models,
    Problem,
    Reloaded,
    ReloadRequest,
    ReportAnswer,
    ReportRequest,
    SegmentationAnswer,
)
from medassist.serve.served import Registry, Served, load_served, scrub
from medassist.utils.cores import usable_cores

NOT_A_DEVICE = (
    "Research software, not a medical device: it has not been cleared for clinical use, and every answer needs a "
    "clinician's judgement."
)
CONFIG_ENV = "MEDASSIST_SERVE_CONFIG"
STATIC = Path(str(resources.files("medassist.serve") / "static"))


# -- models, each behind its micro-batcher ------------------------------------------------------------------------


def _run_images(bundle: Bundle) -> Any:
    def run(images: Sequence[np.ndarray]) -> list[tuple[Prediction, str | None, int]]:
        preds = bundle.predict_images(np.stack(images), batch_size=len(images), cam=bundle.cam_output is not None)
        n = len(images)
        pairs = zip(preds, images, strict=True)
        return [(p, overlay_png(x, p.cam) if p.cam is not None else None, n) for p, x in pairs]

    return run


def _run_segmentations(bundle: Bundle) -> Any:
    def run(items: Sequence[tuple[np.ndarray, Any]]) -> list[tuple[Any, str, int]]:
        from medassist.deploy.segmentation import overlay_outline_png

        out = []
        for image, spacing in items:  # images keep their own sizes: one model call each
            seg = bundle.segment_image(image, spacing=spacing)
            out.append((seg, png_data_url(overlay_outline_png(image, seg.mask)), len(items)))
        return out

    return run


def _run_detections(bundle: Bundle) -> Any:
    def run(items: Sequence[tuple[np.ndarray, Any]]) -> list[tuple[Any, str, int]]:
        from medassist.deploy.detection import boxes_png

        out = []
        for image, _ in items:  # images keep their own sizes: one model call each
            found = bundle.detect_image(image)
            out.append((found, png_data_url(boxes_png(image, found)), len(items)))
        return out

    return run


def _run_texts(bundle: Bundle) -> Any:
    def run(texts: Sequence[str]) -> list[tuple[Prediction, None, int]]:
        return [(p, None, len(texts)) for p in bundle.predict_texts(list(texts), batch_size=len(texts))]

    return run


# -- the app -----------------------------------------------------------------------------------------------------


def _request_id(request: Request) -> str | None:
    return request.scope.get("state", {}).get("request_id")


def _problem(request: Request, status: int, detail: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail, "request_id": _request_id(request)})


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def parse_modalities(spec: str) -> dict[str, tuple[str, ...]]:
    """``ID=MOD[,MOD];ID=MOD`` -> {id: modalities} (the STOW-RS route's model per modality)."""
    out: dict[str, tuple[str, ...]] = {}
    for item in filter(None, (x.strip() for x in spec.split(";"))):
        name, sep, mods = item.partition("=")
        if not sep or not name.strip() or not mods.strip():
            raise MedAssistError(f"--modalities {item!r}: give ID=MODALITY[,MODALITY], e.g. xray=CR,DX")
        out[name.strip()] = tuple(m.strip().upper() for m in mods.split(",") if m.strip())
    return out


def key_ring(cfg: ServeConfig) -> KeyRing | None:
    """The keys the service requires, or None (no keys): refused off 127.0.0.1 unless ``no_auth`` says so."""
    if cfg.api_keys and cfg.no_auth:
        raise MedAssistError("give either --api-keys or --no-auth, not both")
    if cfg.api_keys:
        return KeyRing(read_keys(cfg.api_keys))
    if cfg.host not in LOCAL_HOSTS and not cfg.no_auth:
        raise MedAssistError(
            f"the service would listen on {cfg.host}, beyond this machine, without API keys; make a key file with "
            "`medassist serve keys add NAME --api-keys keys.txt` and pass --api-keys keys.txt (or --no-auth to "
            "serve anyone who can reach the port)"
        )
    return None


PATIENT_ROUTES = ("/v1/images", "/v1/segmentations", "/v1/detections", "/v1/reports")
PROBLEMS: dict[int | str, dict[str, Any]] = {code: {"model": Problem} for code in (401, 404, 413, 415, 422, 429)}
"""The error answers every route may give, in the OpenAPI schema."""


class _Service:
    """What the routes of one app share: the served models (their registry and micro-batchers), the limits, the
    metrics, the settings and the access log."""

    def __init__(self, served: list[Served], cfg: ServeConfig, ring: KeyRing | None) -> None:
        self.cfg = cfg
        self.limits = Limits(
            max_upload_bytes=int(cfg.max_upload_mb * 1024 * 1024),
            max_pixels=cfg.max_pixels,
            max_text_chars=cfg.max_text_chars,
        )
        self.logger = access_logger()
        self.metrics = ServiceMetrics()
        self.registry = Registry(served, self._batcher, self.limits)
        self.modalities = parse_modalities(cfg.modalities)
        self.audit = audit_trail(cfg.audit_log or None, cfg.audit_key_file or None)
        self._identities: dict[tuple[str, str], Any] = {}
        self._store: Any = None  # the --dicomweb-store PACS's client, made at its first use
        # api-key: every caller needs a key; local: no keys, listening on this machine only; none: no keys by --no-auth.
        self.auth = "api-key" if ring is not None else ("none" if cfg.no_auth else "local")
        if ring is None and cfg.no_auth:
            self.logger.warning("no-auth", extra={"fields": {"warning": "serving without API keys (--no-auth)"}})
        self.count_models()

    def _batcher(self, s: Served) -> MicroBatcher:
        runners = {
            "image": _run_images,
            "text": _run_texts,
            "segmentation": _run_segmentations,
            "detection": _run_detections,
        }
        run = runners[s.bundle.kind](s.bundle)
        return MicroBatcher(run, max_batch=self.cfg.max_batch, max_wait_ms=self.cfg.max_wait_ms, name=s.id)

    def identity(self, s: Served) -> Any:
        """The model identity DICOM and FHIR answers name (its full SHA-256 read once from the manifest)."""
        from medassist.hospital.dicom_out import ModelIdentity

        key = (s.id, s.version)
        if key not in self._identities:
            self._identities[key] = ModelIdentity.of(s.bundle)
        return self._identities[key]

    def store_results(self, answered: Any) -> list[str | None]:
        """Store an instance's result objects in the ``--dicomweb-store`` PACS (retried); their retrieve URLs."""
        url = self.cfg.dicomweb_store
        if not url:
            return [None] * len(answered.objects)
        from medassist.hospital.pacs import client, credentials, with_retries

        if self._store is None:
            self._store = client(url, credentials(self.cfg.dicomweb_credentials or None))
        with_retries(
            lambda: self._store.store_instances(answered.objects, study_instance_uid=answered.study_uid),
            "a STOW-RS store of the results",
            url,
            tries=3,
        )
        root = url.rstrip("/")
        return [
            f"{root}/studies/{answered.study_uid}/series/{o.SeriesInstanceUID}/instances/{o.SOPInstanceUID}"
            for o in answered.objects
        ]

    def count_models(self) -> None:
        self.metrics.loaded.set(len(self.registry.served))
        for s in self.registry.served:
            self.metrics.verified.labels(s.id, s.version).set(1)

    @asynccontextmanager
    async def lifespan(self, _app: FastAPI) -> Any:
        await self.registry.start_all()  # every model answers once before the service says it is ready
        try:
            yield
        finally:
            await self.registry.stop_all()

    def pick(self, request: Request, kind: str, model: str | None, version: str | None) -> Served:
        """The served model version a request asks for (the kind's first model and its default version)."""
        candidates = self.registry.of_kind(kind)
        if not candidates:
            ids = ", ".join(dict.fromkeys(s.id for s in self.registry.served))
            raise Refused(404, f"this service has no {kind} model; it serves {', '.join(ids)}")
        model = model or candidates[0].id
        versions = [s for s in candidates if s.id == model]
        if not versions:
            known = ", ".join(dict.fromkeys(s.id for s in candidates))
            raise Refused(404, f"no {kind} model with id {model[:80]!r}; the {kind} models are: {known}")
        chosen = versions[0] if version is None else next((s for s in versions if s.version == version), None)
        if chosen is None:
            known = ", ".join(s.version for s in versions)
            raise Refused(404, f"model {model!r} has no version {version[:80]!r}; its versions are: {known}")
        request.state.model = chosen.id  # for the access log and the request metrics
        return chosen

    async def answer(self, s: Served, item: Any) -> tuple[Any, str | None, int]:
        """The model's answer to one input, through its micro-batcher; counted in the metrics."""
        assert s.batcher is not None
        try:
            pred, overlay, n = await s.batcher.submit(item)
        except BundleError:
            raise Refused(500, "the model failed to run on this input; the request id names it in the log") from None
        if isinstance(pred, Prediction):
            self.metrics.prediction(s.id, pred.referred, pred.abstained, n)
        else:
            self.metrics.prediction(s.id, [], False, n)
        return pred, overlay, n


def create_app(served: list[Served], cfg: ServeConfig | None = None, *, ring: KeyRing | None = None) -> FastAPI:
    """The FastAPI app over ``served`` (from :func:`load_served`); ``ring`` holds the API keys (None: no keys)."""
    svc = _Service(served, cfg or ServeConfig(), ring)
    app = FastAPI(
        title="medassist point-of-care assistant",
        version="1",
        description=f"Chest X-ray and radiology-report models from verified medassist bundles. {NOT_A_DEVICE}",
        lifespan=svc.lifespan,
    )
    _add_middleware(app, svc, ring)
    _add_error_handlers(app, svc)
    _add_predict_routes(app, svc)
    _add_service_routes(app, svc)
    add_dicomweb_routes(app, svc)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.state.registry = svc.registry
    app.state.metrics = svc.metrics
    return app


def _add_middleware(app: FastAPI, svc: _Service, ring: KeyRing | None) -> None:
    """The body limit, the keys and rate limit, and the access log (outermost, so that it sees every answer)."""
    limits = svc.limits
    # Room for the multipart envelope around the largest file, and for a JSON report of the longest text (a
    # character is at most 12 bytes as a JSON escape); each route then checks its own limit exactly.
    body_cap = max(limits.max_upload_bytes, 12 * limits.max_text_chars) + 64 * 1024
    too_large = (
        f"the request body is larger than the {body_cap:,} bytes accepted (files: at most "
        f"{limits.max_upload_bytes:,} bytes; reports: at most {limits.max_text_chars:,} characters)"
    )
    app.add_middleware(BodyLimit, max_bytes=body_cap, message=too_large)
    # Keys and the rate limit before anything reads a body; the access log outermost, so it sees every answer.
    app.add_middleware(Gate, ring=ring, rate_limit=svc.cfg.rate_limit, metrics_public=svc.cfg.metrics_public)
    app.add_middleware(AccessLog, metrics=svc.metrics)


def _add_error_handlers(app: FastAPI, svc: _Service) -> None:
    """Every error as a problem answer that names what went wrong, never the input."""

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> JSONResponse:
        if request.url.path.startswith(PATIENT_ROUTES):  # a refused upload still touched patient data
            await audit(svc, request, None, exc.status, None, None)
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
        svc.logger.error("error", extra={"fields": {"request_id": _request_id(request), "error": type(exc).__name__}})
        return _problem(request, 500, "internal error; the request id names it in the service's log")


def _add_predict_routes(app: FastAPI, svc: _Service) -> None:
    """The predictions: images, segmentations and reports."""

    @app.post("/v1/images", response_model=ImageAnswer, responses=PROBLEMS, tags=["predict"])
    async def predict_image(
        request: Request,
        file: Annotated[UploadFile, File(description="a PNG, JPEG or DICOM image (at most the upload limit)")],
        model: Annotated[str | None, Form(description="an image model's id from /v1/models")] = None,
        version: Annotated[str | None, Form(description="a version of that model; default: its default")] = None,
    ) -> ImageAnswer:
        """Classify one chest X-ray, with calibrated probabilities, abstention and the Grad-CAM overlay."""
        start = time.perf_counter()
        s = svc.pick(request, "image", model, version)
        data = await file.read(svc.limits.max_upload_bytes + 1)
        kind = check_upload(data, svc.limits)
        source = source_of(svc, request, data, kind)
        image = read_image(data, kind, s.bundle)
        pred, overlay, n = await svc.answer(s, image)
        await audit(svc, request, s, 200, pred, source)
        if (other := alternative(svc, request, s, pred, source)) is not None:
            return other
        return ImageAnswer(
            request_id=_request_id(request) or "",
            model=s.ref,
            label=str(pred.label),
            probabilities=dict(pred.ranked()),
            confidence=pred.confidence,
            abstained=pred.abstained,
            reason=pred.reason,
            referred=pred.referred,
            overlay_png=overlay,
            latency_ms=(time.perf_counter() - start) * 1000.0,
            model_latency_ms=pred.latency_ms,
            batch_size=n,
        )

    @app.post("/v1/segmentations", response_model=SegmentationAnswer, responses=PROBLEMS, tags=["predict"])
    async def segment_image(
        request: Request,
        file: Annotated[UploadFile, File(description="a PNG, JPEG or DICOM image (at most the upload limit)")],
        model: Annotated[str | None, Form(description="a segmentation model's id from /v1/models")] = None,
        version: Annotated[str | None, Form(description="a version of that model; default: its default")] = None,
    ) -> SegmentationAnswer:
        """Outline the lesion or organ in one image: the mask, an overlay and the area (mm² from a DICOM)."""
        start = time.perf_counter()
        s = svc.pick(request, "segmentation", model, version)
        data = await file.read(svc.limits.max_upload_bytes + 1)
        kind = check_upload(data, svc.limits)
        source = source_of(svc, request, data, kind)
        item = read_segmentation_image(data, kind, s.bundle)
        seg, overlay, _ = await svc.answer(s, item)
        await audit(svc, request, s, 200, seg, source)
        if (other := alternative(svc, request, s, seg, source)) is not None:
            return other
        return SegmentationAnswer(
            request_id=_request_id(request) or "",
            model=s.ref,
            labels=seg.labels,
            area_pixels=seg.area_pixels,
            area_mm2=seg.area_mm2,
            mask_png=png_data_url(seg.mask_png()),
            overlay_png=overlay,
            latency_ms=(time.perf_counter() - start) * 1000.0,
            model_latency_ms=seg.latency_ms,
        )

    @app.post("/v1/detections", response_model=DetectionAnswer, responses=PROBLEMS, tags=["predict"])
    async def detect_image(
        request: Request,
        file: Annotated[UploadFile, File(description="a PNG, JPEG or DICOM image (at most the upload limit)")],
        model: Annotated[str | None, Form(description="a detection model's id from /v1/models")] = None,
        version: Annotated[str | None, Form(description="a version of that model; default: its default")] = None,
    ) -> DetectionAnswer:
        """Find and count the objects in one image (cells, polyps, nodules): boxes, labels, scores, counts."""
        start = time.perf_counter()
        s = svc.pick(request, "detection", model, version)
        data = await file.read(svc.limits.max_upload_bytes + 1)
        kind = check_upload(data, svc.limits)
        source = source_of(svc, request, data, kind)
        item = read_segmentation_image(data, kind, s.bundle)  # at its own size, with the model's channels
        found, drawn, _ = await svc.answer(s, item)
        await audit(svc, request, s, 200, found, source)
        if (other := alternative(svc, request, s, found, source)) is not None:
            return other
        answer = found.as_dict()
        return DetectionAnswer(
            request_id=_request_id(request) or "",
            model=s.ref,
            boxes=answer["boxes"],
            labels=answer["labels"],
            scores=answer["scores"],
            counts=answer["counts"],
            thresholds=answer["thresholds"],
            boxes_png=drawn,
            latency_ms=(time.perf_counter() - start) * 1000.0,
            model_latency_ms=found.latency_ms,
        )

    @app.post("/v1/reports", response_model=ReportAnswer, responses=PROBLEMS, tags=["predict"])
    async def predict_report(request: Request, body: ReportRequest) -> ReportAnswer:
        """Find the findings of one radiology report, each answered or referred by name."""
        start = time.perf_counter()
        s = svc.pick(request, "text", body.model, body.version)
        text = check_text(body.text, svc.limits)
        pred, _, n = await svc.answer(s, text)
        await audit(svc, request, s, 200, pred, None)
        if (other := alternative(svc, request, s, pred, None)) is not None:
            return other
        present = set(pred.label) if isinstance(pred.label, list) else {pred.label}
        unanswered = set(pred.unanswered())

        def status(k: str) -> str:
            if k in unanswered:
                return "uncertain"
            return "present" if k in present else "absent"

        return ReportAnswer(
            request_id=_request_id(request) or "",
            model=s.ref,
            task=s.bundle.task,
            findings=[
                Finding(label=k, probability=v, present=k in present, status=status(k)) for k, v in pred.ranked()
            ],
            label=pred.label,
            confidence=pred.confidence,
            abstained=pred.abstained,
            reason=pred.reason,
            latency_ms=(time.perf_counter() - start) * 1000.0,
            model_latency_ms=pred.latency_ms,
            batch_size=n,
        )


def _add_service_routes(app: FastAPI, svc: _Service) -> None:
    """The models, their reload, the metrics, health and readiness, and the page."""

    @app.get("/v1/models", response_model=Models, responses=PROBLEMS, tags=["models"])
    async def models() -> Models:
        """Every served model version's metadata and model card; the default version of each model first."""
        infos = [s.info(default=svc.registry.is_default(s)) for s in svc.registry.served]
        return Models(models=infos, notice=NOT_A_DEVICE)

    @app.post(
        "/v1/admin/reload", response_model=Reloaded, responses={409: {"model": Problem}, **PROBLEMS}, tags=["admin"]
    )
    async def reload(request: Request, body: ReloadRequest) -> Reloaded:
        """Verify a model's bundle folders again and swap in the new versions; a bundle that fails verification is
        refused (409) and the old version keeps serving."""
        if svc.cfg.workers > 1:
            raise Refused(409, "reload needs a single worker (--workers 1); with several, restart the service")
        if not any(s.id == body.model for s in svc.registry.served):
            raise Refused(404, f"no model with id {body.model[:80]!r}")
        request.state.model = body.model
        paths = [s.path for s in svc.registry.served]
        try:
            changes = await svc.registry.reload(body.model, threads=worker_threads(svc.cfg), provider=svc.cfg.provider)
        except (BundleError, MedAssistError) as err:
            svc.metrics.reloads.labels(body.model, "refused").inc()
            why = scrub(str(err), paths)
            raise Refused(409, f"the new bundle was refused; the old version keeps serving: {why}") from None
        svc.metrics.reloads.labels(body.model, "ok").inc()
        svc.count_models()
        return Reloaded(changes=changes)

    @app.get("/metrics", tags=["health"], responses=PROBLEMS, response_class=Response)
    async def prometheus() -> Response:
        """Requests, latencies, micro-batch sizes, abstentions and models, in Prometheus' text format."""
        return Response(svc.metrics.render(), media_type=svc.metrics.content_type)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is alive; ``auth`` says whether callers need an API key (the page asks for one)."""
        return {"status": "ok", "auth": svc.auth}

    @app.get("/readyz", tags=["health"], responses={503: {"model": Problem}})
    async def readyz(request: Request) -> Any:
        """Every model has answered once and its batcher is running."""
        if all(s.ready and s.batcher is not None and s.batcher.running for s in svc.registry.served):
            return {"status": "ready", "models": [s.id for s in svc.registry.served]}
        return _problem(request, 503, "not ready: the models are still starting")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")


def app_from_env() -> FastAPI:
    """The app of one uvicorn worker, from the configuration the ``serve`` command put in ``MEDASSIST_SERVE_CONFIG``."""
    from medassist.config import from_dict

    spec = json.loads(os.environ[CONFIG_ENV])
    cfg = from_dict(ServeConfig, spec["config"])
    served = load_served(spec["bundles"], threads=worker_threads(cfg), provider=cfg.provider)
    return create_app(served, cfg, ring=key_ring(cfg))


def worker_threads(cfg: ServeConfig) -> int:
    """ONNX Runtime threads per model in each worker: the given number, or the CPUs shared among the workers."""
    return cfg.threads or max(1, usable_cores() // max(1, cfg.workers))


def _tls(cfg: ServeConfig) -> dict[str, str]:
    if bool(cfg.ssl_certfile) != bool(cfg.ssl_keyfile):
        raise MedAssistError("TLS needs both --ssl-certfile and --ssl-keyfile")
    for f in (cfg.ssl_certfile, cfg.ssl_keyfile):
        if f and not Path(f).is_file():
            raise MedAssistError(f"TLS file {f} does not exist")
    return {"ssl_certfile": cfg.ssl_certfile, "ssl_keyfile": cfg.ssl_keyfile} if cfg.ssl_certfile else {}


def serve(bundles: Sequence[str | Sequence[str]], cfg: ServeConfig) -> None:
    """Check the keys and TLS files, verify every bundle (a problem stops here, before anything listens), then run
    uvicorn. ``bundles``: folders (known by their name), ``NAME=FOLDER`` or (name, folder) pairs."""
    import uvicorn

    if cfg.workers < 1:
        raise MedAssistError(f"workers must be at least 1, got {cfg.workers}")
    if cfg.max_batch < 1 or cfg.max_wait_ms < 0:
        raise MedAssistError(f"max_batch must be >= 1 and max_wait_ms >= 0, got {cfg.max_batch}, {cfg.max_wait_ms}")
    if cfg.rate_limit < 0:
        raise MedAssistError(f"rate_limit must be 0 (none) or a positive number a second, got {cfg.rate_limit}")
    ring = key_ring(cfg)
    tls = _tls(cfg)
    ort_providers(cfg.provider)  # a provider this machine lacks is refused before any bundle is read
    served = load_served(bundles, threads=worker_threads(cfg), provider=cfg.provider)
    common = {"host": cfg.host, "port": cfg.port, "log_level": cfg.log_level, "access_log": False, **tls}
    if cfg.workers == 1:
        uvicorn.run(create_app(served, cfg, ring=ring), **common)
        return
    from medassist.config import to_dict

    specs = [[s.id, str(s.path.resolve())] for s in served]
    os.environ[CONFIG_ENV] = json.dumps({"bundles": specs, "config": to_dict(cfg)})
    uvicorn.run("medassist.serve.app:app_from_env", factory=True, workers=cfg.workers, **common)
