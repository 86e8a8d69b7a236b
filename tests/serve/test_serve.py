"""The service through FastAPI's TestClient: every route, every refused input with its message, no patient data in
any log, and a tampered bundle that stops the service before it listens."""

from __future__ import annotations

import base64
import io
import json
import logging
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient
from serve_bundles import (
    IMAGE_LABELS,
    REPORT,
    TEXT_LABELS,
    dicom_bytes,
    jpeg_bytes,
    make_image_bundle,
    make_text_bundle,
    png_bytes,
    png_header_only,
)

from medassist.cli import main
from medassist.deploy.bundle import BundleError
from medassist.serve import ServeConfig, create_app, load_served
from medassist.serve.logs import ACCESS_LOGGER, JsonFormatter

PATIENT = "Doe^Jane^Quincy"
SECRET_REPORT = "Patient Jane Quincy Doe, MRN 4711: " + REPORT
SENT_TEXTS = [SECRET_REPORT]
LOG = io.StringIO()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    return {
        "xray": make_image_bundle(root / "xray"),
        "cautious": make_image_bundle(root / "cautious", min_confidence=1.01),  # refers every case
        "reports": make_text_bundle(root / "reports"),
        "cautious-reports": make_text_bundle(root / "cautious-reports", min_confidence=1.01),
    }


@pytest.fixture(scope="module")
def client(bundles):
    # Every log of the service (its access log and anything else) into one buffer, scanned by the last test.
    handler = logging.StreamHandler(LOG)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(JsonFormatter())
    for name in (ACCESS_LOGGER, ""):
        logging.getLogger(name).addHandler(handler)
    cfg = ServeConfig(max_upload_mb=0.05, max_pixels=1000 * 1000, max_text_chars=2000)
    served = load_served([bundles[k] for k in ("xray", "cautious", "reports", "cautious-reports")])
    with TestClient(create_app(served, cfg), raise_server_exceptions=False) as c:
        yield c
    for name in (ACCESS_LOGGER, ""):
        logging.getLogger(name).removeHandler(handler)


def gray(seed: int = 0, size: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)


def post_image(client, data: bytes, name: str = "x.png", **form):
    return client.post("/v1/images", files={"file": (name, data, "application/octet-stream")}, data=form)


def detail(response) -> str:
    body = response.json()
    assert "Traceback" not in response.text and body["request_id"]
    return body["detail"] if isinstance(body["detail"], str) else json.dumps(body["detail"])


def test_health_ready_schema_and_page(client) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "auth": "local"}  # no keys, on this machine only
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["models"] == ["xray", "cautious", "reports", "cautious-reports"]
    schema = client.get("/openapi.json").json()
    assert {"/v1/images", "/v1/reports", "/v1/models", "/healthz", "/readyz"} <= set(schema["paths"])
    page = client.get("/")
    assert page.status_code == 200 and "Not a medical device" in page.text
    assert 'for="image-file"' in page.text and 'for="report-text"' in page.text  # labelled controls
    assert "http://" not in page.text and "https://" not in page.text  # nothing from the internet
    assert client.get("/static/app.js").status_code == 200


def test_models_lists_each_bundle(client, bundles) -> None:
    body = client.get("/v1/models").json()
    ids = [m["id"] for m in body["models"]]
    assert ids == ["xray", "cautious", "reports", "cautious-reports"] and "not a medical device" in body["notice"]
    xray = body["models"][0]
    assert xray["kind"] == "image" and xray["labels"] == IMAGE_LABELS and xray["overlay"] is True
    assert re.fullmatch(r"[0-9a-f]{12}", xray["version"]) and xray["temperature"] == 1.5
    card = bundles["xray"] / "model_card.md"  # written by write_bundle, verified by the manifest
    if card.is_file():  # shown as HTML, with no server path
        assert xray["model_card"].startswith("<h1>Model card") and "<li>" in xray["model_card"]
        assert str(bundles["xray"].parent) not in xray["model_card"] and "# Model card" not in xray["model_card"]
    else:
        assert xray["model_card"] is None
    assert xray["title"].startswith(f"{xray['name'].split()[0]} image model, version {xray['version']}")
    assert xray["default"] is True
    assert body["models"][2]["labels"] == TEXT_LABELS


