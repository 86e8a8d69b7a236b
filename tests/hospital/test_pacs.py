"""``medassist pacs process`` against a real PACS: Orthanc with its DICOMweb plugin (tests/support/orthanc.py).
Twenty real chest X-rays (PneumoniaMNIST's test images as CR instances in four studies) are uploaded; the command
finds them by QIDO-RS, answers each and stores an SR into its study, found again through Orthanc's own QIDO-RS. A
run stopped halfway resumes without loss or repeats; an unreachable PACS, one answering 5xx and wrong credentials
are named."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from orthanc import orthanc
from serve_bundles import make_image_bundle

from medassist.cli import main
from medassist.deploy.bundle import load_bundle
from medassist.errors import MedAssistError
from medassist.hospital import pacs
from medassist.hospital.audit import load_key, new_key, verify
from medassist.hospital.dicom_in import image_instance

N_STUDIES, PER_STUDY = 4, 5


def uid() -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid())


def chest_xrays(real_data_dir: Path) -> list:
    """Twenty real chest X-rays as CR instances, four studies of five, each study its own patient."""
    images = np.load(real_data_dir / "medmnist" / "pneumoniamnist.npz")["test_images"][: N_STUDIES * PER_STUDY]
    out = []
    for s in range(N_STUDIES):
        study, series = uid(), uid()
        for i in range(PER_STUDY):
            ds = image_instance(
                images[s * PER_STUDY + i],
                patient_id=f"PAT-{s}",
                patient_name=f"Doe^Pat{s}",
                study_uid=study,
                series_uid=series,
                sop_uid=uid(),
                modality="CR",
                accession=f"ACC-{s}",
                instance_number=i + 1,
            )
            out.append(ds)
    return out


@pytest.fixture()
def pacs_with_xrays(real_data_dir, tmp_path):
    with orthanc(tmp_path / "orthanc") as server:
        web = pacs.client(server.url, server.creds)
        xrays = chest_xrays(real_data_dir)
        web.store_instances(xrays)
        other = image_instance(
            np.zeros((28, 28), np.uint8),
            patient_id="P9",
            study_uid=uid(),
            series_uid=uid(),
            sop_uid=uid(),
            modality="OP",
        )
        web.store_instances([other])  # another modality: not for this run
        yield server, web, xrays


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    """A tiny chest X-ray bundle, or the bundle MEDASSIST_PACS_BUNDLE names (e.g. a debug image study's deploy, to
    time the twenty instances with a real model)."""
    given = os.environ.get("MEDASSIST_PACS_BUNDLE")
    return Path(given) if given else make_image_bundle(tmp_path_factory.mktemp("pacs-bundle") / "xray")


def sr_series(web, xrays) -> dict[str, int]:
    """SR series per study, through the PACS's own QIDO-RS."""
    studies = sorted({str(x.StudyInstanceUID) for x in xrays})
    return {s: len(web.search_for_series(study_instance_uid=s, search_filters={"Modality": "SR"})) for s in studies}


def sr_instances(server) -> int:
    """Every SR instance Orthanc holds (its REST API, not DICOMweb): duplicates would show here."""
    found = requests.post(
        f"{server.rest}/tools/find",
        json={"Level": "Instance", "Query": {"Modality": "SR"}},
        auth=tuple(server.creds.values()),
        timeout=10,
    ).json()
    return len(found)


def test_twenty_instances_processed_once_with_results_in_their_studies(
    pacs_with_xrays, bundle_dir, tmp_path, monkeypatch, capsys
) -> None:
    server, web, xrays = pacs_with_xrays
    monkeypatch.setenv("MEDASSIST_PACS_USER", server.creds["username"])
    monkeypatch.setenv("MEDASSIST_PACS_PASSWORD", server.creds["password"])
    key = new_key(tmp_path / "audit.key")
    argv = ["pacs", "process", "--dicomweb", server.url, "--bundle", str(bundle_dir), "--modality", "CR",
            "--since", "2000-01-01", "--jobs", str(tmp_path / "jobs.sqlite"),
            "--audit-log", str(tmp_path / "audit.log"), "--audit-key-file", str(key), "--no-progress"]  # fmt: skip
    start = time.perf_counter()
    assert main(argv) == 0
    seconds = time.perf_counter() - start
    out = capsys.readouterr().out
    assert "20 image instances found; 0 done before; 20 processed now (20 result objects stored)" in out
    with capsys.disabled():  # the time, for `pytest -s` (the README's measurement)
        print(f"\npacs process: 20 instances in {seconds:.2f} s (the command, its bundle load included)")
    assert seconds < 60
    assert sr_series(web, xrays) == {s: PER_STUDY for s in sr_series(web, xrays)}  # one SR series per instance
    assert main(argv) == 0
    assert "20 image instances found; 20 done before; 0 processed now" in capsys.readouterr().out
    assert sr_instances(server) == 20
    # The audit trail: one line per instance, the chain intact, no identifier in clear.
    text = (tmp_path / "audit.log").read_text()
    assert verify(tmp_path / "audit.log", load_key(str(key))).lines == 20
    for ds in xrays:
        for value in (ds.StudyInstanceUID, ds.AccessionNumber, ds.PatientID, str(ds.PatientName)):
            assert str(value) not in text
    assert server.creds["password"] not in text and server.creds["password"] not in out


