"""The service in the hospital's formats: FHIR answers (validated by fhir.resources) and DICOM answers on the predict
routes, STOW-RS in at /dicomweb/studies (results stored into a real Orthanc with --dicomweb-store), every refusal
named with its status, keys required, and an audit trail that verifies and holds no identifier in clear."""

from __future__ import annotations

import io
import json
import logging
import uuid

import numpy as np
import pytest
from fastapi.testclient import TestClient
from orthanc import orthanc
from serve_bundles import make_image_bundle, make_segmentation_bundle, make_text_bundle, png_bytes

from medassist.hospital.audit import load_key, new_key, verify
from medassist.hospital.dicom_in import image_instance
from medassist.hospital.dicom_out import to_bytes
from medassist.serve import ServeConfig, create_app, load_served
from medassist.serve.auth import KeyRing, add_key, read_keys
from medassist.serve.logs import ACCESS_LOGGER, JsonFormatter

FHIR = "application/fhir+json"
LOG = io.StringIO()


def uid() -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid())


def instance(modality: str, shape=(28, 28), study: str | None = None, seed: int = 0):
    pixels = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    return image_instance(
        pixels,
        patient_id="MRN-4711",
        patient_name="Doe^Jane",
        study_uid=study or uid(),
        series_uid=uid(),
        sop_uid=uid(),
        modality=modality,
        accession="ACC-4711",
    )


def multipart(datasets, boundary: str | None = None) -> tuple[bytes, dict[str, str]]:
    b = boundary or uuid.uuid4().hex
    body = b"".join(
        f"--{b}\r\nContent-Type: application/dicom\r\n\r\n".encode() + to_bytes(d) + b"\r\n" for d in datasets
    )
    return body + f"--{b}--\r\n".encode(), {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={b}'
    }


def parts(response) -> list[bytes]:
    from email.parser import BytesParser
    from email.policy import HTTP

    head = b"Content-Type: " + response.headers["content-type"].encode() + b"\r\n\r\n"
    return [
        p.get_payload(decode=True) for p in BytesParser(policy=HTTP).parsebytes(head + response.content).iter_parts()
    ]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-hospital")
    key = new_key(root / "audit.key")
    return {
        "xray": make_image_bundle(root / "xray"),
        "lesions": make_segmentation_bundle(root / "lesions"),
        "reports": make_text_bundle(root / "reports"),
        "key": key,
        "log": root / "audit.log",
        "root": root,
    }


@pytest.fixture(scope="module")
def client(setup):
    handler = logging.StreamHandler(LOG)
    handler.setFormatter(JsonFormatter())
    for name in (ACCESS_LOGGER, ""):
        logging.getLogger(name).addHandler(handler)
    served = load_served([setup["xray"], setup["lesions"], setup["reports"]])
    cfg = ServeConfig(
        audit_log=str(setup["log"]),
        audit_key_file=str(setup["key"]),
        modalities="xray=CR,DX;lesions=OT",
        max_upload_mb=1.0,
    )
    with TestClient(create_app(served, cfg), raise_server_exceptions=False) as c:
        yield c
    for name in (ACCESS_LOGGER, ""):
        logging.getLogger(name).removeHandler(handler)


def validate(report: dict) -> None:
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport

    DiagnosticReport.model_validate(report)


