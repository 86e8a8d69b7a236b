"""DICOM SEG and SR of real images: a DRIVE fundus photograph and a PneumoniaMNIST chest X-ray wrapped as DICOM,
answered by bundles, written by highdicom; each object passes dciodvfy (dicom3tools) without an error and reads back
through highdicom to the same content. Bad inputs are refused by name."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from serve_bundles import make_image_bundle, make_segmentation_bundle, make_text_bundle

from medassist.cli import main
from medassist.deploy.bundle import load_bundle
from medassist.deploy.detection import Detection
from medassist.errors import MedAssistError
from medassist.hospital.dicom_in import image_instance, wrap_file
from medassist.hospital.dicom_out import ModelIdentity, read_source, result_objects, write_objects
from medassist.hospital.instances import answer_instance


def uid() -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid())


def dciodvfy_errors(path: Path) -> list[str]:
    """The error lines dciodvfy reports for ``path`` (its warnings are not errors)."""
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dciodvfy is not installed (Debian: dicom3tools)")
    out = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("dicom-bundles")
    return {
        "vessels": load_bundle(make_segmentation_bundle(root / "vessels", shape=(64, 64), channels=3, label="vessel")),
        "lesions": load_bundle(make_segmentation_bundle(root / "lesions")),
        "xray": load_bundle(make_image_bundle(root / "xray", min_confidence=0.0)),
        "cautious": load_bundle(make_image_bundle(root / "cautious", min_confidence=1.01)),
        "reports": load_bundle(make_text_bundle(root / "reports")),
    }


@pytest.fixture(scope="module")
def drive_dicom(real_data_dir: Path, tmp_path_factory) -> Path:
    """DRIVE's first test photograph (565x584 RGB TIFF) as a DICOM instance."""
    out = tmp_path_factory.mktemp("drive") / "01_test.dcm"
    src = real_data_dir / "drive" / "test" / "images" / "01_test.tif"
    if not src.is_file():
        pytest.skip(f"{src} is missing")
    return wrap_file(src, out, patient_id="DRIVE-01", study_uid=uid(), series_uid=uid(), modality="OP", accession="D1")


@pytest.fixture(scope="module")
def xray_dicom(real_data_dir: Path, tmp_path_factory) -> Path:
    """A PneumoniaMNIST test chest X-ray as a CR instance."""
    image = np.load(real_data_dir / "medmnist" / "pneumoniamnist.npz")["test_images"][3]
    out = tmp_path_factory.mktemp("xray") / "cxr.dcm"
    ds = image_instance(image, patient_id="CXR-3", study_uid=uid(), series_uid=uid(), sop_uid=uid(), modality="CR")
    ds.save_as(out, enforce_file_format=True)
    return out


