"""A real PACS for the DICOMweb tests: Orthanc with its DICOMweb plugin (Debian's ``orthanc`` and
``orthanc-dicomweb``), started on 127.0.0.1 with a temporary configuration and storage, a user and a password, and
stopped after."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER, PASSWORD = "medassist", "pacs-secret-4711"


@dataclass
class Pacs:
    url: str  # the DICOMweb root
    rest: str  # Orthanc's own REST API
    process: subprocess.Popen
    folder: Path

    @property
    def creds(self) -> dict[str, str]:
        return {"username": USER, "password": PASSWORD}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def orthanc(folder: Path) -> Iterator[Pacs]:
    """Orthanc listening on a free port of 127.0.0.1 until the block ends."""
    import requests

    exe = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
    if exe is None or not PLUGIN.exists():
        pytest.skip("Orthanc and its DICOMweb plugin are not installed (Debian: orthanc orthanc-dicomweb)")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {
        "Name": "medassist-test",
        "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"),
        "HttpPort": port,
        "DicomServerEnabled": False,
        "DicomPort": free_port(),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [str(PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "StorageCompression": False,
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = open(folder / "orthanc.log", "wb")
    proc = subprocess.Popen([exe, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    rest = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if requests.get(f"{rest}/system", auth=(USER, PASSWORD), timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None:
                pytest.fail(f"Orthanc stopped at start: {(folder / 'orthanc.log').read_text()[-2000:]}")
            time.sleep(0.05)
        else:
            pytest.fail("Orthanc did not answer within 10 s")
        yield Pacs(f"{rest}/dicom-web", rest, proc, folder)
    finally:
        proc.kill()  # its storage is a temporary folder: nothing to shut down cleanly (a clean stop takes 2.5 s)
        proc.wait(timeout=10)
        log.close()
