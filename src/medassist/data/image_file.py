"""Read one image file (PNG, JPEG or DICOM) as uint8 pixels of a fixed square size.

DICOM pixels get the modality LUT, the VOI window and MONOCHROME1 inversion; high-bit-depth grayscale is min-max
scaled. Every problem the user can fix is raised as a :class:`~medassist.errors.DataError` that names the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, ImageOps
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut

from medassist.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")
DICOM_EXTENSIONS = (".dcm", ".dicom")
_NOT_AN_IMAGE = "is not a readable PNG, JPEG or DICOM image"


def load_image(path: str | os.PathLike[str], *, size: int, channels: int | None = None) -> np.ndarray:
    """Read one PNG, JPEG or DICOM file as a uint8 array of shape (C, size, size).

    DICOM pixels get the modality LUT (RescaleSlope/RescaleIntercept), then the first WindowCenter/WindowWidth
    (min-max of the image when absent), and MONOCHROME1 is inverted so bright always means high values.
    16-bit and float grayscale PNGs are min-max scaled. The image is resized to a square with bilinear resampling.

    Args:
        path: the image file.
        size: output height and width in pixels.
        channels: None keeps the file's own (1 for grayscale, 3 for colour), 1 converts to grayscale,
            3 repeats grayscale into RGB.

    Returns:
        uint8 array of shape (C, size, size).

    Raises:
        DataError: the file is missing, unreadable, not an image, or holds NaN pixel values.
    """
    check_size_channels(size, channels)
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    pixels = _read_dicom(path) if _is_dicom(path) else _read_pil(path)
    image = Image.fromarray(pixels)
    if channels == 1 and image.mode != "L":
        image = image.convert("L")
    elif channels == 3 and image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    arr = np.asarray(image, dtype=np.uint8)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr)


def read_pixels(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode one image file at its own size, as :func:`load_image` does before it converts and resizes.

    PNG, JPEG, TIFF, GIF and BMP go through Pillow (EXIF rotation applied, palettes to RGB, 16-bit grayscale
    min-max scaled); DICOM gets the modality LUT, the VOI window and MONOCHROME1 inversion.

    Args:
        path: the image file.

    Returns:
        uint8 array of shape (H, W) for grayscale or (H, W, 3) for colour.

    Raises:
        DataError: the file is missing, unreadable, not an image, or holds NaN pixel values.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    return _read_dicom(path) if _is_dicom(path) else _read_pil(path)


def is_dicom(path: str | os.PathLike[str]) -> bool:
    """True for a DICOM file: by its .dcm/.dicom extension, or by the 'DICM' magic at byte 128."""
    return _is_dicom(Path(path))


def pixel_spacing(path: str | os.PathLike[str]) -> tuple[float, float] | None:
    """The DICOM PixelSpacing of a file in mm, as (between rows, between columns).

    Args:
        path: the image file.

    Returns:
        The spacing, or None for a file that is not DICOM or a DICOM without PixelSpacing.

    Raises:
        DataError: the file is missing or unreadable, or its PixelSpacing is not two positive numbers.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    if not _is_dicom(path):
        return None
    try:
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
        value = ds.get("PixelSpacing")
    except Exception as e:  # pydicom raises many types for bad files.
        raise DataError(f"{path} {_NOT_AN_IMAGE} ({type(e).__name__}: {e}); replace or remove it.") from e
    if value is None or value == "":
        return None
    values = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    try:
        spacing = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        spacing = ()
    if len(spacing) != 2 or not all(np.isfinite(spacing)) or min(spacing) <= 0:
        raise DataError(
            f"{path} has PixelSpacing {value!r}, not two positive numbers (mm between rows, between columns); "
            "fix the tag or delete it."
        )
    return spacing[0], spacing[1]


def check_size_channels(size: int, channels: int | None) -> None:
    """Refuse a size that is not a positive whole number and channels other than None, 1 or 3."""
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise DataError(f"image size must be a positive whole number of pixels, got {size!r}.")
    if channels not in (None, 1, 3):
        raise DataError(f"channels must be 1 (grayscale), 3 (RGB) or None (keep the file's own), got {channels!r}.")


