"""The service in the hospital's formats: answers as FHIR (``Accept: application/fhir+json``) or DICOM
(``Accept: application/dicom``: the SR, or SEG and SR as ``multipart/related``), DICOMweb's STOW-RS at
``POST /dicomweb/studies`` (each instance answered by the bundle of its modality, the results stored in the caller's
PACS with ``--dicomweb-store``), and the audit trail (one line per request that touched patient data).
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from medassist.errors import MedAssistError
from medassist.hospital.fhir import FHIR_JSON, diagnostic_report
from medassist.serve.limits import Refused, check_upload

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
IMAGE_KINDS = ("image", "segmentation", "detection")
# STOW-RS failure reasons (DICOM PS3.18, Table I.2-1 and PS3.4 Annex GG).
PROCESSING_FAILURE, NOT_SUPPORTED, CANNOT_UNDERSTAND = 0x0110, 0x0122, 0xC000


def wanted(request: Request) -> str:
    """The answer's format the caller asks for by ``Accept``: "fhir", "dicom" or "json" (the default)."""
    accept = request.headers.get("accept", "").lower()
    if FHIR_JSON in accept:
        return "fhir"
    if DICOM in accept and DICOM_JSON not in accept:
        return "dicom"
    return "json"


def source_of(svc: Any, request: Request, data: bytes, kind: str) -> Any:
    """The uploaded DICOM's dataset (a pydicom Dataset) when something needs it: the audit trail (its study) or a
    FHIR or DICOM answer; else None (a PNG or JPEG, or a JSON answer without an audit trail: no third read of the
    file on the hot path). A DICOM answer checks it further (:func:`checked`)."""
    if kind != "dicom" or (svc.audit is None and wanted(request) == "json"):
        return None
    return _dataset(data)


def _dataset(data: bytes) -> Any:
    import pydicom

    return pydicom.dcmread(io.BytesIO(data), force=True)


def checked(source: Any) -> Any:
    """The source as a DICOM result can reference it (UIDs, one frame), else a 422 naming what it lacks."""
    from medassist.hospital.dicom_out import check_source

    try:
        return check_source(source)
    except MedAssistError as err:
        raise Refused(422, str(err)) from None


