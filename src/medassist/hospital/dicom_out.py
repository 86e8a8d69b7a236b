"""A bundle's answer about a DICOM image as DICOM objects a PACS files and a viewer shows, written by highdicom:

- a segmentation as a **DICOM SEG** (binary), referencing the source instance, with the algorithm's identification
  (the bundle's name, its model's SHA-256 as the version, its kind as the family) and each segment's code;
- every answer as a **DICOM SR Measurement Report** (TID 1500): per finding, the model's probability and whether
  it is present, absent or referred to a clinician (the bundle's per-finding rule); per detected box, an image
  region with its label and score, and each class's count; per segment, its area (in mm² when the source has a
  pixel spacing) referencing the SEG.

Both copy the patient and study modules from the source (highdicom does), so that the PACS files them in the
source's study. Their UIDs are derived from the source instance's UID and the model's version: the same input and
model always give the same objects, so storing them twice replaces rather than duplicates them (what makes a
resumed PACS run safe).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medassist.errors import MedAssistError
from medassist.hospital.codes import LABEL_SCHEME, term

MANUFACTURER = "medassist"
SEG_SERIES_NUMBER = 9901
SR_SERIES_NUMBER = 9902
OVERLAY_SERIES_NUMBER = 9903
DICOM_KINDS = ("image", "segmentation", "detection")
_UNITY = ("1", "UCUM", "no units")


@dataclass(frozen=True)
class ModelIdentity:
    """The model that made a result, as a DICOM object names it.

    Attributes:
        name: the bundle's name.
        version: the SHA-256 of its model file (the first 16 hex digits are shown where DICOM limits the length).
        kind: image, segmentation, detection or text (the algorithm family).
        digest: the SHA-256 of the bundle's manifest (every file: the model, its thresholds and abstention rule);
            results' UIDs depend on it, so that a recalibrated bundle's answers are new objects.
    """

    name: str
    version: str
    kind: str
    digest: str = ""

    @classmethod
    def of(cls, bundle: Any) -> ModelIdentity:
        """The identity of a verified bundle (its manifest holds the model file's SHA-256)."""
        import hashlib

        from medassist.deploy.manifest import MANIFEST_FILE, read_manifest

        files = read_manifest(bundle.path)
        digest = hashlib.sha256((bundle.path / MANIFEST_FILE).read_bytes()).hexdigest()
        return cls(str(bundle.meta["name"]), str(files[bundle.meta["model_file"]]["sha256"]), str(bundle.kind), digest)

    @property
    def short_version(self) -> str:
        return self.version[:16]


def read_source(data: bytes | str | Path) -> Any:
    """The source DICOM instance (a pydicom Dataset) from bytes or a path, checked by :func:`check_source`.

    Raises:
        MedAssistError: not DICOM, or what :func:`check_source` refuses.
    """
    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(data) if isinstance(data, bytes) else data)
    except Exception as e:  # pydicom raises several types for a file that is not DICOM
        raise MedAssistError(f"the input is not a readable DICOM file ({type(e).__name__})") from None
    return check_source(ds)


def check_source(ds: Any) -> Any:
    """``ds`` once it is an image instance with one frame and the UIDs a result references.

    Raises:
        MedAssistError: no pixel data, several frames, or no Study/Series/SOP Instance UID.
    """
    if not any(t in ds for t in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise MedAssistError("the DICOM instance has no pixel data (it is not an image); give a DICOM image")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise MedAssistError(f"the DICOM instance has {frames} frames; medassist reads one frame per instance")
    missing = [k for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID") if k not in ds]
    if missing:
        raise MedAssistError(f"the DICOM instance lacks {', '.join(missing)}; a result cannot reference it")
    return ds


def result_uid(source: Any, model: ModelIdentity, what: str) -> str:
    """A UID that depends only on the source instance, the bundle and ``what`` (e.g. "seg-series")."""
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=[str(source.SOPInstanceUID), model.digest or model.version, what]))


def _algorithm(model: ModelIdentity) -> Any:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    return hd.AlgorithmIdentificationSequence(
        name=model.name[:64], family=codes.cid7162.ArtificialIntelligence, version=model.short_version
    )


def _category(label: str) -> Any:
    """The segment's property category: an anatomical structure, a cell, or an abnormal structure."""
    from pydicom.sr.codedict import codes

    key = label.lower()
    if any(w in key for w in ("vessel", "organ", "lung", "heart", "retina", "optic")):
        return codes.SCT.AnatomicalStructure
    if any(w in key for w in ("cell", "rbc", "wbc", "platelet")):
        return codes.SCT.Cell
    return codes.SCT.MorphologicallyAbnormalStructure


