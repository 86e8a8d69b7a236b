"""Downloads against a local HTTP server: good, corrupt, truncated, failing and unreachable."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from medassist.data import medmnist
from medassist.data.download import download_file, md5sum
from medassist.errors import ChecksumError, DataError

GOOD = b"medassist test payload\n" * 5000
GOOD_MD5 = hashlib.md5(GOOD).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files`` by path; "/truncated" promises more bytes than it sends, "/slow" stalls."""

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        files: dict[str, bytes] = self.server.files  # type: ignore[attr-defined]
        if path == "/truncated":
            self.send_response(200)
            self.send_header("Content-Length", str(len(GOOD)))
            self.end_headers()
            self.wfile.write(GOOD[:1000])
            self.wfile.flush()
            self.close_connection = True
            return
        if path == "/slow":
            time.sleep(1.0)
        if path not in files:
            self.send_error(404, "Not Found")
            return
        body = files[path]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, dict[str, bytes]]]:
    """A local HTTP server on a free port; yields (base URL, path -> body dict to fill)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files = {"/good.bin": GOOD, "/corrupt.bin": GOOD[:-1] + b"X", "/slow": GOOD}  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.files  # type: ignore[attr-defined]
    finally:
        httpd.shutdown()
        httpd.server_close()


def _closed_port() -> int:
    """Return a port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _assert_clean(folder: Path) -> None:
    """Nothing, not even a temporary file, may remain after a failed download."""
    assert list(folder.iterdir()) == []


def test_md5sum_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(GOOD)
    assert md5sum(path, chunk_size=4096) == GOOD_MD5


def test_good_download(server: tuple[str, dict[str, bytes]], tmp_path: Path) -> None:
    base, _ = server
    dest = tmp_path / "sub" / "good.bin"
    out = download_file(f"{base}/good.bin", dest, md5=GOOD_MD5, progress=False)
    assert out == dest
    assert dest.read_bytes() == GOOD
    assert [p.name for p in dest.parent.iterdir()] == ["good.bin"]


def test_corrupt_download_raises_checksum_error(server: tuple[str, dict[str, bytes]], tmp_path: Path) -> None:
    base, files = server
    dest = tmp_path / "corrupt.bin"
    with pytest.raises(ChecksumError) as info:
        download_file(f"{base}/corrupt.bin", dest, md5=GOOD_MD5, progress=False)
    message = str(info.value)
    assert GOOD_MD5 in message
    assert hashlib.md5(files["/corrupt.bin"]).hexdigest() in message
    assert "corrupt.bin" in message
    assert not dest.exists()
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".*.part"))
    _assert_clean(tmp_path)


def test_truncated_download_raises_data_error(server: tuple[str, dict[str, bytes]], tmp_path: Path) -> None:
    base, _ = server
    dest = tmp_path / "truncated.bin"
    with pytest.raises(DataError) as info:
        download_file(f"{base}/truncated", dest, progress=False)
    message = str(info.value)
    assert "truncated" in message and "bytes" in message
    assert f"{base}/truncated" in message
    assert not isinstance(info.value, ChecksumError)
    _assert_clean(tmp_path)


def test_http_error_raises_data_error(server: tuple[str, dict[str, bytes]], tmp_path: Path) -> None:
    base, _ = server
    dest = tmp_path / "medmnist" / "missing.npz"
    with pytest.raises(DataError) as info:
        download_file(f"{base}/missing.npz", dest, progress=False)
    message = str(info.value)
    assert "404" in message and "missing.npz" in message and str(dest) in message
    _assert_clean(dest.parent)


def test_timeout_raises_data_error(server: tuple[str, dict[str, bytes]], tmp_path: Path) -> None:
    base, _ = server
    dest = tmp_path / "slow.bin"
    with pytest.raises(DataError) as info:
        download_file(f"{base}/slow", dest, timeout=0.2, progress=False)
    assert "download it by hand" in str(info.value)
    _assert_clean(tmp_path)


