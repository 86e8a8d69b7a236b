"""Data readers: MedMNIST v2 by name, and the user's own images (folders, CSV, DICOM)."""

from __future__ import annotations

from medassist.data.medmnist import INFO, available, load_medmnist
from medassist.data.paths import DATA_DIR_ENV, resolve_data_dir
from medassist.data.types import ImageData, Split, validate_image_data

__all__ = [
    "DATA_DIR_ENV",
    "INFO",
    "ImageData",
    "Split",
    "available",
    "load_medmnist",
    "resolve_data_dir",
    "validate_image_data",
]
