"""A bundle's result as a FHIR R4 ``DiagnosticReport``: the model as a contained ``Device``, one contained
``Observation`` per finding, class or counted object, and a reference to the DICOM study it was computed from.

Every report is validated with the ``fhir.resources`` package before it is returned. Its default classes are FHIR R5;
its ``R4B`` subpackage (FHIR 4.3) is used instead, as the release whose DiagnosticReport, Observation and Device carry
the same elements as R4 (4.0.1), the version hospitals' FHIR servers speak.

The report holds no patient data beyond the study UID (no subject: the service does not know the patient) and never a
report's text. Its category is the HL7 v2-0074 section "RAD" for every kind of result, blood smears included.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from medassist.deploy.detection import Detection
from medassist.deploy.prediction import Prediction
from medassist.deploy.segmentation import Segmentation
from medassist.errors import MedAssistError
from medassist.hospital.codes import term

FHIR_JSON = "application/fhir+json"
KINDS = ("image", "text", "segmentation", "detection")
CLASSIFICATION_TASKS = ("multi-class", "multi-label")
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
SECTION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0074"
INTERPRETATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
REFERRED_URL = "urn:medassist:fhir:referred"
DEVICE_NOTE = "medassist is research software, not a medical device: a clinician must review its output."
_INTERPRETATION = {"POS": "Positive", "NEG": "Negative", "IND": "Indeterminate"}
_REFERRED_WHY = {
    "multi-label": "probability inside the finding's uncertainty band, or a finding validation could not assess",
    "multi-class": "probability below the class's answer cut, or a class validation could not assess",
}


def _quantity(value: float, unit: str, code: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": code}


def _concept(label: str) -> dict[str, Any]:
    return {"coding": [term(label).fhir()], "text": label}


def _finding(
    label: str, value: dict[str, Any], interpretation: str, referred: str = "", components: list | None = None
) -> dict[str, Any]:
    coding = {"system": INTERPRETATION_SYSTEM, "code": interpretation, "display": _INTERPRETATION[interpretation]}
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "extension": [{"url": REFERRED_URL, "valueBoolean": bool(referred)}],
        "status": "preliminary",
        "code": _concept(label),
        "valueQuantity": value,
        "interpretation": [{"coding": [coding]}],
        "note": [{"text": f"referred to a clinician: {referred}" if referred else "not referred to a clinician"}],
        "device": {"reference": "#device"},
    }
    if components:
        obs["component"] = components
    return obs


def _check_labels(kind: str, labels: list[str], given: list[str]) -> None:
    if sorted(labels) != sorted(given):
        raise MedAssistError(f"a {kind} result for labels {sorted(given)} does not match the bundle's labels {labels}")


def _classification(result: Prediction, task: str | None, labels: list[str]) -> tuple[list[dict], list[str], str]:
    if task not in CLASSIFICATION_TASKS:
        raise MedAssistError(f"a classification task must be one of {CLASSIFICATION_TASKS}, got {task!r}")
    if isinstance(result.label, str) != (task == "multi-class"):
        need = "a single label" if task == "multi-class" else "a list of labels"
        raise MedAssistError(f"a {task} prediction must have {need}, got {result.label!r}")
    _check_labels(task, labels, list(result.probabilities))
    predicted = [result.label] if task == "multi-class" else list(result.label)
    whole_case = result.abstained and not result.referred
    findings = []
    for label in labels:
        if whole_case:
            referred = f"the whole case ({result.reason or 'the bundle abstained'})"
        else:
            referred = _REFERRED_WHY[task] if label in result.referred else ""
        code = "IND" if referred else "POS" if label in predicted else "NEG"
        findings.append(_finding(label, _quantity(result.probabilities[label], "probability", "1"), code, referred))
    said = ", ".join(f"{label} (p={result.probabilities[label]:.2f})" for label in predicted) or "no finding"
    sent = "the whole case" if whole_case else ", ".join(result.referred) or "none"
    return findings, predicted, f"{said}; referred to a clinician: {sent}"


def _segmentation(result: Segmentation, labels: list[str]) -> tuple[list[dict], list[str], str]:
    _check_labels("segmentation", labels, list(result.labels))
    findings, parts = [], []
    for label in result.labels[1:]:
        pixels = int(result.area_pixels[label])
        in_pixels = _quantity(pixels, "pixel", "{pixel}")
        value, components, part = in_pixels, [], f"{label}: {pixels} pixels"
        if result.area_mm2 is not None:
            mm2 = float(result.area_mm2[label])
            value, part = _quantity(mm2, "mm2", "mm2"), f"{part} ({mm2:.2f} mm2)"
            components = [{"code": {"text": "area in the image's pixels"}, "valueQuantity": in_pixels}]
        findings.append(_finding(label, value, "POS" if pixels > 0 else "NEG", components=components))
        parts.append(part)
    present = [label for label in result.labels[1:] if result.area_pixels[label] > 0]
    return findings, present, "segmented area: " + "; ".join(parts)


def _detection(result: Detection, labels: list[str]) -> tuple[list[dict], list[str], str]:
    _check_labels("detection", labels, list(result.counts))
    findings = []
    for label in labels:
        count = int(result.counts[label])
        threshold = {
            "code": {"text": "score threshold"},
            "valueQuantity": _quantity(float(result.thresholds[label]), "score", "1"),
        }
        findings.append(
            _finding(label, _quantity(count, "count", "{count}"), "POS" if count else "NEG", components=[threshold])
        )
    present = [label for label in labels if result.counts[label] > 0]
    counts = ", ".join(f"{label}: {result.counts[label]}" for label in labels)
    return findings, present, f"counted (score at least each class's threshold): {counts}"


def _instant(issued: datetime | None) -> str:
    when = datetime.now(UTC) if issued is None else issued
    if when.tzinfo is None:
        raise MedAssistError(f"issued must carry a time zone (e.g. datetime.now(UTC)), got the naive {when}")
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def diagnostic_report(
    result: Prediction | Segmentation | Detection,
    *,
    kind: str,
    task: str | None,
    model_name: str,
    model_version: str,
    labels: list[str],
    study_uid: str | None = None,
    issued: datetime | None = None,
    validate: bool = True,
) -> dict[str, Any]:
    """A bundle's result as a validated FHIR R4 ``DiagnosticReport``, JSON-ready.

    Args:
        result: what the bundle returned for one input.
        kind: the bundle's kind: "image", "text", "segmentation" or "detection".
        task: the bundle's task ("multi-class" or "multi-label" for image and text bundles; ignored otherwise).
        model_name: the bundle's name.
        model_version: the bundle's version (its model file's sha256).
        labels: the bundle's labels, in its order (segmentation: background first).
        study_uid: the DICOM Study Instance UID of the input, when it was a DICOM.
        issued: when the result was made (time-zone aware); now when None.
        validate: check the report with fhir.resources before it is returned (about 0.3 ms). The service turns it
            off on its hot path: the builder is the same for every answer, and the tests validate each of its
            branches (every kind, referred or not, with and without a study).

    Returns:
        The DiagnosticReport, status "preliminary", with the model as a contained Device and one contained
        Observation per class, finding or counted class.

    Raises:
        MedAssistError: the kind, task, labels, study UID or result do not fit together.
    """
    expected = {"image": Prediction, "text": Prediction, "segmentation": Segmentation, "detection": Detection}
    if kind not in expected:
        raise MedAssistError(f"unknown bundle kind {kind!r}: expected one of {KINDS}")
    if not isinstance(result, expected[kind]):
        raise MedAssistError(f"a {kind} bundle answers with a {expected[kind].__name__}, got {type(result).__name__}")
    if kind == "segmentation":
        findings, present, conclusion = _segmentation(result, list(labels))
    elif kind == "detection":
        findings, present, conclusion = _detection(result, list(labels))
    else:
        findings, present, conclusion = _classification(result, task, list(labels))
    loinc = (
        ("18782-3", "Radiology Study observation (narrative)")
        if kind == "text"
        else ("18748-4", "Diagnostic imaging study")
    )
    device = {
        "resourceType": "Device",
        "id": "device",
        "deviceName": [{"name": model_name, "type": "model-name"}],
        "type": {"text": "AI model (medassist bundle)"},
        "version": [{"value": model_version}],
        "note": [{"text": DEVICE_NOTE}],
    }
    findings = [{"resourceType": "Observation", "id": f"obs-{i}", **obs} for i, obs in enumerate(findings, start=1)]
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "contained": [device, *findings],
        "status": "preliminary",
        "category": [{"coding": [{"system": SECTION_SYSTEM, "code": "RAD", "display": "Radiology"}]}],
        "code": {
            "coding": [{"system": LOINC, "code": loinc[0], "display": loinc[1]}],
            "text": f"medassist {kind} result",
        },
        "issued": _instant(issued),
        "result": [{"reference": f"#{obs['id']}", "display": obs["code"]["text"]} for obs in findings],
        "conclusion": conclusion,
    }
    if present:
        report["conclusionCode"] = [_concept(label) for label in present]
    if study_uid is not None:
        if not re.fullmatch(r"[0-9]+(\.[0-9]+)*", study_uid) or len(study_uid) > 64:
            raise MedAssistError(f"study_uid {study_uid!r} is not a DICOM UID (digits and dots, at most 64 characters)")
        report["imagingStudy"] = [
            {
                "identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{study_uid}"},
                "display": "the imaging study the result was computed from",
            }
        ]
    if validate:
        from fhir.resources.R4B.diagnosticreport import DiagnosticReport

        DiagnosticReport.model_validate(report)
    return report
