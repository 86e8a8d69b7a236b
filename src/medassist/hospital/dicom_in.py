"""Images a PACS can hold: a PNG, JPEG or TIFF wrapped as a DICOM Secondary Capture instance (highdicom writes it),
so that images that never came from a scanner (a public data set, a photograph) can go through the same DICOM path
as those that did: uploaded to a PACS, processed, answered with SEG, SR and FHIR.

The identifiers (patient, study, accession) are the caller's; nothing here invents a patient name.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np

from medassist.errors import MedAssistError

MODALITIES = ("OT", "CR", "DX", "XC", "OP", "GM", "SM", "US")


def image_instance(
    pixels: np.ndarray,
    *,
    patient_id: str,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    modality: str = "OT",
    accession: str | None = None,
    instance_number: int = 1,
    pixel_spacing: tuple[float, float] | None = None,
    study_date: dt.date | None = None,
    patient_name: str | None = None,
) -> Any:
    """A DICOM Secondary Capture instance of uint8 pixels (H, W) grayscale or (H, W, 3) RGB.

    Raises:
        MedAssistError: pixels that are not uint8 (H, W) or (H, W, 3), or a modality not in :data:`MODALITIES`.
    """
    import highdicom as hd

    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 3)):
        raise MedAssistError(f"give uint8 pixels (H, W) or (H, W, 3), not {pixels.dtype} {pixels.shape}")
    if modality not in MODALITIES:
        raise MedAssistError(f"modality {modality!r} is not one of {', '.join(MODALITIES)}")
    day = study_date or dt.date.today()
    ds = hd.sc.SCImage(
        pixel_array=pixels,
        photometric_interpretation="MONOCHROME2" if pixels.ndim == 2 else "RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        series_number=1,
        sop_instance_uid=sop_uid,
        instance_number=instance_number,
        manufacturer="medassist",
        patient_id=patient_id,
        patient_name=patient_name,
        accession_number=accession,
        study_date=day,
        study_time=dt.time(12, 0),
        pixel_spacing=pixel_spacing,
        patient_orientation=("L", "F"),
    )
    ds.Modality = modality
    ds.Laterality = ""  # unknown: a public image rarely says which side (type 2C, present and empty)
    return ds


def wrap_file(
    path: str | Path,
    out: str | Path,
    *,
    patient_id: str,
    study_uid: str,
    series_uid: str,
    modality: str = "OT",
    accession: str | None = None,
    instance_number: int = 1,
    pixel_spacing: tuple[float, float] | None = None,
    study_date: dt.date | None = None,
) -> Path:
    """Wrap one image file (PNG, JPEG, TIFF, ...) as a DICOM instance at ``out``, written whole or not at all."""
    from pydicom.uid import generate_uid

    from medassist.data.image_file import read_pixels
    from medassist.utils.io import atomic_path

    ds = image_instance(
        read_pixels(path),
        patient_id=patient_id,
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=str(generate_uid()),
        modality=modality,
        accession=accession,
        instance_number=instance_number,
        pixel_spacing=pixel_spacing,
        study_date=study_date,
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return out
