"""Download one file safely: streamed, size- and checksum-checked, and moved into place only when complete."""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from medassist.errors import ChecksumError, DataError
from medassist.utils.io import atomic_path

CHUNK_SIZE = 1 << 20
USER_AGENT = "medassist-downloader"


def md5sum(path: str | os.PathLike[str], chunk_size: int = CHUNK_SIZE) -> str:
    """Return the hex MD5 digest of a file, read in chunks so large files need little memory."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _by_hand_hint(dest: Path) -> str:
    """Tell the user how to get the file without the downloader."""
    # The data directory holds "<subfolder>/<file>" (e.g. medmnist/pneumoniamnist.npz), so name that layout.
    return (
        f"download it by hand and put it at {dest}, or point --data-dir / MEDASSIST_DATA_DIR at a folder "
        f"holding {dest.parent.name}/{dest.name}"
    )


def _content_length(response: http.client.HTTPResponse) -> int | None:
    """Return the announced body size in bytes, or None when the server did not send a usable one."""
    value = response.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _stream_to(response: http.client.HTTPResponse, out: Path, expected: int | None, desc: str, progress: bool) -> int:
    """Copy the response body into ``out`` chunk by chunk; return the number of bytes written."""
    received = 0
    with (
        open(out, "wb") as fh,
        tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, disable=not progress) as bar,
    ):
        while chunk := response.read(CHUNK_SIZE):
            fh.write(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    return received


def download_file(
    url: str,
    dest: str | os.PathLike[str],
    *,
    md5: str | None = None,
    timeout: float = 60,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest``; the file appears at ``dest`` only if it arrived whole and matches ``md5``.

    Args:
        url: where to fetch the file from.
        dest: the final path; its folder is created if needed.
        md5: the expected hex MD5 digest, or None to skip the check.
        timeout: seconds to wait for the connection and for each read.
        progress: show a progress bar in bytes.

    Returns:
        ``dest`` as a Path.

    Raises:
        DataError: the network failed, the server answered with an error, or the body was cut short.
        ChecksumError: the downloaded bytes do not match ``md5``.
    """
    dest = Path(dest)
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        # atomic_path removes the temporary file on any exception, so a failure never leaves a partial file.
        with atomic_path(dest) as tmp:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                expected = _content_length(response)
                received = _stream_to(response, tmp, expected, dest.name, progress)
            if expected is not None and received != expected:
                raise DataError(
                    f"Download of {dest.name} from {url} was truncated: received {received} bytes, expected "
                    f"{expected} bytes. Nothing was saved. Run again to retry, or {_by_hand_hint(dest)}."
                )
            if md5 is not None:
                actual = md5sum(tmp)
                if actual.lower() != md5.lower():
                    raise ChecksumError(
                        f"Downloaded {dest.name} from {url} has md5 {actual}, expected md5 {md5.lower()}; the "
                        f"download is corrupt or the file changed at the source. Nothing was saved at {dest}. "
                        f"Run again to retry, or {_by_hand_hint(dest)}."
                    )
    except urllib.error.HTTPError as exc:
        raise DataError(
            f"Could not download {dest.name} from {url}: the server answered HTTP {exc.code} {exc.reason}. "
            f"Check the address, or {_by_hand_hint(dest)}."
        ) from exc
    except http.client.IncompleteRead as exc:
        raise DataError(
            f"Download of {dest.name} from {url} was truncated: received {len(exc.partial)} bytes, "
            f"expected {exc.expected} more. Nothing was saved. Run again to retry, or {_by_hand_hint(dest)}."
        ) from exc
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise DataError(
            f"Could not download {dest.name} from {url}: {reason or type(exc).__name__}. Check your internet "
            f"connection, or {_by_hand_hint(dest)}."
        ) from exc
    return dest
