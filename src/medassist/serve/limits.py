"""What the service accepts, checked before anything is decoded: the upload's size, its type by its first bytes
(not its name), the image's dimensions (a decompression bomb is refused from its header), DICOM pixel data and
transfer syntax, the image's channels, and the report's length.

Every refusal is a :class:`Refused` with the HTTP status and a message for the client, which never holds the file's
contents, a DICOM tag value or the report's text.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medassist.errors import MedAssistError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
SUFFIX = {"png": ".png", "jpeg": ".jpg", "dicom": ".dcm"}
# Uncompressed DICOM, and the compressed syntaxes pydicom decodes: RLE by itself, JPEG, JPEG-LS and JPEG 2000 through
# the pylibjpeg plug-ins (libjpeg, openjpeg). Others (video, HTJ2K, ...) are refused by name before decoding.
DICOM_SYNTAXES = {
    "1.2.840.10008.1.2": "Implicit VR Little Endian",
    "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
    "1.2.840.10008.1.2.1.99": "Deflated Explicit VR Little Endian",
    "1.2.840.10008.1.2.2": "Explicit VR Big Endian",
    "1.2.840.10008.1.2.5": "RLE Lossless",
    "1.2.840.10008.1.2.4.50": "JPEG Baseline",
    "1.2.840.10008.1.2.4.51": "JPEG Extended",
    "1.2.840.10008.1.2.4.57": "JPEG Lossless",
    "1.2.840.10008.1.2.4.70": "JPEG Lossless SV1",
    "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless",
    "1.2.840.10008.1.2.4.81": "JPEG-LS Near-Lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 Lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
}
# Alpha or ink channels: what the model never saw, and a transparent pixel has no value to read.
REFUSED_MODES = {"RGBA": "an alpha channel", "LA": "an alpha channel", "PA": "an alpha channel", "CMYK": "CMYK ink"}


@dataclass(frozen=True)
class Limits:
    """The service's limits.

    Attributes:
        max_upload_bytes: largest uploaded file.
        max_pixels: largest image (width x height) decoded; larger headers are refused before decoding.
        max_side: longest image side in pixels.
        max_text_chars: longest report.
    """

    max_upload_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 4096 * 4096
    max_side: int = 8192
    max_text_chars: int = 20_000


class Refused(MedAssistError):
    """An input the service refuses, with the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def sniff(data: bytes) -> str | None:
    """ "png", "jpeg" or "dicom" from the file's first bytes, or None."""
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    return None


def check_upload(data: bytes, limits: Limits) -> str:
    """The upload's type, once its size, type, dimensions and (DICOM) pixel data and transfer syntax pass."""
    if len(data) > limits.max_upload_bytes:
        raise Refused(413, f"the file has {len(data):,} bytes; at most {limits.max_upload_bytes:,} are accepted")
    if not data:
        raise Refused(422, "the uploaded file is empty; send a PNG, JPEG or DICOM image")
    kind = sniff(data)
    if kind is None:
        raise Refused(
            415,
            "the uploaded file is not a PNG, JPEG or DICOM image (checked by its first bytes, not its name); "
            "send one of those",
        )
    width, height = _dicom_header(data) if kind == "dicom" else _pil_header(data, kind)
    if width * height > limits.max_pixels or max(width, height) > limits.max_side:
        raise Refused(
            413,
            f"the image is {width:,} x {height:,} pixels; at most {limits.max_pixels:,} pixels and "
            f"{limits.max_side:,} per side are decoded",
        )
    return kind


def _pil_header(data: bytes, kind: str) -> tuple[int, int]:
    """Width and height from a PNG or JPEG header, without decoding its pixels; refuses alpha and CMYK."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:  # lazy: reads the header only
            width, height, mode = im.size[0], im.size[1], im.mode
    except Image.DecompressionBombError:
        raise Refused(413, f"the {kind.upper()} image is too large to decode safely") from None
    except Exception:  # Pillow raises several types for a broken header
        raise Refused(422, f"the file starts like a {kind.upper()} but its header cannot be read") from None
    if mode in REFUSED_MODES:
        raise Refused(
            422,
            f"the image has {REFUSED_MODES[mode]} ({mode}); send a grayscale or RGB image without transparency",
        )
    return width, height


def _dicom_header(data: bytes) -> tuple[int, int]:
    """Rows and columns of a DICOM file, once it has pixel data in a supported transfer syntax."""
    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception:  # pydicom raises several types for a broken file
        raise Refused(422, "the file starts like a DICOM but cannot be read") from None
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise Refused(422, "the DICOM file has no pixel data (it is not an image); send a DICOM image")
    meta = getattr(ds, "file_meta", None)
    syntax = str(getattr(meta, "TransferSyntaxUID", "") or "")
    if syntax not in DICOM_SYNTAXES:
        name = getattr(getattr(meta, "TransferSyntaxUID", None), "name", "") or "unknown"
        raise Refused(
            415,
            f"the DICOM transfer syntax {syntax or '(none)'} ({name}) is not supported; send it uncompressed or in "
            f"one of: {', '.join(DICOM_SYNTAXES.values())}",
        )
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
    except Exception:  # missing or malformed Rows/Columns
        raise Refused(422, "the DICOM file has no valid Rows and Columns") from None
    return cols, rows


def read_image(data: bytes, kind: str, bundle: object) -> np.ndarray:
    """The upload as the model's uint8 input (C, S, S), read as ``medassist predict`` reads a file (DICOM windowing,
    resize, channels matched); a colour image for a grayscale model is refused."""
    return _read_upload(data, kind, lambda name: bundle.prepare_image_file(name))  # type: ignore[attr-defined]


def read_segmentation_image(data: bytes, kind: str, bundle: object) -> tuple[np.ndarray, tuple[float, float] | None]:
    """The upload at its own size as uint8 (C, H, W) with the model's channels, and its DICOM pixel spacing (mm)."""
    from medassist.data.image_file import pixel_spacing, read_pixels

    def read(name: str) -> tuple[np.ndarray, tuple[float, float] | None]:
        pixels = read_pixels(name)
        image = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        image = bundle._match_channels(np.ascontiguousarray(image), Path(name))  # type: ignore[attr-defined]
        return image, pixel_spacing(name)

    return _read_upload(data, kind, read)


def _read_upload(data: bytes, kind: str, read: Any) -> Any:
    """``read(path)`` of the upload written to a temporary file; a DataError becomes a 422 naming "the uploaded
    file" (never the temporary path)."""
    from medassist.errors import DataError

    fd, name = tempfile.mkstemp(suffix=SUFFIX[kind])
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            return read(name)
        except DataError as err:
            # The message names the temporary file; the client knows its upload as "the uploaded file".
            text = str(err).replace(name, "the uploaded file").replace(Path(name).name, "the uploaded file")
            raise Refused(422, text.split(" (")[0] if "is not a readable" in text else text) from None
    finally:
        os.unlink(name)


def check_text(text: object, limits: Limits) -> str:
    """The report, once it is a non-empty string of at most ``max_text_chars`` characters."""
    if not isinstance(text, str):
        raise Refused(422, "'text' must be a string holding the report")
    if not text.strip():
        raise Refused(422, "the report text is empty (or only whitespace); send the text to classify")
    if len(text) > limits.max_text_chars:
        raise Refused(413, f"the report has {len(text):,} characters; at most {limits.max_text_chars:,} are accepted")
    return text