def segmentation_object(source: Any, seg: Any, model: ModelIdentity) -> Any:
    """The DICOM SEG (binary) of a :class:`~medassist.deploy.segmentation.Segmentation` of ``source``: one segment
    per foreground class, each present in the mask (a class the model did not find gets no empty frame)."""
    import highdicom as hd

    mask = np.asarray(seg.mask)
    if mask.shape != (int(source.Rows), int(source.Columns)):
        raise MedAssistError(
            f"the mask is {mask.shape[0]}x{mask.shape[1]} but the source image is {source.Rows}x{source.Columns}"
        )
    labels = list(seg.labels)[1:]
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=k,
            segment_label=name[:64],
            segmented_property_category=_category(name),
            segmented_property_type=term(name).dicom(),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=_algorithm(model),
            tracking_uid=result_uid(source, model, f"segment-{k}"),
            tracking_id=name[:64],
        )
        for k, name in enumerate(labels, start=1)
    ]
    seg_object = hd.seg.Segmentation(
        source_images=[source],
        pixel_array=mask.astype(np.uint8)[None],  # (1, H, W) of segment numbers, 0 = background
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=result_uid(source, model, "seg-series"),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=result_uid(source, model, "seg"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=model.name[:64],
        software_versions=model.short_version,
        device_serial_number=model.short_version,
        series_description=f"medassist segmentation ({model.kind})"[:64],
        content_description="segmentation by a medassist model; not a medical device"[:64],
        omit_empty_frames=False,
    )
    if "FrameOfReferenceUID" not in source:  # a projection image: its orientation is the source's (type 2C)
        seg_object.PatientOrientation = source.get("PatientOrientation", "")
    return seg_object


def _code(value: str, scheme: str, meaning: str) -> Any:
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def _finding_groups(pred: Any, labels: Sequence[str], source: Any, model: ModelIdentity) -> list[Any]:
    """Per label: its probability, present / absent / indeterminate (referred), and whether it was referred."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    present = set(pred.label) if isinstance(pred.label, list) else {pred.label}
    referred = set(pred.unanswered())
    algorithm = hd.sr.AlgorithmIdentification(name=model.name[:64], version=model.short_version)
    referred_concept = _code("referred", LABEL_SCHEME, "Referred to a clinician")
    groups = []
    for name in labels:
        concept = term(name).dicom()
        if name in referred:
            value = codes.SCT.Indeterminate
        else:
            value = codes.SCT.Present if name in present else codes.SCT.Absent
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=result_uid(source, model, f"finding-{name}"), identifier=name[:64]
                ),
                finding_type=concept,
                algorithm_id=algorithm,
                measurements=[
                    hd.sr.Measurement(
                        name=codes.DCM.Probability,
                        value=float(pred.probabilities[name]),
                        unit=_code(*_UNITY),
                        algorithm_id=algorithm,
                    )
                ],
                qualitative_evaluations=[
                    hd.sr.QualitativeEvaluation(name=concept, value=value),
                    hd.sr.QualitativeEvaluation(
                        name=referred_concept, value=codes.SCT.Yes if name in referred else codes.SCT.No
                    ),
                ],
                source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
            )
        )
    return groups


def _box_groups(found: Any, source: Any, model: ModelIdentity) -> list[Any]:
    """Per counted box: an image region (a closed polyline in the image's pixels) with its label and score; per
    class: the count."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.sr.AlgorithmIdentification(name=model.name[:64], version=model.short_version)
    groups = []
    for n, i in enumerate(found.counted(), start=1):
        x0, y0, x1, y1 = (float(v) for v in found.boxes[i])
        corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=np.float32)
        label = found.labels[i]
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=result_uid(source, model, f"box-{n}"), identifier=f"{label} {n}"[:64]
                ),
                referenced_region=hd.sr.ImageRegion(
                    graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                    graphic_data=corners,
                    source_image=hd.sr.SourceImageForRegion.from_source_image(source),
                ),
                finding_type=term(label).dicom(),
                algorithm_id=algorithm,
                measurements=[
                    hd.sr.Measurement(name=codes.DCM.Probability, value=float(found.scores[i]), unit=_code(*_UNITY))
                ],
            )
        )
    count = _code("count", LABEL_SCHEME, "Number of objects counted")
    for label, k in found.counts.items():
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=result_uid(source, model, f"count-{label}"), identifier=f"{label} count"[:64]
                ),
                finding_type=term(label).dicom(),
                algorithm_id=algorithm,
                measurements=[hd.sr.Measurement(name=count, value=float(k), unit=_code("{count}", "UCUM", "count"))],
                source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
            )
        )
    return groups