def test_fhir_answers_on_every_predict_route(client) -> None:
    ds = instance("CR")
    r = client.post("/v1/images", files={"file": ("x.dcm", to_bytes(ds))}, headers={"Accept": FHIR})
    assert r.status_code == 200 and r.headers["content-type"].startswith(FHIR)
    report = r.json()
    validate(report)
    assert report["imagingStudy"][0]["identifier"]["value"] == f"urn:oid:{ds.StudyInstanceUID}"
    observations = [c for c in report["contained"] if c["resourceType"] == "Observation"]
    assert [o["code"]["text"] for o in observations] == ["normal", "pneumonia"]
    json_answer = client.post("/v1/images", files={"file": ("x.dcm", to_bytes(ds))}).json()
    for o in observations:  # the same probabilities as the JSON answer
        assert o["valueQuantity"]["value"] == pytest.approx(json_answer["probabilities"][o["code"]["text"]])

    png = png_bytes(np.zeros((28, 28), np.uint8))
    r = client.post("/v1/images", files={"file": ("x.png", png)}, headers={"Accept": FHIR})
    assert r.status_code == 200 and "imagingStudy" not in r.json()  # no DICOM, no study to reference
    validate(r.json())

    r = client.post(
        "/v1/segmentations", files={"file": ("s.dcm", to_bytes(instance("OT", (48, 40))))}, headers={"Accept": FHIR}
    )
    assert r.status_code == 200
    validate(r.json())

    text = "Patient Jane Doe, MRN 4711: small left pleural effusion."
    r = client.post("/v1/reports", json={"text": text}, headers={"Accept": FHIR})
    assert r.status_code == 200
    validate(r.json())
    assert "Jane" not in r.text and "4711" not in r.text