def test_a_run_stopped_halfway_resumes_without_loss_or_repeats(pacs_with_xrays, bundle_dir, tmp_path) -> None:
    server, web, xrays = pacs_with_xrays
    bundle = load_bundle(bundle_dir)
    jobs = tmp_path / "jobs.sqlite"
    real_store = web.store_instances.__func__
    calls = {"n": 0}

    def failing_store(self, datasets, study_instance_uid=None, additional_params=None):
        calls["n"] += 1
        if calls["n"] > 10:  # the PACS goes away after ten stores
            raise requests.ConnectionError("connection refused")
        return real_store(self, datasets, study_instance_uid=study_instance_uid)

    from dicomweb_client.api import DICOMwebClient

    original = DICOMwebClient.store_instances
    DICOMwebClient.store_instances = failing_store
    try:
        with pytest.raises(MedAssistError, match="could not be reached .* run the same command again to resume"):
            pacs.process(server.url, bundle, jobs=jobs, creds=server.creds, modality="CR", tries=2, progress=False)
    finally:
        DICOMwebClient.store_instances = original
    assert pacs.JobTable(jobs).count() == 10 and sr_instances(server) == 10

    # Stored but not recorded (a stop between the PACS's answer and the job table): stored again, as the same objects.
    original_mark = pacs.JobTable.mark_done
    marks = {"n": 0}

    def mark_then_stop(self, inst, version, results):
        marks["n"] += 1
        if marks["n"] > 5:
            raise KeyboardInterrupt
        original_mark(self, inst, version, results)

    pacs.JobTable.mark_done = mark_then_stop
    try:
        with pytest.raises(KeyboardInterrupt):
            pacs.process(server.url, bundle, jobs=jobs, creds=server.creds, modality="CR", progress=False)
    finally:
        pacs.JobTable.mark_done = original_mark
    assert pacs.JobTable(jobs).count() == 15 and sr_instances(server) == 16

    summary = pacs.process(server.url, bundle, jobs=jobs, creds=server.creds, modality="CR", progress=False)
    assert (summary.found, summary.done_before, summary.processed) == (20, 15, 5)
    assert sr_instances(server) == 20 and sr_series(web, xrays) == {s: PER_STUDY for s in sr_series(web, xrays)}


