"""FHIR R4 DiagnosticReports of every kind of result, re-validated here with fhir.resources' R4B classes."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest
from fhir.resources.R4B.diagnosticreport import DiagnosticReport

from medassist.deploy.detection import Detection
from medassist.deploy.prediction import Prediction
from medassist.deploy.segmentation import Segmentation
from medassist.errors import MedAssistError
from medassist.hospital.codes import LABEL_SYSTEM, SNOMED_SYSTEM
from medassist.hospital.fhir import FHIR_JSON, REFERRED_URL, diagnostic_report

VERSION = "ab" * 32
STUDY = "1.2.826.0.1.3680043.8.498.1"


def _report(result, **kw):
    args = {"model_name": "demo", "model_version": VERSION, "issued": datetime(2024, 5, 1, 12, tzinfo=UTC)}
    out = diagnostic_report(result, **(args | kw))
    DiagnosticReport.model_validate(json.loads(json.dumps(out)))
    return out


def _observations(report: dict) -> dict[str, dict]:
    byid = {r["id"]: r for r in report["contained"]}
    return {byid[ref["reference"][1:]]["code"]["text"]: byid[ref["reference"][1:]] for ref in report["result"]}


def _interpretation(obs: dict) -> str:
    return obs["interpretation"][0]["coding"][0]["code"]


def _referred(obs: dict) -> bool:
    (ext,) = [e for e in obs["extension"] if e["url"] == REFERRED_URL]
    return ext["valueBoolean"]


def _device(report: dict) -> dict:
    (device,) = [r for r in report["contained"] if r["resourceType"] == "Device"]
    return device


def test_multi_class_with_the_predicted_class_referred():
    labels = ["normal", "pneumonia", "effusion"]
    pred = Prediction(
        label="pneumonia",
        probabilities={"normal": 0.3, "pneumonia": 0.55, "effusion": 0.15},
        latency_ms=3.0,
        abstained=True,
        reason="uncertain: pneumonia; refer to a clinician",
        referred=["pneumonia"],
    )
    out = _report(pred, kind="image", task="multi-class", labels=labels)
    obs = _observations(out)
    assert list(obs) == labels
    assert {k: _interpretation(o) for k, o in obs.items()} == {"normal": "NEG", "pneumonia": "IND", "effusion": "NEG"}
    assert {k: o["valueQuantity"]["value"] for k, o in obs.items()} == pred.probabilities
    assert _referred(obs["pneumonia"]) and not _referred(obs["normal"])
    assert obs["pneumonia"]["note"][0]["text"].startswith("referred to a clinician")
    assert obs["pneumonia"]["code"]["coding"][0]["system"] == SNOMED_SYSTEM
    assert obs["effusion"]["code"]["coding"][0]["system"] == SNOMED_SYSTEM
    assert obs["normal"]["code"]["coding"][0]["system"] == LABEL_SYSTEM
    assert all(o["status"] == "preliminary" and o["device"] == {"reference": "#device"} for o in obs.values())
    assert out["status"] == "preliminary" and out["code"]["coding"][0]["code"] == "18748-4"
    assert out["conclusion"] == "pneumonia (p=0.55); referred to a clinician: pneumonia"
    assert out["issued"] == "2024-05-01T12:00:00.000Z"
    device = _device(out)
    assert device["version"] == [{"value": VERSION}]
    assert device["deviceName"] == [{"name": "demo", "type": "model-name"}]
    assert "not a medical device" in device["note"][0]["text"]
    assert "imagingStudy" not in out and "subject" not in out


def test_multi_class_answered_is_positive_for_its_class_only():
    pred = Prediction(label="normal", probabilities={"normal": 0.9, "pneumonia": 0.1}, latency_ms=1.0)
    out = _report(pred, kind="image", task="multi-class", labels=["normal", "pneumonia"], study_uid=STUDY)
    obs = _observations(out)
    assert [_interpretation(o) for o in obs.values()] == ["POS", "NEG"]
    assert not any(_referred(o) for o in obs.values())
    assert out["conclusionCode"][0]["coding"][0] == {"system": LABEL_SYSTEM, "code": "normal", "display": "normal"}
    (study,) = out["imagingStudy"]
    assert study["identifier"] == {"system": "urn:dicom:uid", "value": f"urn:oid:{STUDY}"}


def test_multi_label_report_findings_keep_the_report_text_out():
    text = "Large right pleural effusion. Patient John Example, 1950-01-01, bed 12."
    labels = ["effusion", "pneumonia", "normal"]
    pred = Prediction(
        label=["effusion"],
        probabilities={"effusion": 0.93, "pneumonia": 0.41, "normal": 0.02},
        latency_ms=2.0,
        abstained=True,
        reason="uncertain: pneumonia; refer to a clinician",
        referred=["pneumonia"],
    )
    out = _report(pred, kind="text", task="multi-label", labels=labels, study_uid=STUDY)
    obs = _observations(out)
    assert {k: _interpretation(o) for k, o in obs.items()} == {"effusion": "POS", "pneumonia": "IND", "normal": "NEG"}
    assert {k: o["valueQuantity"]["value"] for k, o in obs.items()} == pred.probabilities
    assert "uncertainty band" in obs["pneumonia"]["note"][0]["text"]
    assert out["code"]["coding"][0]["code"] == "18782-3"
    assert [c["text"] for c in out["conclusionCode"]] == ["effusion"]
    assert "imagingStudy" in out
    dumped = json.dumps(out)
    assert text not in dumped and "John" not in dumped


def test_multi_label_case_level_abstention_makes_every_finding_indeterminate():
    pred = Prediction(
        label=[],
        probabilities={"effusion": 0.45, "pneumonia": 0.52},
        latency_ms=2.0,
        confidence=0.02,
        abstained=True,
        reason="low confidence",
    )
    out = _report(pred, kind="text", task="multi-label", labels=["effusion", "pneumonia"])
    obs = _observations(out)
    assert [_interpretation(o) for o in obs.values()] == ["IND", "IND"]
    assert all(_referred(o) for o in obs.values())
    assert "conclusionCode" not in out
    assert out["conclusion"] == "no finding; referred to a clinician: the whole case"


@pytest.mark.parametrize("spacing", [None, 0.25])
def test_segmentation_area_in_mm2_when_known_else_pixels(spacing):
    mask = np.zeros((8, 8), np.uint8)
    mask[2:5, 2:6] = 1
    mm2 = {"vessel": 12 * spacing * spacing} if spacing else None
    seg = Segmentation(mask, ["background", "vessel"], {"vessel": 12}, 1.0, mm2)
    out = _report(seg, kind="segmentation", task="segmentation", labels=["background", "vessel"])
    (obs,) = _observations(out).values()
    assert obs["code"]["coding"][0]["system"] == SNOMED_SYSTEM
    assert _interpretation(obs) == "POS"
    if spacing:
        assert obs["valueQuantity"] == {
            "value": 0.75,
            "unit": "mm2",
            "system": "http://unitsofmeasure.org",
            "code": "mm2",
        }
        assert obs["component"][0]["valueQuantity"]["value"] == 12
        assert obs["component"][0]["valueQuantity"]["code"] == "{pixel}"
    else:
        assert obs["valueQuantity"]["value"] == 12 and obs["valueQuantity"]["code"] == "{pixel}"
        assert "component" not in obs


def test_detection_counts_per_class_with_its_threshold():
    boxes = np.array([[1, 1, 5, 5], [6, 6, 9, 9], [2, 2, 4, 4]], dtype=np.float32)
    det = Detection(
        boxes,
        ["rbc", "rbc", "wbc"],
        np.array([0.9, 0.8, 0.3]),
        {"rbc": 2, "wbc": 0},
        {"rbc": 0.5, "wbc": 0.4},
        5.0,
    )
    assert det.counted() == [0, 1]
    out = _report(det, kind="detection", task="detection", labels=["rbc", "wbc"])
    obs = _observations(out)
    assert {k: _interpretation(o) for k, o in obs.items()} == {"rbc": "POS", "wbc": "NEG"}
    assert obs["rbc"]["valueQuantity"]["value"] == 2 and obs["wbc"]["valueQuantity"]["value"] == 0
    assert obs["wbc"]["component"][0]["valueQuantity"]["value"] == 0.4
    assert "x_min" not in json.dumps(out) and "boxes" not in json.dumps(out)
    assert [c["text"] for c in out["conclusionCode"]] == ["rbc"]


def test_invalid_inputs_raise_a_clear_error():
    pred = Prediction(label="normal", probabilities={"normal": 0.9, "pneumonia": 0.1}, latency_ms=1.0)
    with pytest.raises(MedAssistError, match="unknown bundle kind 'video'"):
        _report(pred, kind="video", task="multi-class", labels=["normal", "pneumonia"])
    with pytest.raises(MedAssistError, match="answers with a Segmentation"):
        _report(pred, kind="segmentation", task=None, labels=["normal", "pneumonia"])
    with pytest.raises(MedAssistError, match="task"):
        _report(pred, kind="image", task="regression", labels=["normal", "pneumonia"])
    with pytest.raises(MedAssistError, match="bundle's labels"):
        _report(pred, kind="image", task="multi-class", labels=["normal", "effusion"])
    with pytest.raises(MedAssistError, match="not a DICOM UID"):
        _report(pred, kind="image", task="multi-class", labels=["normal", "pneumonia"], study_uid="John Example")
    with pytest.raises(MedAssistError, match="time zone"):
        _report(pred, kind="image", task="multi-class", labels=["normal", "pneumonia"], issued=datetime(2024, 1, 1))


def test_media_type():
    assert FHIR_JSON == "application/fhir+json"


def test_a_prediction_of_the_other_task_is_refused():
    pred = Prediction(label=["pneumonia"], probabilities={"normal": 0.2, "pneumonia": 0.8}, latency_ms=1.0)
    with pytest.raises(MedAssistError, match="multi-class prediction must have a single label"):
        _report(pred, kind="image", task="multi-class", labels=["normal", "pneumonia"])