def test_dicom_answers_sr_or_seg_and_sr(client) -> None:
    import highdicom as hd
    import pydicom

    ds = instance("CR")
    r = client.post("/v1/images", files={"file": ("x.dcm", to_bytes(ds))}, headers={"Accept": "application/dicom"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/dicom"
    sr = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(io.BytesIO(r.content)))
    assert sr.StudyInstanceUID == ds.StudyInstanceUID and sr.Modality == "SR"

    seg_source = instance("OT", (48, 40))
    r = client.post(
        "/v1/segmentations", files={"file": ("s.dcm", to_bytes(seg_source))}, headers={"Accept": "application/dicom"}
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith('multipart/related; type="application/dicom"')
    modalities = [pydicom.dcmread(io.BytesIO(p)).Modality for p in parts(r)]
    assert modalities == ["SEG", "SR"]

    bare = instance("CR")
    del bare.SeriesInstanceUID  # answered as JSON; a DICOM answer could not reference it
    assert client.post("/v1/images", files={"file": ("x.dcm", to_bytes(bare))}).status_code == 200
    r = client.post("/v1/images", files={"file": ("x.dcm", to_bytes(bare))}, headers={"Accept": "application/dicom"})
    assert r.status_code == 422 and "lacks SeriesInstanceUID" in r.json()["detail"]

    png = png_bytes(np.zeros((28, 28), np.uint8))
    r = client.post("/v1/images", files={"file": ("x.png", png)}, headers={"Accept": "application/dicom"})
    assert r.status_code == 406 and "upload a DICOM image" in r.json()["detail"]
    r = client.post("/v1/reports", json={"text": "No effusion."}, headers={"Accept": "application/dicom"})
    assert r.status_code == 406 and "no DICOM form" in r.json()["detail"]


def test_stow_rs_answers_each_instance_by_its_modality(client) -> None:
    study = uid()
    body, headers = multipart([instance("CR", study=study), instance("OT", (48, 40), study=study)])
    r = client.post("/dicomweb/studies", content=body, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/dicom+json"), r.text
    classes = [item["00081150"]["Value"][0] for item in r.json()["00081199"]["Value"]]
    comprehensive_3d_sr, seg = "1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.66.4"
    assert classes == [comprehensive_3d_sr, seg, comprehensive_3d_sr]
    assert "00081198" not in r.json()

    # One instance of a modality no model serves, one in the URL's study and one not: accepted in part (202).
    body, headers = multipart([instance("US", study=study), instance("CR", study=study), instance("CR")])
    r = client.post(f"/dicomweb/studies/{study}", content=body, headers=headers)
    assert r.status_code == 202
    assert len(r.json()["00081199"]["Value"]) == 1 and len(r.json()["00081198"]["Value"]) == 2
    reasons = {item["00081197"]["Value"][0] for item in r.json()["00081198"]["Value"]}
    assert reasons == {0x0122, 0x0110}

    body, headers = multipart([instance("CR")])
    r = client.post("/dicomweb/studies?model=nope", content=body, headers=headers)
    assert r.status_code == 409 and "00081199" not in r.json()  # nothing answered


def test_stow_rs_refuses_what_is_not_a_dicom_multipart(client) -> None:
    r = client.post("/dicomweb/studies", content=b"{}", headers={"Content-Type": "application/json"})
    assert r.status_code == 415 and 'multipart/related; type="application/dicom"' in r.json()["detail"]
    r = client.post("/dicomweb/studies", content=b"x", headers={"Content-Type": "multipart/related"})
    assert r.status_code == 400 and "boundary" in r.json()["detail"]
    r = client.post(
        "/dicomweb/studies",
        content=b"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b--\r\n",
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'},
    )
    assert r.status_code == 409 and r.json()["00081198"]["Value"][0]["00081197"]["Value"][0] == 0xC000
    body, headers = multipart([instance("CR", (3000, 3000))])  # larger than the service accepts
    r = client.post("/dicomweb/studies", content=body, headers=headers)
    assert r.status_code == 413, r.text[:300]


def test_audit_trail_verifies_and_holds_no_identifier(client, setup) -> None:
    before = verify(setup["log"], load_key(str(setup["key"]))).lines
    r = client.post("/v1/images", files={"file": ("x.png", b"not an image")})
    assert r.status_code == 415
    result = verify(setup["log"], load_key(str(setup["key"])))
    assert result.ok and result.lines == before + 1
    lines = [json.loads(x) for x in setup["log"].read_text().splitlines()]
    assert lines[-1]["status"] == 415 and lines[-1]["action"] == "POST /v1/images"
    assert {x["who"] for x in lines} == {"local"}
    assert any(x["action"] == "POST /dicomweb/studies" and x["status"] == 200 for x in lines)
    assert any(x["referred"] == [] and x["answered"] == ["normal", "pneumonia"] for x in lines)
    text = setup["log"].read_text() + LOG.getvalue()
    for secret in ("MRN-4711", "ACC-4711", "Doe^Jane", "Jane", "1.2.826.0.1.3680043"):
        assert secret not in text


def test_stow_rs_needs_a_key_and_stores_results_in_the_callers_pacs(setup, tmp_path, monkeypatch) -> None:
    keys = tmp_path / "keys.txt"
    key = add_key(keys, "ward-3", "client")
    with orthanc(tmp_path / "orthanc") as pacs:
        monkeypatch.setenv("MEDASSIST_PACS_USER", pacs.creds["username"])
        monkeypatch.setenv("MEDASSIST_PACS_PASSWORD", pacs.creds["password"])
        cfg = ServeConfig(host="0.0.0.0", api_keys=str(keys), dicomweb_store=pacs.url, modalities="xray=CR")
        served = load_served([setup["xray"]])
        with TestClient(create_app(served, cfg, ring=KeyRing(read_keys(keys)))) as c:
            ds = instance("CR")
            body, headers = multipart([ds])
            assert c.post("/dicomweb/studies", content=body, headers=headers).status_code == 401
            r = c.post("/dicomweb/studies", content=body, headers={**headers, "Authorization": f"Bearer {key}"})
            assert r.status_code == 200
            (item,) = r.json()["00081199"]["Value"]
            assert item["00081190"]["Value"][0].startswith(f"{pacs.url}/studies/{ds.StudyInstanceUID}/series/")
        from medassist.hospital.pacs import client as dicomweb

        found = dicomweb(pacs.url, pacs.creds).search_for_series(study_instance_uid=ds.StudyInstanceUID)
        assert [s["00080060"]["Value"][0] for s in found] == ["SR"]  # the result, not the instance: nothing kept