@pytest.mark.process
def test_a_killed_run_resumes(pacs_with_xrays, bundle_dir, tmp_path) -> None:
    """The command killed (SIGKILL) once some instances are done, then run again: 20 results, none twice."""
    server, web, xrays = pacs_with_xrays
    jobs = tmp_path / "jobs.sqlite"
    env = {
        **os.environ,
        "MEDASSIST_PACS_USER": server.creds["username"],
        "MEDASSIST_PACS_PASSWORD": server.creds["password"],
    }
    argv = [sys.executable, "-m", "medassist", "pacs", "process", "--dicomweb", server.url, "--bundle", str(bundle_dir),
            "--modality", "CR", "--jobs", str(jobs), "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if jobs.exists() and pacs.JobTable(jobs).count() >= 5:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = pacs.JobTable(jobs).count()
    assert done < 20, "the run finished before it could be killed"
    assert subprocess.run(argv, env=env, capture_output=True, timeout=120).returncode == 0
    assert pacs.JobTable(jobs).count() == 20 and sr_instances(server) == 20


class _Failing(http.server.BaseHTTPRequestHandler):
    calls = 0

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        type(self).calls += 1
        self.send_response(503)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_an_unreachable_pacs_one_answering_5xx_and_wrong_credentials_are_named(
    bundle_dir, tmp_path, monkeypatch
) -> None:
    from orthanc import free_port

    bundle = load_bundle(bundle_dir)
    monkeypatch.setattr(pacs.time, "sleep", lambda s: None)  # the back-off, without its waits
    closed = f"http://127.0.0.1:{free_port()}/dicom-web"
    with pytest.raises(MedAssistError, match="could not be reached for a QIDO-RS search for instances after 5 tries"):
        pacs.process(closed, bundle, jobs=tmp_path / "j.sqlite", progress=False)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
        with pytest.raises(MedAssistError, match="answered 503 to a QIDO-RS search for instances \\(after 5 tries\\)"):
            pacs.process(url, bundle, jobs=tmp_path / "j.sqlite", progress=False)
        assert _Failing.calls == 5  # retried, then named
    finally:
        server.shutdown()

    with orthanc(tmp_path / "orthanc") as real:
        wrong = {"username": real.creds["username"], "password": "not-the-password"}
        with pytest.raises(MedAssistError, match="refused a QIDO-RS search for instances \\(401\\); give credentials"):
            pacs.process(real.url, bundle, jobs=tmp_path / "j.sqlite", creds=wrong, progress=False)
    assert pacs.JobTable(tmp_path / "j.sqlite").count() == 0


def test_credentials_come_from_a_file_or_the_environment(tmp_path, monkeypatch) -> None:
    for var in ("MEDASSIST_PACS_USER", "MEDASSIST_PACS_PASSWORD", "MEDASSIST_PACS_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    assert pacs.credentials(None) == {}
    monkeypatch.setenv("MEDASSIST_PACS_TOKEN", "t0k")
    assert pacs.credentials(None) == {"token": "t0k"}
    f = tmp_path / "pacs.json"
    f.write_text(json.dumps({"username": "u", "password": "p", "other": "x"}))
    assert pacs.credentials(str(f)) == {"username": "u", "password": "p"}
    f.write_text("user:pass")
    with pytest.raises(MedAssistError, match="is not JSON"):
        pacs.credentials(str(f))
    f.write_text(json.dumps({"username": "u"}))
    with pytest.raises(MedAssistError, match='needs "username" and "password"'):
        pacs.credentials(str(f))
    with pytest.raises(MedAssistError, match="does not exist"):
        pacs.credentials(str(tmp_path / "missing.json"))
    with pytest.raises(MedAssistError, match="must start with http"):
        pacs.client("ftp://pacs")


def test_a_segmentation_bundle_stores_seg_and_sr_series_in_each_study(tmp_path) -> None:
    """Two photographs (OP) in two studies through a segmentation bundle: a SEG and an SR series in each study, found
    through the PACS's own QIDO-RS, the SEG referencing its source."""
    from serve_bundles import make_segmentation_bundle

    bundle = load_bundle(make_segmentation_bundle(tmp_path / "lesions"))
    rng = np.random.default_rng(0)
    photos = [
        image_instance(
            rng.integers(0, 256, (48, 40), dtype=np.uint8),
            patient_id=f"P{i}",
            study_uid=uid(),
            series_uid=uid(),
            sop_uid=uid(),
            modality="OP",
        )
        for i in range(2)
    ]
    with orthanc(tmp_path / "orthanc") as server:
        web = pacs.client(server.url, server.creds)
        web.store_instances(photos)
        summary = pacs.process(server.url, bundle, jobs=tmp_path / "j.sqlite", creds=server.creds, progress=False)
        assert (summary.processed, summary.stored) == (2, 4)
        for photo in photos:
            series = web.search_for_series(study_instance_uid=photo.StudyInstanceUID)
            assert sorted(s["00080060"]["Value"][0] for s in series) == ["OP", "SEG", "SR"]
            (seg_series,) = [s for s in series if s["00080060"]["Value"][0] == "SEG"]
            (seg,) = web.search_for_instances(
                study_instance_uid=photo.StudyInstanceUID, series_instance_uid=seg_series["0020000E"]["Value"][0]
            )
            got = web.retrieve_instance(
                photo.StudyInstanceUID, seg_series["0020000E"]["Value"][0], seg["00080018"]["Value"][0]
            )
            assert (
                got.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
                == photo.SOPInstanceUID
            )
