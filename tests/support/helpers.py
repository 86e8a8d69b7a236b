"""Tiny synthetic data shared by the tests: images, a user's multi-class notes, DICOM files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medassist.data.types import ImageData, Split


def blobs(n: int, *, size: int = 12, channels: int = 1, seed: int = 0) -> Split:
    """Two classes that a small model separates quickly: class 1 has a bright square in the top-left corner."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.integers(0, 80, (n, channels, size, size)).astype(np.uint8)
    x[y == 1, :, : size // 2, : size // 2] += 150
    return Split(x, y.astype(np.int64))


def tiny_data(*, n: int = 96, size: int = 12, channels: int = 1) -> ImageData:
    return ImageData(
        name="tiny",
        class_names=["negative", "positive"],
        splits={
            "train": blobs(n, size=size, channels=channels, seed=1),
            "val": blobs(n // 2, size=size, channels=channels, seed=2),
            "test": blobs(n // 2, size=size, channels=channels, seed=3),
        },
    )


def multiclass_notes_csv(path: Path) -> Path:
    """A user's multi-class CSV with their own column names: the note's keyword decides its urgency."""
    words = {"routine": "stable chronic cough follow up", "urgent": "new fever and chest pain", "emergency": "collapse"}
    rows = []
    for i in range(150):
        cls = list(words)[i % 3]
        rows.append({"note": f"patient {i}. {words[cls]} today", "urgency": cls, "site": "A" if i % 2 else "B"})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def dicom_dataset(gray: np.ndarray, *, syntax: Any = None, pixels: bool = True, **tags: object) -> Any:
    """A one-frame MONOCHROME2 DICOM dataset of ``gray`` (H, W): 8-bit for uint8, 16-bit for (u)int16, Float Pixel
    Data for float32; ``tags`` (PatientName, PixelSpacing, ...) are set last. A compressed transfer ``syntax`` gets
    one encapsulated 8-bit frame (which a reader must refuse before decoding)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax or ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns = gray.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    if gray.dtype.kind == "f":
        ds.BitsAllocated = 32
        if pixels:
            ds.FloatPixelData = gray.astype("<f4").tobytes()
    elif gray.dtype.itemsize == 2:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1 if gray.dtype.kind == "i" else 0
        if pixels:
            ds.PixelData = gray.astype(gray.dtype.newbyteorder("<")).tobytes()
    else:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        if pixels and ds.file_meta.TransferSyntaxUID.is_compressed:
            from pydicom.encaps import encapsulate

            ds.PixelData = encapsulate([gray.tobytes()])
            ds["PixelData"].VR = "OB"
        elif pixels:
            ds.PixelData = gray.tobytes()
    for key, value in tags.items():
        setattr(ds, key, value)
    return ds


def save_dicom(path: Path, gray: np.ndarray, **tags: object) -> Path:
    """Write :func:`dicom_dataset` of ``gray`` to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dicom_dataset(gray, **tags).save_as(path, enforce_file_format=True)
    return path