@pytest.mark.parametrize(
    "encode",
    [lambda g: png_bytes(g), lambda g: jpeg_bytes(g), lambda g: dicom_bytes(g, patient=PATIENT)],
    ids=["png", "jpeg", "dicom"],
)
def test_image_answer(client, encode) -> None:
    from PIL import Image

    r = post_image(client, encode(gray()), name="scan.bin")  # the name says nothing; the bytes do
    assert r.status_code == 200, r.text
    body = r.json()
    fields = json.dumps({k: v for k, v in body.items() if k != "overlay_png"})  # base64 may spell anything
    assert PATIENT.split("^")[0] not in fields and "-4711" not in fields
    assert body["label"] in IMAGE_LABELS and body["model"]["id"] == "xray"
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-6 and body["label"] == max(
        body["probabilities"], key=body["probabilities"].get
    )
    assert body["abstained"] is False and body["reason"] == "" and body["latency_ms"] > 0
    prefix = "data:image/png;base64,"
    assert body["overlay_png"].startswith(prefix)
    overlay = Image.open(io.BytesIO(base64.b64decode(body["overlay_png"][len(prefix) :])))
    assert overlay.size == (112, 112) and overlay.mode == "RGB"


def test_abstaining_model_says_why(client) -> None:
    r = post_image(client, png_bytes(gray()), model="cautious")
    assert r.status_code == 200 and r.json()["abstained"] is True
    assert r.json()["reason"] == "uncertain: refer to a clinician"
    r = client.post("/v1/reports", json={"text": REPORT, "model": "cautious-reports"})
    assert r.json()["abstained"] is True and r.json()["reason"] == "uncertain: refer to a clinician"


def test_report_answer(client) -> None:
    r = client.post("/v1/reports", json={"text": SECRET_REPORT})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [f["label"] for f in body["findings"]] == sorted(
        TEXT_LABELS, key=lambda k: -next(f["probability"] for f in body["findings"] if f["label"] == k)
    )
    assert set(body["label"]) == {f["label"] for f in body["findings"] if f["present"]}
    assert body["task"] == "multi-label" and body["abstained"] is False and "Jane" not in r.text


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"", 422, "is empty"),
        (b"just some text, named like a PNG", 415, "not a PNG, JPEG or DICOM image (checked by its first bytes"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, 422, "header cannot be read"),
        (png_header_only(2000, 2000), 413, "2,000 x 2,000 pixels; at most 1,000,000 pixels"),
        (png_header_only(60000, 60000), 413, "too large to decode safely"),
        (png_bytes(np.zeros((20, 20, 3), np.uint8) + np.array([200, 10, 10], np.uint8)), 422, "colour image"),
        (png_bytes(np.zeros((20, 20, 4), np.uint8), mode="RGBA"), 422, "alpha channel"),
        (dicom_bytes(gray(), patient=PATIENT, pixels=False), 422, "DICOM file has no pixel data"),
        (b"\x00" * 60_000, 413, "at most 52,428 are accepted"),
    ],
    ids=["empty", "not-an-image", "broken-png", "too-many-pixels", "bomb", "colour", "alpha", "no-pixels", "size"],
)
def test_refused_images(client, data: bytes, status: int, message: str) -> None:
    r = post_image(client, data)
    assert r.status_code == status and message in detail(r), r.text
    assert PATIENT.split("^")[0] not in r.text


def test_refused_dicom_transfer_syntax(client) -> None:
    from pydicom.uid import MPEG2MPML

    data = dicom_bytes(gray(), patient=PATIENT, syntax=MPEG2MPML)  # video: no image decoder reads it
    r = post_image(client, data, name="scan.dcm")
    assert r.status_code == 415 and f"transfer syntax {MPEG2MPML}" in detail(r)
    assert "not supported" in detail(r) and "JPEG-LS Lossless" in detail(r) and "Doe" not in r.text