def test_seg_and_sr_of_a_drive_photograph_are_valid_and_read_back(bundles, drive_dicom, tmp_path) -> None:
    import highdicom as hd

    bundle = bundles["vessels"]
    source = read_source(drive_dicom)
    answered = answer_instance(bundle, source)
    seg_path, sr_path = write_objects(answered.objects, tmp_path, "01_test")
    for path in (drive_dicom, seg_path, sr_path):
        assert dciodvfy_errors(path) == [], path.name

    seg = hd.seg.segread(seg_path)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["vessel"]
    prop = seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0]
    assert (prop.CodeValue, prop.CodingSchemeDesignator) == ("59820001", "SCT")  # blood vessel, SNOMED CT
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmVersion == ModelIdentity.of(bundle).version[:16]
    assert (
        seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    )
    assert (seg.PatientID, seg.StudyInstanceUID) == ("DRIVE-01", source.StudyInstanceUID)  # the source's modules
    mask = seg.get_pixels_by_source_instance([source.SOPInstanceUID], combine_segments=True)[0]
    assert mask.shape == (584, 565) and np.array_equal(mask > 0, answered.result.mask > 0)

    sr = hd.sr.srread(sr_path)
    groups = sr.content.get_image_measurement_groups()
    assert len(groups) == 1 and groups[0].finding_type.value == "59820001"
    area = {m.name.meaning: m.value for m in groups[0].get_measurements()}
    assert area["Area in pixels"] == answered.result.area_pixels["vessel"]
    assert "Area" not in area  # DRIVE gives no pixel spacing: no area in mm²
    assert {
        str(e.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        for e in sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    } >= {source.SOPInstanceUID}


def test_sr_of_a_chest_xray_carries_each_finding_with_its_probability_and_referral(
    bundles, xray_dicom, tmp_path
) -> None:
    import highdicom as hd

    for name, referred in (("xray", False), ("cautious", True)):
        answered = answer_instance(bundles[name], read_source(xray_dicom))
        (sr_path,) = write_objects(answered.objects, tmp_path / name, "cxr")
        assert dciodvfy_errors(sr_path) == []
        sr = hd.sr.srread(sr_path)
        groups = sr.content.get_image_measurement_groups()
        pred = answered.result
        assert [g.finding_type.meaning for g in groups] == ["normal", "Pneumonia"]  # the model's label; SNOMED CT
        for g, label in zip(groups, ["normal", "pneumonia"], strict=True):
            (prob,) = g.get_measurements()
            assert prob.name.meaning == "Probability" and prob.value == pytest.approx(
                pred.probabilities[label], abs=1e-6
            )
            evaluations = {e.name.meaning: e.value.meaning for e in g.get_qualitative_evaluations()}
            assert evaluations["Referred to a clinician"] == ("Yes" if referred else "No")
            if referred:
                assert evaluations[g.finding_type.meaning] == "Indeterminate"
            else:
                assert evaluations[g.finding_type.meaning] == ("Present" if pred.label == label else "Absent")


def test_sr_of_detections_holds_each_counted_box_as_an_image_region(bundles, xray_dicom, tmp_path) -> None:
    import highdicom as hd

    found = Detection(
        boxes=np.array([[2.0, 3.0, 10.0, 12.0], [5.0, 5.0, 20.0, 25.0], [1.0, 1.0, 4.0, 4.0]]),
        labels=["WBC", "RBC", "RBC"],
        scores=np.array([0.9, 0.8, 0.1]),
        counts={"RBC": 1, "WBC": 1, "Platelets": 0},
        thresholds={"RBC": 0.5, "WBC": 0.5, "Platelets": 0.5},
        latency_ms=1.0,
    )
    source = read_source(xray_dicom)
    model = ModelIdentity("tiny cell detector", "ab" * 32, "detection")
    (sr,) = result_objects(source, found, model)
    (path,) = write_objects([sr], tmp_path, "cells")
    assert dciodvfy_errors(path) == []
    back = hd.sr.srread(path)
    regions = back.content.get_planar_roi_measurement_groups()
    assert [g.finding_type.meaning for g in regions] == ["Leukocyte", "Erythrocyte"]  # the box under 0.5: not counted
    corners = regions[0].roi.value
    assert np.allclose(corners[[0, 2]], [[2.0, 3.0], [10.0, 12.0]])
    counts = {
        g.finding_type.meaning: g.get_measurements()[0].value for g in back.content.get_image_measurement_groups()
    }
    assert counts == {"Erythrocyte": 1, "Leukocyte": 1, "Platelet": 0}


def test_area_in_mm2_when_the_source_has_a_pixel_spacing(bundles, tmp_path) -> None:
    import highdicom as hd

    image = np.random.default_rng(0).integers(0, 256, (48, 40), dtype=np.uint8)
    ds = image_instance(
        image, patient_id="P", study_uid=uid(), series_uid=uid(), sop_uid=uid(), pixel_spacing=(0.5, 0.25)
    )
    ds.save_as(tmp_path / "spaced.dcm", enforce_file_format=True)
    answered = answer_instance(bundles["lesions"], read_source(tmp_path / "spaced.dcm"))
    seg_path, sr_path = write_objects(answered.objects, tmp_path, "spaced")
    assert dciodvfy_errors(seg_path) == [] and dciodvfy_errors(sr_path) == []
    (group,) = hd.sr.srread(sr_path).content.get_image_measurement_groups()
    values = {m.name.meaning: (m.value, m.unit.value) for m in group.get_measurements()}
    assert values["Area"] == (pytest.approx(answered.result.area_pixels["lesion"] * 0.125), "mm2")
    # highdicom's reader asks a SEG's pixel measures for a Slice Thickness, which DICOM requires only with a frame of
    # reference (a projection image has none, and dciodvfy accepts the SEG without it): read back with pydicom.
    import pydicom

    seg = pydicom.dcmread(seg_path)
    assert seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing == [0.5, 0.25]
    assert np.array_equal(seg.pixel_array.astype(bool), answered.result.mask > 0)


def test_the_same_input_and_model_give_the_same_uids(bundles, xray_dicom) -> None:
    first = answer_instance(bundles["xray"], read_source(xray_dicom)).objects
    again = answer_instance(bundles["xray"], read_source(xray_dicom)).objects
    other = answer_instance(bundles["cautious"], read_source(xray_dicom)).objects
    assert [o.SOPInstanceUID for o in first] == [o.SOPInstanceUID for o in again]
    assert first[0].SOPInstanceUID != other[0].SOPInstanceUID  # another model version: other objects


def test_bad_dicom_inputs_are_refused_by_name(bundles, tmp_path) -> None:
    from pydicom.data import get_testdata_file

    with pytest.raises(MedAssistError, match="2 frames"):
        read_source(get_testdata_file("SC_rgb_rle_2frame.dcm"))
    no_pixels = image_instance(
        np.zeros((8, 8), np.uint8), patient_id="P", study_uid=uid(), series_uid=uid(), sop_uid=uid()
    )
    del no_pixels.PixelData
    no_pixels.save_as(tmp_path / "np.dcm", enforce_file_format=True)
    with pytest.raises(MedAssistError, match="no pixel data"):
        read_source(tmp_path / "np.dcm")
    with pytest.raises(MedAssistError, match="not a readable DICOM"):
        read_source(b"not a dicom file at all")
    ct = read_source(get_testdata_file("CT_small.dcm"))
    with pytest.raises(MedAssistError, match="reads texts, not images|text model"):
        answer_instance(bundles["reports"], ct)
    colour = read_source(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm"))  # JPEG baseline, decoded, but in colour
    with pytest.raises(MedAssistError, match="colour image"):
        answer_instance(bundles["xray"], colour)


@pytest.mark.parametrize("name", ["MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "MR_small_RLE.dcm"])
def test_compressed_sources_are_decoded_and_answered(bundles, name: str, tmp_path) -> None:
    from pydicom.data import get_testdata_file

    answered = answer_instance(bundles["xray"], read_source(get_testdata_file(name)))
    (path,) = write_objects(answered.objects, tmp_path, "mr")
    assert dciodvfy_errors(path) == []


def test_predict_writes_dicom_and_prints_fhir(bundles, drive_dicom, tmp_path, capsys) -> None:
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport

    out = tmp_path / "results"
    assert main(["predict", str(bundles["vessels"].path), str(drive_dicom), "--dicom-out", str(out), "--fhir"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    DiagnosticReport.model_validate(report)
    assert report["imagingStudy"][0]["identifier"]["value"] == "urn:oid:" + read_source(drive_dicom).StudyInstanceUID
    assert sorted(p.name for p in out.iterdir()) == ["01_test_seg.dcm", "01_test_sr.dcm"]
    assert "01_test_seg.dcm" in captured.err
    assert main(["predict", str(bundles["reports"].path), "--text", "Small effusion.", "--fhir"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len([r for r in report["contained"] if r["resourceType"] == "Observation"]) == 3
    assert "Small effusion" not in json.dumps(report)
    rc = main(["predict", str(bundles["reports"].path), "--text", "Small effusion.", "--dicom-out", str(out)])
    assert rc == 2 and "text bundle" in capsys.readouterr().err
    png = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(np.zeros((28, 28), np.uint8)).save(png)
    rc = main(["predict", str(bundles["xray"].path), str(png), "--dicom-out", str(out)])
    assert rc == 2 and "needs a DICOM image" in capsys.readouterr().err


def test_wrap_refuses_what_it_cannot_wrap(tmp_path) -> None:
    with pytest.raises(MedAssistError, match="uint8"):
        image_instance(np.zeros((4, 4), np.float32), patient_id="P", study_uid=uid(), series_uid=uid(), sop_uid=uid())
    with pytest.raises(MedAssistError, match="modality"):
        image_instance(
            np.zeros((4, 4), np.uint8), patient_id="P", study_uid=uid(), series_uid=uid(), sop_uid=uid(), modality="XX"
        )


def test_a_secondary_capture_of_the_outline_for_viewers_without_seg(bundles, drive_dicom, tmp_path) -> None:
    import pydicom

    source = read_source(drive_dicom)
    answered = answer_instance(bundles["vessels"], source, overlay=True)
    paths = write_objects(answered.objects, tmp_path, "01_test")
    assert [p.name for p in paths] == ["01_test_seg.dcm", "01_test_sr.dcm", "01_test_overlay.dcm"]
    assert dciodvfy_errors(paths[2]) == []
    sc = pydicom.dcmread(paths[2])
    assert (sc.StudyInstanceUID, sc.PatientID, sc.BurnedInAnnotation) == (source.StudyInstanceUID, "DRIVE-01", "YES")
    assert sc.pixel_array.shape == (584, 565, 3)
    outline = (sc.pixel_array == (230, 30, 30)).all(axis=2)  # the outline's red, where the mask has an edge
    assert outline.any() and not outline[answered.result.mask == 0].any()
    gray = image_instance(
        np.zeros((28, 28), np.uint8), patient_id="P", study_uid=uid(), series_uid=uid(), sop_uid=uid()
    )
    classified = answer_instance(bundles["xray"], gray, overlay=True).objects  # a class draws nothing: no overlay
    assert [o.Modality for o in classified] == ["SR"]
