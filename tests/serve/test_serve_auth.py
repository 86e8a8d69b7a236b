"""A service a clinic can run: API keys checked before a body is read, roles, the rate limit, Prometheus metrics,
versions side by side, a reload that refuses a tampered bundle, and per-finding answers."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import shutil

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from serve_bundles import REPORT, TEXT_LABELS, make_image_bundle, make_text_bundle, png_bytes

from medassist.cli import main
from medassist.errors import MedAssistError
from medassist.serve import ServeConfig, create_app, load_served
from medassist.serve.app import key_ring
from medassist.serve.auth import OPEN_PATHS, KeyRing, add_key, read_keys
from medassist.serve.logs import ACCESS_LOGGER, JsonFormatter

PER_FINDING = {
    "rule": "per-label",
    "target_miss": 0.05,
    "target_false": 0.05,
    "min_positives": 10,
    "bands": {TEXT_LABELS[0]: [0.0, 0.0], TEXT_LABELS[1]: [0.0, 1.1], TEXT_LABELS[2]: None},
}  # effusion always answered, edema always referred, cardiomegaly not assessed


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("auth")
    keys = root / "keys.txt"
    key = {role: add_key(keys, f"{role}-1", role) for role in ("client", "metrics", "admin")}
    v1 = make_text_bundle(root / "v1", abstain=PER_FINDING)
    v2 = make_text_bundle(root / "v2", abstain=PER_FINDING, seed=1)
    image = make_image_bundle(root / "xray")
    return {"root": root, "keys": keys, "key": key, "v1": v1, "v2": v2, "image": image}


@pytest.fixture(scope="module")
def client(setup):
    served = load_served([("reports", setup["v1"]), ("reports", setup["v2"]), ("xray", setup["image"])])
    ring = KeyRing(read_keys(setup["keys"]))
    app = create_app(served, ServeConfig(host="0.0.0.0", api_keys=str(setup["keys"])), ring=ring)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def protected_routes(app) -> list[tuple[str, str]]:
    out = []
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path not in OPEN_PATHS:
            out += [(method, route.path) for method in sorted(route.methods)]
    return out


def test_every_route_without_a_key_is_401_and_reads_no_body(client) -> None:
    app = client.app
    routes = protected_routes(app)
    assert {("POST", "/v1/reports"), ("POST", "/v1/images"), ("GET", "/metrics"), ("POST", "/v1/admin/reload")} <= set(
        routes
    )
    for method, path in routes:
        for headers in ([], [(b"authorization", b"Bearer mdk_wrong")], [(b"authorization", b"Basic x")]):
            read, sent = [], []

            async def receive(read=read):
                read.append(1)
                return {"type": "http.request", "body": b'{"text": "secret"}', "more_body": False}

            async def send(message, sent=sent):
                sent.append(message)

            scope = {
                "type": "http",
                "method": method,
                "path": path,
                "raw_path": path.encode(),
                "query_string": b"",
                "headers": [(b"content-type", b"application/json"), *headers],
                "http_version": "1.1",
                "scheme": "http",
                "server": ("test", 80),
                "client": ("127.0.0.1", 1),
                "root_path": "",
            }
            asyncio.run(app(scope, receive, send))
            assert sent[0]["status"] == 401, (method, path)
            assert (b"www-authenticate", b'Bearer realm="medassist"') in sent[0]["headers"]
            assert not read, f"{method} {path} read the body of a request without a valid key"


def test_open_routes_and_roles(client, setup) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "auth": "api-key"}
    assert client.get("/readyz").status_code == 200 and client.get("/").status_code == 200
    key = setup["key"]
    assert client.get("/v1/models", headers=bearer(key["client"])).status_code == 200
    assert client.get("/v1/models", headers=bearer(key["admin"])).status_code == 200
    refused = client.get("/v1/models", headers=bearer(key["metrics"]))
    assert refused.status_code == 403 and "metrics" in refused.json()["detail"]
    assert client.get("/metrics", headers=bearer(key["client"])).status_code == 403
    assert client.get("/metrics", headers=bearer(key["metrics"])).status_code == 200
    reload = client.post("/v1/admin/reload", json={"model": "reports"}, headers=bearer(key["client"]))
    assert reload.status_code == 403


def test_versions_side_by_side(client, setup) -> None:
    h = bearer(setup["key"]["client"])
    models = client.get("/v1/models", headers=h).json()["models"]
    reports = [m for m in models if m["id"] == "reports"]
    assert len(reports) == 2 and [m["default"] for m in reports] == [True, False]
    v1, v2 = (m["version"] for m in reports)
    assert v1 != v2 and reports[0]["title"].startswith("tiny text model, version " + v1)
    default = client.post("/v1/reports", json={"text": REPORT}, headers=h).json()
    chosen = client.post("/v1/reports", json={"text": REPORT, "model": "reports", "version": v2}, headers=h).json()
    assert default["model"]["version"] == v1 and chosen["model"]["version"] == v2
    missing = client.post("/v1/reports", json={"text": REPORT, "version": "0" * 12}, headers=h)
    assert missing.status_code == 404 and v1 in missing.json()["detail"] and v2 in missing.json()["detail"]


def test_each_finding_is_answered_or_referred_by_name(client, setup) -> None:
    body = client.post("/v1/reports", json={"text": REPORT}, headers=bearer(setup["key"]["client"])).json()
    status = {f["label"]: f["status"] for f in body["findings"]}
    effusion, edema, cardiomegaly = TEXT_LABELS
    assert status[edema] == status[cardiomegaly] == "uncertain" and status[effusion] in ("present", "absent")
    assert body["abstained"] and body["reason"] == f"uncertain: {edema}, {cardiomegaly}; refer to a clinician"


def test_metrics_parse_and_count_the_requests(client, setup) -> None:
    h = bearer(setup["key"]["client"])
    before = metric_values(client, setup)
    for _ in range(3):
        assert client.post("/v1/reports", json={"text": REPORT}, headers=h).status_code == 200
    image = client.post("/v1/images", files={"file": ("x.png", png_bytes(bytes_image()), "image/png")}, headers=h)
    assert image.status_code == 200
    after = metric_values(client, setup)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("medassist_requests_total", route="/v1/reports", status="200", model="reports") == 3
    assert delta("medassist_requests_total", route="/v1/images", status="200", model="xray") == 1
    assert delta("medassist_predictions_total", model="reports") == 3
    assert delta("medassist_abstentions_total", model="reports") == 3  # edema is always referred
    _, edema, _ = TEXT_LABELS
    assert delta("medassist_findings_referred_total", model="reports", finding=edema) == 3
    assert delta("medassist_request_seconds_count", route="/v1/reports") == 3
    assert after[("medassist_models_loaded", ())] == 3
    assert after[("medassist_abstention_rate", (("model", "reports"),))] == 1.0


def bytes_image():
    import numpy as np

    return np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)


def metric_values(client, setup) -> dict:
    text = client.get("/metrics", headers=bearer(setup["key"]["metrics"])).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_reload_refuses_a_tampered_bundle_and_keeps_serving(client, setup) -> None:
    h, admin = bearer(setup["key"]["client"]), bearer(setup["key"]["admin"])
    before = client.post("/v1/reports", json={"text": REPORT, "model": "reports"}, headers=h).json()["model"]
    model_file = setup["v1"] / "model.onnx"
    good = model_file.read_bytes()
    model_file.write_bytes(good[:-10] + b"0123456789")  # same size, another hash
    try:
        r = client.post("/v1/admin/reload", json={"model": "reports"}, headers=admin)
        assert r.status_code == 409 and "keeps serving" in r.json()["detail"] and "SHA-256" in r.json()["detail"]
        assert str(setup["root"]) not in r.text  # no server path reaches a client
        after = client.post("/v1/reports", json={"text": REPORT, "model": "reports"}, headers=h)
        assert after.status_code == 200 and after.json()["model"] == before
    finally:
        model_file.write_bytes(good)
    # A new bundle in the folder: verified, answered once, then it serves.
    shutil.rmtree(setup["v1"])
    shutil.copytree(make_text_bundle(setup["root"] / "v3", abstain=PER_FINDING, seed=3), setup["v1"])
    r = client.post("/v1/admin/reload", json={"model": "reports"}, headers=admin)
    assert r.status_code == 200
    (change, _) = r.json()["changes"]
    assert change["from"] == before["version"] and change["to"] != before["version"]
    now = client.post("/v1/reports", json={"text": REPORT}, headers=h).json()["model"]["version"]
    assert now == change["to"] and client.get("/readyz").status_code == 200


def test_rate_limit_answers_429(setup) -> None:
    served = load_served([setup["image"]])
    app = create_app(served, ServeConfig(rate_limit=2), ring=KeyRing(read_keys(setup["keys"])))
    with TestClient(app) as c:
        codes = [c.get("/v1/models", headers=bearer(setup["key"]["client"])).status_code for _ in range(5)]
        other = c.get("/v1/models", headers=bearer(setup["key"]["admin"])).status_code  # its own bucket
    assert codes[:2] == [200, 200] and 429 in codes and other == 200


def test_access_log_names_the_key_never_the_key(setup) -> None:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(JsonFormatter())
    logging.getLogger(ACCESS_LOGGER).addHandler(handler)
    try:
        app = create_app(load_served([setup["v2"]]), ring=KeyRing(read_keys(setup["keys"])))
        with TestClient(app) as c:
            c.post("/v1/reports", json={"text": "MRN 4711 " + REPORT}, headers=bearer(setup["key"]["client"]))
    finally:
        logging.getLogger(ACCESS_LOGGER).removeHandler(handler)
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    (line,) = [x for x in lines if x.get("route") == "/v1/reports"]
    assert line["key"] == "client-1" and line["model"] == "v2" and line["status"] == 200
    assert setup["key"]["client"] not in buf.getvalue() and "MRN 4711" not in buf.getvalue()


def test_key_file_problems_are_named_at_start(tmp_path, capsys) -> None:
    keys = tmp_path / "keys.txt"
    add_key(keys, "ward-3")
    with open(keys, "a") as f:
        f.write("# a comment\n\nnurse client sha256:abc\n")
    with pytest.raises(MedAssistError, match=r"keys.txt, line 4: has no sha256:HEX hash"):
        read_keys(keys)
    keys.write_text("ward-3 superuser sha256:" + "0" * 64 + "\n")
    with pytest.raises(MedAssistError, match="line 1: has an unknown role"):
        read_keys(keys)
    assert main(["serve", "x", "--api-keys", str(keys)]) != 0  # before any bundle is read
    assert "keys.txt, line 1: has an unknown role" in capsys.readouterr().err


def test_keys_are_required_beyond_this_machine(tmp_path, capsys) -> None:
    with pytest.raises(MedAssistError, match="without API keys"):
        key_ring(ServeConfig(host="0.0.0.0"))
    assert key_ring(ServeConfig(host="0.0.0.0", no_auth=True)) is None
    assert key_ring(ServeConfig()) is None  # 127.0.0.1: this machine only
    with pytest.raises(MedAssistError, match="not both"):
        key_ring(ServeConfig(api_keys=str(tmp_path / "k"), no_auth=True))
    assert main(["serve", "keys", "add", "ward-3", "--api-keys", str(tmp_path / "k.txt")]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    stored = (tmp_path / "k.txt").read_text()
    assert key.startswith("mdk_") and key not in stored and stored.startswith("ward-3 client sha256:")
    assert (tmp_path / "k.txt").stat().st_mode & 0o077 == 0  # readable by its owner only
    ring = KeyRing(read_keys(tmp_path / "k.txt"))
    assert ring.find(key).name == "ward-3" and ring.find(key + "x") is None


def test_no_auth_is_warned_on_the_page(setup) -> None:
    app = create_app(load_served([setup["image"]]), ServeConfig(host="0.0.0.0", no_auth=True))
    with TestClient(app) as c:
        assert c.get("/healthz").json()["auth"] == "none" and 'id="no-auth"' in c.get("/").text
        assert c.get("/v1/models").status_code == 200


def test_tls_files_go_to_uvicorn(setup, tmp_path, monkeypatch, capsys) -> None:
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("certificate")
    argv = ["serve", str(setup["image"]), "--api-keys", str(setup["keys"]), "--ssl-certfile", str(cert)]
    assert main(argv) != 0 and "both --ssl-certfile and --ssl-keyfile" in capsys.readouterr().err
    assert main([*argv, "--ssl-keyfile", str(key)]) != 0 and "key.pem does not exist" in capsys.readouterr().err
    key.write_text("key")
    assert main([*argv, "--ssl-keyfile", str(key), "--host", "0.0.0.0"]) == 0
    assert calls[-1]["ssl_certfile"] == str(cert) and calls[-1]["ssl_keyfile"] == str(key)