def test_unreachable_url_names_file_and_destination(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/pneumoniamnist.npz"
    dest = tmp_path / "medmnist" / "pneumoniamnist.npz"
    with pytest.raises(DataError) as info:
        download_file(url, dest, timeout=5, progress=False)
    message = str(info.value)
    assert "pneumoniamnist.npz" in message
    assert url in message
    assert f"download it by hand and put it at {dest}" in message
    assert "MEDASSIST_DATA_DIR" in message and "medmnist/pneumoniamnist.npz" in message
    assert not dest.exists()
    _assert_clean(dest.parent)


def _tiny_npz(n_samples: dict[str, int], seed: int = 0, side: int = 28) -> bytes:
    """A tiny grayscale binary-class file in the official MedMNIST layout."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in n_samples.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, size=(n, side, side), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).astype(np.uint8).reshape(n, 1)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.fixture
def tiny_pneumonia(server: tuple[str, dict[str, bytes]], monkeypatch: pytest.MonkeyPatch) -> bytes:
    """Serve a tiny pneumoniamnist.npz and point the INFO entry and URL template at it."""
    base, files = server
    n_samples = {"train": 6, "val": 4, "test": 4}
    payload = _tiny_npz(n_samples)
    files["/files/pneumoniamnist.npz"] = payload
    monkeypatch.setattr(medmnist, "ZENODO_URL", f"{base}/files/{{name}}.npz?download=1")
    tiny = dataclasses.replace(
        medmnist.INFO["pneumoniamnist"], n_samples=n_samples, md5=hashlib.md5(payload).hexdigest()
    )
    monkeypatch.setitem(medmnist.INFO, "pneumoniamnist", tiny)
    return payload


def test_load_medmnist_downloads_missing_file(tiny_pneumonia: bytes, tmp_path: Path) -> None:
    data = medmnist.load_medmnist("pneumoniamnist", data_dir=tmp_path, progress=False)
    path = tmp_path / "medmnist" / "pneumoniamnist.npz"
    assert path.read_bytes() == tiny_pneumonia
    assert data.info["md5_verified"] is True
    assert [len(data.splits[s]) for s in ("train", "val", "test")] == [6, 4, 4]
    assert data.splits["train"].images.shape == (6, 1, 28, 28)
    assert data.class_names == ["normal", "pneumonia"]
    # The second load reads the file already present.
    again = medmnist.load_medmnist("pneumoniamnist", data_dir=tmp_path, progress=False)
    assert np.array_equal(again.splits["test"].images, data.splits["test"].images)


def test_load_medmnist_corrupt_download_leaves_nothing(
    tiny_pneumonia: bytes, server: tuple[str, dict[str, bytes]], tmp_path: Path
) -> None:
    _, files = server
    files["/files/pneumoniamnist.npz"] = tiny_pneumonia[:-10] + b"0123456789"
    with pytest.raises(ChecksumError):
        medmnist.load_medmnist("pneumoniamnist", data_dir=tmp_path, progress=False)
    _assert_clean(tmp_path / "medmnist")


def test_load_medmnist_failed_download_names_file_and_place(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(medmnist, "ZENODO_URL", f"http://127.0.0.1:{_closed_port()}/{{name}}.npz")
    with pytest.raises(DataError) as info:
        medmnist.load_medmnist("breastmnist", data_dir=tmp_path, progress=False)
    message = str(info.value)
    assert "breastmnist.npz" in message
    assert str(tmp_path / "medmnist" / "breastmnist.npz") in message


def test_heart_disease_downloads_each_site_md5_checked_and_refuses_a_changed_file(
    server, real_data_dir: Path, tmp_path: Path
) -> None:
    from medassist.data.heart_disease import SITES, SUBDIR, load_heart_disease

    base, files = server
    for name, _, _ in SITES.values():
        files[f"/uci/{name}"] = (real_data_dir / SUBDIR / name).read_bytes()
    with pytest.raises(DataError, match=r"processed.cleveland.data is not at .*medassist data fetch heart_disease"):
        load_heart_disease(tmp_path / "offline")
    table = load_heart_disease(tmp_path / "ok", download=True, url=f"{base}/uci/", progress=False)
    assert len(table) == 920 and table.groupby("site").size().to_dict() == {
        "Cleveland": 303,
        "Hungary": 294,
        "Switzerland": 123,
        "VA Long Beach": 200,
    }
    files["/uci/processed.va.data"] = files["/uci/processed.va.data"][:-10] + b"9,9,9,9,9\n"
    with pytest.raises(ChecksumError, match="processed.va.data .* has md5 .*Nothing was saved"):
        load_heart_disease(tmp_path / "bad", download=True, url=f"{base}/uci/", progress=False)
    assert not (tmp_path / "bad" / SUBDIR / "processed.va.data").exists()


def test_medmnist_plus_sizes_download_their_own_file_md5_checked(
    tiny_pneumonia: bytes, server: tuple[str, dict[str, bytes]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """MedMNIST+ at 64 px: its own file name, address and MD5; a file that is not the release's is refused."""
    _, files = server
    payload = _tiny_npz({"train": 6, "val": 4, "test": 4}, side=64)
    files["/files/pneumoniamnist_64.npz"] = payload
    official = medmnist.MD5_LARGER["pneumoniamnist"]
    with pytest.raises(ChecksumError, match=f"expected md5 {official[0]}"):  # the release's MD5, not this file's
        medmnist.load_medmnist("pneumoniamnist", data_dir=tmp_path, progress=False, size=64)
    _assert_clean(tmp_path / "medmnist")
    monkeypatch.setitem(medmnist.MD5_LARGER, "pneumoniamnist", (hashlib.md5(payload).hexdigest(), *official[1:]))
    data = medmnist.load_medmnist("pneumoniamnist", data_dir=tmp_path, progress=False, size=64)
    assert data.splits["train"].images.shape == (6, 1, 64, 64) and data.info["size"] == 64
    assert (tmp_path / "medmnist" / "pneumoniamnist_64.npz").read_bytes() == payload
    assert (tmp_path / "medmnist" / "pneumoniamnist.npz").exists() is False  # the 28-px file is another file
    with pytest.raises(DataError, match=r"pneumoniamnist_128.npz is not at .*pneumoniamnist_128.npz\?download=1"):
        medmnist.load_medmnist("pneumoniamnist", data_dir=tmp_path, download=False, size=128)
    with pytest.raises(DataError, match="MedMNIST ships images of 28, 64, 128, 224 px, not 96"):
        medmnist.load_medmnist("pneumoniamnist", data_dir=tmp_path, size=96)
    (tmp_path / "medmnist" / "pneumoniamnist_128.npz").write_bytes(payload)  # a 64-px file under a 128-px name
    monkeypatch.setitem(medmnist.MD5_LARGER, "pneumoniamnist", (official[0], hashlib.md5(payload).hexdigest(), ""))
    with pytest.raises(DataError, match="are 64x64 px, not the 128x128 of its name"):
        medmnist.load_medmnist("pneumoniamnist", data_dir=tmp_path, size=128)


def test_the_image_and_synth_studies_read_medmnist_at_their_image_size(monkeypatch: pytest.MonkeyPatch) -> None:
    from medassist.errors import MedAssistError
    from medassist.studies.image import load_data
    from medassist.studies.image_config import ImageStudyConfig
    from medassist.studies.synth import _load
    from medassist.studies.synth_config import SynthStudyConfig

    seen: list[int] = []

    def reader(name: str, **kwargs: object) -> None:
        seen.append(int(kwargs["size"]))  # type: ignore[arg-type]
        raise MedAssistError("read")

    monkeypatch.setattr(medmnist, "load_medmnist", reader)
    for load, cfg in ((load_data, ImageStudyConfig(image_size=128)), (_load, SynthStudyConfig(image_size=64))):
        with pytest.raises(MedAssistError, match="read"):
            load(cfg)
    assert seen == [128, 64]