def _is_dicom(path: Path) -> bool:
    """True for DICOM by extension, or by the 'DICM' magic at byte 128 (files often lack an extension)."""
    if path.suffix.lower() in DICOM_EXTENSIONS:
        return True
    try:
        with path.open("rb") as f:
            head = f.read(132)
    except OSError as e:
        raise DataError(f"{path} {_NOT_AN_IMAGE}: {e}") from e
    return head[128:132] == b"DICM"


def _read_pil(path: Path) -> np.ndarray:
    """Decode a Pillow-readable file to uint8 (H, W) or (H, W, 3)."""
    try:
        with Image.open(path) as im:
            im.load()
            # Phone and camera JPEGs store rotation in EXIF; apply it so the pixels are upright.
            image = ImageOps.exif_transpose(im)
    except Exception as e:  # Pillow raises many types (OSError, SyntaxError, ValueError, DecompressionBombError).
        raise DataError(f"{path} {_NOT_AN_IMAGE} ({type(e).__name__}: {e}); replace or remove it.") from e
    mode = image.mode
    if mode in ("L", "RGB"):
        return np.asarray(image)
    if mode in ("1", "LA", "La"):
        return np.asarray(image.convert("L"))
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # High-bit-depth grayscale (e.g. 12-bit X-rays saved as 16-bit PNG) rarely fills the full range.
        values = np.asarray(image).astype(np.float64)
        return _min_max_uint8(values, path)
    if mode in ("P", "PA"):
        # Via RGBA so palettes with transparency convert without Pillow warnings; alpha is then dropped.
        return np.asarray(image.convert("RGBA").convert("RGB"))
    return np.asarray(image.convert("RGB"))  # RGBA, CMYK, YCbCr, LAB, HSV, ...


def _read_dicom(path: Path) -> np.ndarray:
    """Decode a DICOM file to uint8 (H, W) for grayscale or (H, W, 3) for colour."""
    try:
        ds = pydicom.dcmread(path, force=True)
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            raise DataError(f"{path} is a DICOM file without pixel data; it is not an image. Remove it.")
        raw = ds.pixel_array
    except DataError:
        raise
    except Exception as e:  # pydicom raises many types for bad files and unsupported compression.
        raise DataError(f"{path} {_NOT_AN_IMAGE} ({type(e).__name__}: {e}); replace or remove it.") from e

    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DataError(f"{path} is a multi-frame DICOM ({frames} frames); save one frame per file.")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if int(ds.get("SamplesPerPixel", 1) or 1) > 1:
        # Colour DICOM (RGB, or YBR that pydicom already converted to RGB): no windowing applies.
        if raw.dtype == np.uint8:
            return raw
        return _min_max_uint8(raw.astype(np.float64), path)
    if photometric == "PALETTE COLOR":
        raise DataError(f"{path} is a PALETTE COLOR DICOM, which is not supported; convert it to RGB or grayscale.")

    values = apply_modality_lut(raw, ds).astype(np.float64)
    _check_finite(values, path)
    center, width = _first_value(ds.get("WindowCenter")), _first_value(ds.get("WindowWidth"))
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    scaled = None
    if center is not None and width is not None:
        scaled = _window(values, center, width, function)
    out = _min_max_uint8(values, path) if scaled is None else _to_uint8(scaled)
    if photometric == "MONOCHROME1":
        out = 255 - out  # MONOCHROME1 shows the lowest value as white.
    return out


def _first_value(value: object) -> float | None:
    """The first of a possibly multi-valued DICOM number, or None when absent or empty."""
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if len(value) else None
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray | None:
    """Apply a DICOM VOI window (PS3.3 C.11.2.1.2); values in [0, 1], or None when the width is invalid."""
    if function == "SIGMOID":
        if width <= 0:
            return None
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        if width <= 0:
            return None
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    if width < 1:
        return None  # Invalid for LINEAR; the caller falls back to min-max.
    if width == 1:
        return (values > center - 0.5).astype(np.float64)
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _check_finite(values: np.ndarray, path: Path | str) -> None:
    if not np.isfinite(values).all():
        raise DataError(f"{path} has NaN or infinite pixel values; fix or remove this image.")


def _min_max_uint8(values: np.ndarray, path: Path | str) -> np.ndarray:
    """Scale ``values`` linearly so the image minimum becomes 0 and its maximum 255."""
    _check_finite(values, path)
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)  # A constant image has no contrast to keep.
    return _to_uint8((values - lo) / (hi - lo))


def _to_uint8(unit: np.ndarray) -> np.ndarray:
    return np.round(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8)
