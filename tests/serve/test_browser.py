"""The web page in a real browser: Debian's headless Chromium driven by Playwright, against `medassist serve` run as
a command with an API key file. It enters a key (a wrong one first), uploads a real PneumoniaMNIST test image saved as
PNG (and a DICOM with a patient name), pastes a report, checks what the page shows, writes a screenshot of each, and
scans the server's whole log for what it sent and for the key."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from serve_bundles import (
    IMAGE_LABELS,
    REPORT,
    TEXT_LABELS,
    dicom_bytes,
    make_image_bundle,
    make_segmentation_bundle,
    make_text_bundle,
)

from medassist.serve.auth import add_key

CHROMIUM = "/usr/bin/chromium"
PATIENT = "Roe^Richard^Browser"
SENT_REPORT = "Richard Roe, seen today: " + REPORT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path: Path):
    """`medassist serve` on two tiny bundles with an API key file, its stdout and stderr in one log file."""
    image, text = make_image_bundle(tmp_path / "xray"), make_text_bundle(tmp_path / "reports")
    key = add_key(tmp_path / "keys.txt", "browser-test")
    port = _free_port()
    log = tmp_path / "server.log"
    lesions = make_segmentation_bundle(tmp_path / "lesions")
    cmd = [sys.executable, "-m", "medassist.cli", "serve", str(image), str(text), str(lesions), "--port", str(port)]
    cmd += ["--api-keys", str(tmp_path / "keys.txt")]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the server did not start: {log.read_text()}")
            time.sleep(0.2)
        yield url, log, key
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.realdata
def test_page_in_chromium(server, real_data_dir: Path, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} is missing: `make system-packages` installs Debian's chromium")
    from PIL import Image

    url, log, key = server
    test = np.load(real_data_dir / "medmnist" / "pneumoniamnist.npz")["test_images"]
    xray = tmp_path / "pneumoniamnist-test-0.png"
    Image.fromarray(test[0]).save(xray)
    dicom = tmp_path / "scan.dcm"
    dicom.write_bytes(dicom_bytes(test[1], patient=PATIENT))

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(url)
            sync_api.expect(page.locator("#key-panel")).to_be_visible()  # the page asks for a key first
            page.fill("#api-key", "mdk_not-a-key")
            page.click("#key-submit")
            sync_api.expect(page.locator("#key-message")).to_contain_text("refused")
            page.fill("#api-key", key)
            page.keyboard.press("Enter")
            sync_api.expect(page.locator("#image-model option")).to_have_count(1)
            sync_api.expect(page.locator("#key-panel")).to_be_hidden()
            stored = page.evaluate("() => [sessionStorage.length, localStorage.length, document.cookie]")
            assert stored == [1, 0, ""]  # the key in this tab's session storage only
            assert "Not a medical device" in page.locator("#notice").inner_text()
            sync_api.expect(page.locator("#cards .card")).to_have_count(3)
            assert page.locator("#cards .card h1").first.inner_text().startswith("Model card")  # HTML, not Markdown
            assert "# Model card" not in page.locator("#cards").inner_text()

            page.set_input_files("#image-file", str(xray))
            page.focus("#image-submit")
            page.keyboard.press("Enter")  # the keyboard alone submits
            sync_api.expect(page.locator("#image-result")).to_have_attribute("data-done", "1")
            assert page.locator("#image-label").inner_text() in IMAGE_LABELS
            bars = page.locator("#image-bars .bar")
            sync_api.expect(bars).to_have_count(2)
            widths = [float(bars.nth(i).get_attribute("aria-valuenow")) for i in range(2)]
            assert abs(sum(widths) - 100) < 0.2
            heat = page.locator("#image-heatmap")
            sync_api.expect(heat).to_be_visible()
            assert heat.evaluate("img => img.complete && img.naturalWidth") == 112
            page.screenshot(path=str(tmp_path / "image.png"), full_page=True)

            page.set_input_files("#image-file", str(dicom))
            page.click("#image-submit")
            sync_api.expect(page.locator("#image-meta")).to_contain_text("ms")
            assert page.locator("#image-label").inner_text() in IMAGE_LABELS
            assert "Roe" not in page.content()

            page.set_input_files("#segment-file", str(xray))  # the outline over the uploaded image
            page.click("#segment-submit")
            sync_api.expect(page.locator("#segment-result")).to_have_attribute("data-done", "1")
            assert "pixels" in page.locator("#segment-area").inner_text()
            outline = page.locator("#segment-overlay")
            assert outline.evaluate("img => img.complete && img.naturalWidth") == 28  # at the upload's own size

            page.focus("#report-text")
            page.keyboard.type(SENT_REPORT)
            page.focus("#report-submit")
            page.keyboard.press("Enter")
            sync_api.expect(page.locator("#report-result")).to_have_attribute("data-done", "1")
            sync_api.expect(page.locator("#report-bars .bar")).to_have_count(len(TEXT_LABELS))
            names = page.locator("#report-bars .bar .name").all_inner_texts()
            assert sorted(names) == sorted(TEXT_LABELS)
            present = page.locator("#report-label").inner_text()
            assert present == "none answered present" or set(present.split(", ")) <= set(TEXT_LABELS)
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "image.png").stat().st_size > 0 and (tmp_path / "report.png").stat().st_size > 0
    text = log.read_text()
    assert '"route": "/v1/images"' in text and '"route": "/v1/reports"' in text and '"/v1/segmentations"' in text
    assert '"key": "browser-test"' in text and key not in text
    for sent in (SENT_REPORT, REPORT, "Richard", "Roe", "Browser"):
        assert sent not in text, sent