@pytest.mark.parametrize(
    "name", ["SC_rgb_jpeg_dcmtk.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "MR_small_RLE.dcm"]
)
def test_compressed_dicom_is_decoded(client, name: str) -> None:
    """pydicom's own test files in JPEG baseline, JPEG-LS, JPEG 2000 and RLE: decoded (pylibjpeg) and answered."""
    from pydicom.data import get_testdata_file

    data = open(get_testdata_file(name), "rb").read()
    r = post_image(client, data, name="scan.dcm")
    if name.startswith("SC_rgb"):  # a real colour photograph: the grayscale X-ray model refuses it by name
        assert r.status_code == 422 and "colour image" in detail(r), r.text
    else:
        assert r.status_code == 200 and set(r.json()["probabilities"]) == set(IMAGE_LABELS), r.text


def test_refused_requests(client) -> None:
    r = client.post("/v1/images", data={"model": "xray"})
    assert r.status_code == 422 and '"file"' in detail(r) and "Field required" in detail(r)
    r = post_image(client, png_bytes(gray()), model="nope")
    assert r.status_code == 404 and "no image model with id 'nope'; the image models are: xray, cautious" in detail(r)
    r = client.post("/v1/reports", json={"text": "   "})
    assert r.status_code == 422 and "empty" in detail(r)
    r = client.post("/v1/reports", json={"text": "x" * 2001})
    assert r.status_code == 413 and "2,001 characters; at most 2,000" in detail(r)
    r = client.post("/v1/reports", json={"text": ["Jane", "Doe"]})
    assert r.status_code == 422 and "Jane" not in r.text  # the input is never echoed
    as_json = {"content-type": "application/json"}
    r = client.post("/v1/reports", content=b'{"text": "' + b"y" * 200_000 + b'"}', headers=as_json)
    assert r.status_code == 413 and "larger than the" in detail(r)
    r = client.post("/v1/reports", content=b"{not json", headers=as_json)
    assert r.status_code == 422
    assert client.get("/v1/nothing").status_code == 404
    assert client.get("/v1/images").status_code == 405


def test_internal_error_has_no_stack_trace(client, monkeypatch) -> None:
    from medassist.deploy.bundle_predict import Bundle

    def boom(self, *args, **kwargs):
        raise RuntimeError("secret internals of Jane Doe")

    monkeypatch.setattr(Bundle, "predict_texts", boom)
    r = client.post("/v1/reports", json={"text": REPORT})
    assert r.status_code == 500 and "internal error" in detail(r)
    assert "secret" not in r.text and "RuntimeError" not in r.text


def test_tampered_bundle_stops_the_service_before_it_listens(bundles, tmp_path, capsys, monkeypatch) -> None:
    import shutil

    import uvicorn

    bad = shutil.copytree(bundles["xray"], tmp_path / "tampered" / "bundle")
    data = bytearray((bad / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="model.onnx does not match its SHA-256"):
        load_served([bundles["reports"], bad])
    listened = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: listened.append(a))
    assert main(["serve", str(bundles["reports"]), str(bad), "--port", "8765"]) == 2
    assert "model.onnx does not match its SHA-256" in capsys.readouterr().err and not listened


def test_serve_command_runs_uvicorn_on_the_verified_bundles(bundles, monkeypatch) -> None:
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    assert main(["serve", str(bundles["xray"]), "--port", "8765", "--max-batch", "4"]) == 0
    ((app, kw),) = calls
    assert kw["host"] == "127.0.0.1" and kw["port"] == 8765 and kw["access_log"] is False
    assert {r.path for r in app.routes} >= {"/v1/images", "/v1/reports", "/v1/models"}


def test_logs_hold_no_patient_data() -> None:
    """Runs last in this module: every log line of the tests above."""
    text = LOG.getvalue()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    access = [x for x in lines if x.get("message", "") == "" and "route" in x]
    assert len(access) >= 20 and {x["route"] for x in access} >= {"/v1/images", "/v1/reports", "/v1/models"}
    for x in access:
        assert set(x) == {"time", "level", "request_id", "method", "route", "status", "latency_ms", "key", "model"}
    for sent in [*SENT_TEXTS, REPORT, *PATIENT.split("^"), "MRN 4711", "-4711", "Jane"]:
        assert sent not in text, sent