def _area_groups(seg: Any, source: Any, model: ModelIdentity) -> list[Any]:
    """Per segment: its area in pixels, and in mm² when the source has a pixel spacing, referencing the SEG."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.sr.AlgorithmIdentification(name=model.name[:64], version=model.short_version)
    groups = []
    for k, name in enumerate(list(seg.labels)[1:], start=1):
        measurements = [
            hd.sr.Measurement(
                name=_code("area-px", LABEL_SCHEME, "Area in pixels"),
                value=float(seg.area_pixels[name]),
                unit=_code("{pixels}", "UCUM", "pixels"),
                algorithm_id=algorithm,
            )
        ]
        if seg.area_mm2 is not None:
            measurements.insert(
                0,
                hd.sr.Measurement(
                    name=codes.SCT.Area,
                    value=float(seg.area_mm2[name]),
                    unit=codes.UCUM.SquareMillimeter,
                    algorithm_id=algorithm,
                ),
            )
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=result_uid(source, model, f"segment-{k}"), identifier=name[:64]
                ),
                finding_type=term(name).dicom(),
                algorithm_id=algorithm,
                measurements=measurements,
                source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
            )
        )
    return groups


def report_object(
    source: Any, result: Any, model: ModelIdentity, *, labels: Sequence[str] = (), seg_object: Any = None
) -> Any:
    """The DICOM SR Measurement Report (TID 1500, Comprehensive 3D SR) of one answer about ``source``: a
    :class:`~medassist.deploy.prediction.Prediction` (``labels``: the bundle's labels), a
    :class:`~medassist.deploy.detection.Detection` or a :class:`~medassist.deploy.segmentation.Segmentation`
    (``seg_object``: its DICOM SEG, also listed as evidence)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from medassist.deploy.detection import Detection
    from medassist.deploy.prediction import Prediction
    from medassist.deploy.segmentation import Segmentation

    if isinstance(result, Prediction):
        groups = _finding_groups(result, labels or list(result.probabilities), source, model)
    elif isinstance(result, Detection):
        groups = _box_groups(result, source, model)
    elif isinstance(result, Segmentation):
        groups = _area_groups(result, source, model)
    else:
        raise MedAssistError(f"no DICOM report for a {type(result).__name__}; give an image, detection or mask result")
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=str(result_uid(source, model, "device")),
        name=model.name[:64],
        manufacturer_name=MANUFACTURER,
        model_name=model.kind,
    )
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=groups,
    )
    evidence = [source] + ([seg_object] if seg_object is not None else [])
    return hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report[0],
        series_instance_uid=result_uid(source, model, "sr-series"),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=result_uid(source, model, "sr"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        series_description=f"medassist findings ({model.kind})"[:64],
        is_complete=True,
    )


def overlay_object(source: Any, rgb: np.ndarray, model: ModelIdentity) -> Any:
    """A Secondary Capture of the answer drawn over the image (RGB uint8, the source's size), for viewers that cannot
    show a SEG or an SR's regions; in the source's study, with the source's patient and study modules."""
    import highdicom as hd

    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[:2] != (int(source.Rows), int(source.Columns)):
        raise MedAssistError(f"the overlay must be RGB at the source's size, not {rgb.shape}")
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=rgb,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=result_uid(source, model, "overlay-series"),
        series_number=OVERLAY_SERIES_NUMBER,
        sop_instance_uid=result_uid(source, model, "overlay"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_orientation=tuple(source.get("PatientOrientation", None) or ("L", "F")),
        transfer_syntax_uid="1.2.840.10008.1.2.1",
    )
    sc.SeriesDescription = f"medassist overlay ({model.kind}); not for diagnosis"[:64]
    sc.BurnedInAnnotation = "YES"
    sc.Laterality = source.get("Laterality", "")
    return sc


def result_objects(source: Any, result: Any, model: ModelIdentity, *, labels: Sequence[str] = ()) -> list[Any]:
    """The DICOM objects of one answer: the SEG (segmentations) and the SR, in the order a PACS should store them
    (the SR references the SEG)."""
    from medassist.deploy.segmentation import Segmentation

    if model.kind not in DICOM_KINDS:
        raise MedAssistError(
            f"a {model.kind} model's answers are not about an image, so they have no DICOM SEG or SR; "
            "ask for FHIR (--fhir, or Accept: application/fhir+json) instead"
        )
    if isinstance(result, Segmentation):
        seg = segmentation_object(source, result, model)
        return [seg, report_object(source, result, model, seg_object=seg)]
    return [report_object(source, result, model, labels=labels)]


def to_bytes(ds: Any) -> bytes:
    """A DICOM object as a Part 10 file's bytes."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def write_objects(objects: Sequence[Any], folder: Path, stem: str) -> list[Path]:
    """Each object to ``folder/<stem>_<modality>.dcm`` (SEG, SR), written whole or not at all."""
    from medassist.utils.io import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for ds in objects:
        what = "overlay" if ds.SeriesNumber == OVERLAY_SERIES_NUMBER else str(ds.Modality).lower()
        path = folder / f"{stem}_{what}.dcm"
        with atomic_path(path) as tmp:
            tmp.write_bytes(to_bytes(ds))
        written.append(path)
    return written
