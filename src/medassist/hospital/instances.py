"""One DICOM instance through a bundle: the answer (a prediction, a segmentation or boxes) and the DICOM objects
that carry it back (:mod:`medassist.hospital.dicom_out`). Shared by ``medassist predict --dicom-out``, the service's
STOW-RS route and ``medassist pacs process``, so that all three answer an instance the same way."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medassist.errors import DataError, MedAssistError
from medassist.hospital.dicom_out import ModelIdentity, overlay_object, result_objects, to_bytes


@dataclass(frozen=True)
class Answered:
    """A bundle's answer about one DICOM instance.

    Attributes:
        result: the bundle's answer (Prediction, Segmentation or Detection).
        objects: the DICOM result objects (SEG and SR, or SR).
        study_uid: the source's StudyInstanceUID (where the objects belong).
        accession: the source's AccessionNumber, or None.
    """

    result: Any
    objects: list[Any]
    study_uid: str
    accession: str | None


def predict_file(bundle: Any, path: str | os.PathLike[str]) -> Any:
    """The bundle's answer about one image file, by the bundle's kind."""
    if bundle.kind == "segmentation":
        return bundle.segment_image_file(path)
    if bundle.kind == "detection":
        return bundle.detect_image_file(path)
    if bundle.kind == "image":
        return bundle.predict_image_file(path)
    raise MedAssistError(
        f"bundle {bundle.path} reads {bundle.kind}s, not images: give it a report, or give an image bundle"
    )


def answer_instance(bundle: Any, source: Any, model: ModelIdentity | None = None, *, overlay: bool = False) -> Answered:
    """Run ``bundle`` on one DICOM instance (a pydicom Dataset checked by
    :func:`~medassist.hospital.dicom_out.read_source`) and build the DICOM objects of its answer; with ``overlay``,
    also a Secondary Capture of a segmentation's outline or the counted boxes drawn over the image.

    Raises:
        MedAssistError: a text bundle, or pixels the bundle cannot read (named without the file's contents).
    """
    model = model or ModelIdentity.of(bundle)
    if bundle.kind not in ("image", "segmentation", "detection"):
        raise MedAssistError(
            f"bundle {bundle.path} is a {bundle.kind} model: it has no DICOM SEG or SR to give for an image; "
            "send the instance to an image, segmentation or detection bundle"
        )
    fd, name = tempfile.mkstemp(suffix=".dcm")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(to_bytes(source))
        try:
            result = predict_file(bundle, name)
            drawn = _drawn(result, name) if overlay else None
        except DataError as err:
            raise MedAssistError(str(err).replace(name, "the DICOM instance")) from None
    finally:
        Path(name).unlink(missing_ok=True)
    objects = result_objects(source, result, model, labels=bundle.labels)
    if drawn is not None:
        objects.append(overlay_object(source, drawn, model))
    accession = str(source.get("AccessionNumber", "") or "") or None
    return Answered(result, objects, str(source.StudyInstanceUID), accession)


def _drawn(result: Any, path: str) -> Any:
    """The answer drawn over the image at ``path`` (RGB uint8), or None for an answer that draws nothing (an image
    classification)."""
    import io

    import numpy as np
    from PIL import Image

    from medassist.data.image_file import read_pixels
    from medassist.deploy.detection import Detection, boxes_png
    from medassist.deploy.segmentation import Segmentation, overlay_outline_png

    pixels = read_pixels(path)
    image = np.ascontiguousarray(pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1))
    if isinstance(result, Segmentation):
        png = overlay_outline_png(image, result.mask)
    elif isinstance(result, Detection):
        png = boxes_png(image, result)
    else:
        return None
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def findings(result: Any) -> tuple[list[str], list[str]]:
    """The labels an answer gave (answered) and those it left to a clinician (referred), for the audit trail: no
    probabilities, no pixels. None (no answer) gives two empty lists."""
    from medassist.deploy.prediction import Prediction

    if result is None:
        return [], []
    if isinstance(result, Prediction):
        referred = result.unanswered()
        return [k for k in result.probabilities if k not in referred], referred
    if hasattr(result, "counts"):  # a Detection: every class is counted
        return list(result.counts), []
    return list(result.labels)[1:], []  # a Segmentation: every foreground class is outlined