def multipart(parts: Sequence[bytes], media_type: str = DICOM) -> Response:
    """A ``multipart/related`` answer of DICOM Part 10 files."""
    boundary = uuid.uuid4().hex
    body = io.BytesIO()
    for part in parts:
        body.write(f"--{boundary}\r\nContent-Type: {media_type}\r\n\r\n".encode())
        body.write(part)
        body.write(b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    return Response(body.getvalue(), media_type=f'multipart/related; type="{media_type}"; boundary={boundary}')


def alternative(svc: Any, request: Request, s: Any, result: Any, source: Any) -> Response | None:
    """The answer as FHIR or DICOM when the caller's ``Accept`` asks for one, else None (the route's JSON)."""
    fmt = wanted(request)
    if fmt == "json":
        return None
    from medassist.hospital.dicom_out import result_objects, to_bytes

    model = svc.identity(s)
    if fmt == "fhir":
        study = str(source.get("StudyInstanceUID", "") or "") or None if source is not None else None
        report = diagnostic_report(
            result,
            kind=s.bundle.kind,
            task=s.bundle.task,
            model_name=model.name,
            model_version=model.version,
            labels=list(s.bundle.labels),
            study_uid=study,
            validate=False,  # every branch of the builder is validated by the tests; 0.3 ms a request saved
        )
        return JSONResponse(report, media_type=FHIR_JSON)
    if s.bundle.kind not in IMAGE_KINDS:
        raise Refused(406, "a report's findings have no DICOM form; ask for application/fhir+json or JSON")
    if source is None:
        raise Refused(406, "a DICOM answer references its source instance: upload a DICOM image, or ask for JSON")
    objects = result_objects(checked(source), result, model, labels=s.bundle.labels)
    if len(objects) == 1:
        return Response(to_bytes(objects[0]), media_type=DICOM)
    return multipart([to_bytes(o) for o in objects])


def caller(request: Request) -> str:
    """Who called: the API key's name, else "local" (a service without keys)."""
    return request.scope.get("state", {}).get("key_name") or "local"


async def audit(svc: Any, request: Request, s: Any, status: int, result: Any, source: Any) -> None:
    """One audit line for a request that touched patient data (nothing when the service keeps no audit trail),
    written and fsynced off the event loop."""
    if svc.audit is None:
        return
    from medassist.hospital.instances import findings

    answered, referred = findings(result)
    await run_in_threadpool(
        svc.audit.record,
        who=caller(request),
        # The route's template (/dicomweb/studies/{study}), never the raw path, which can hold a study's UID.
        action=f"{request.method} {getattr(request.scope.get('route'), 'path', None) or request.url.path}",
        model=s.id if s is not None else None,
        version=s.version if s is not None else None,
        study_uid=str(source.get("StudyInstanceUID", "")) or None if source is not None else None,
        accession=str(source.get("AccessionNumber", "") or "") or None if source is not None else None,
        status=status,
        answered=answered,
        referred=referred,
    )


# -- STOW-RS ------------------------------------------------------------------------------------------------------


def dicom_parts(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """The parts (content type, bytes) of a ``multipart/related`` body, parsed by the standard library's MIME
    parser."""
    from email.parser import BytesParser
    from email.policy import HTTP

    if not content_type.lower().startswith("multipart/related"):
        raise Refused(
            415,
            'STOW-RS takes multipart/related; type="application/dicom" (one DICOM file per part), not '
            f"{content_type.split(';')[0] or 'a body without a content type'}",
        )
    if "boundary=" not in content_type.lower():
        raise Refused(400, "the multipart/related content type has no boundary parameter")
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise Refused(400, "the body is not a multipart/related message that matches its boundary")
    parts = [(p.get_content_type(), p.get_payload(decode=True) or b"") for p in message.iter_parts()]
    if not parts:
        raise Refused(400, "the multipart/related body holds no part; send one DICOM file per part")
    return parts


def _item(sop_class: str, sop: str, url: str | None = None, reason: int | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"00081150": {"vr": "UI", "Value": [sop_class]}, "00081155": {"vr": "UI", "Value": [sop]}}
    if url:
        item["00081190"] = {"vr": "UR", "Value": [url]}
    if reason is not None:
        item["00081197"] = {"vr": "US", "Value": [reason]}
    return item


def _pick(svc: Any, source: Any, model: str | None) -> Any:
    """The served model for an instance: the ``model`` parameter, else the one serving its modality."""
    candidates = [s for s in svc.registry.served if s.bundle.kind in IMAGE_KINDS and svc.registry.is_default(s)]
    if model:
        chosen = next((s for s in candidates if s.id == model), None)
        if chosen is None:
            raise Refused(404, f"no image, segmentation or detection model with id {model[:80]!r}")
        return chosen
    modality = str(source.get("Modality", "") or "")
    by_modality = [s for s in candidates if modality in svc.modalities.get(s.id, ())]
    if by_modality:
        return by_modality[0]
    if len(candidates) == 1 and not svc.modalities:
        return candidates[0]
    raise Refused(
        404,
        f"no model serves modality {modality or '(none)'}; pass ?model=ID or start the service with "
        "--modalities ID=MODALITY[,MODALITY]",
    )


def add_dicomweb_routes(app: FastAPI, svc: Any) -> None:
    """``POST /dicomweb/studies`` and ``POST /dicomweb/studies/{study}``: STOW-RS in, results (not the instances)
    out."""

    async def stow(request: Request, study: str | None, model: str | None) -> JSONResponse:
        from medassist.hospital.instances import answer_instance

        parts = dicom_parts(request.headers.get("content-type", ""), await request.body())
        referenced, failed, stored_any = [], [], False
        for media, data in parts:
            s = source = None
            try:
                if media != DICOM:
                    raise Refused(415, f"a part of type {media}; each part must be application/dicom")
                kind = check_upload(data, svc.limits)
                if kind != "dicom":
                    raise Refused(415, "a part that is not a DICOM file")
                source = checked(_dataset(data))
                if study and str(source.StudyInstanceUID) != study:
                    raise Refused(409, "an instance of another study than the one in the URL")
                s = _pick(svc, source, model)
                request.state.model = s.id
                answered = await run_in_threadpool(answer_instance, s.bundle, source, svc.identity(s))
                urls = await run_in_threadpool(svc.store_results, answered)
            except (Refused, MedAssistError) as err:
                status = err.status if isinstance(err, Refused) else 422
                reason = NOT_SUPPORTED if status in (404, 415) else PROCESSING_FAILURE
                if source is not None:
                    failed.append(_item(str(source.SOPClassUID), str(source.SOPInstanceUID), reason=reason))
                else:
                    failed.append(_item("", "", reason=CANNOT_UNDERSTAND))
                # The status and the error's type only: a message about an instance stays out of the log.
                svc.logger.warning("stow refused", extra={"fields": {"status": status, "error": type(err).__name__}})
                await audit(svc, request, s, status, None, source)
                continue
            stored_any = True
            for obj, url in zip(answered.objects, urls, strict=True):
                referenced.append(_item(str(obj.SOPClassUID), str(obj.SOPInstanceUID), url))
            await audit(svc, request, s, 200, answered.result, source)
        body: dict[str, Any] = {}
        if referenced:
            body["00081199"] = {"vr": "SQ", "Value": referenced}
        if failed:
            body["00081198"] = {"vr": "SQ", "Value": failed}
        status = 200 if not failed else (202 if stored_any else 409)
        return JSONResponse(body, status_code=status, media_type=DICOM_JSON)

    @app.post("/dicomweb/studies", tags=["dicomweb"], response_class=JSONResponse)
    async def stow_studies(request: Request, model: str | None = None) -> JSONResponse:
        """STOW-RS: DICOM instances in (``multipart/related; type="application/dicom"``), each answered by the
        model of its modality (or ``?model=ID``); the answer lists the result objects (SEG, SR) and the instances
        that failed. Nothing is kept; with ``--dicomweb-store`` the results go to that PACS."""
        return await stow(request, None, model)

    @app.post("/dicomweb/studies/{study}", tags=["dicomweb"], response_class=JSONResponse)
    async def stow_study(request: Request, study: str, model: str | None = None) -> JSONResponse:
        """STOW-RS into one study: as ``POST /dicomweb/studies``, every instance must belong to ``study``."""
        return await stow(request, study, model)
