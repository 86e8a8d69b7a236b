"""`medassist predict`: a bundle's prediction of an image or a report, as text or JSON, and clear errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from bundle_helpers import IMAGE_LABELS, TEXT_LABELS, flip_byte, pixels
from PIL import Image

from helpers import save_dicom
from medassist.cli import main


def test_cli_predict_prints_label_probabilities_and_latency(image, image_bundle, tmp_path, capsys) -> None:
    x = pixels(1, seed=7)
    Image.fromarray(x[0, 0]).save(tmp_path / "xray.png")
    assert main(["predict", str(image_bundle), str(tmp_path / "xray.png"), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    expected = image.predict_images(x)[0]
    assert f"label: {expected.label}\n" in out
    lines = re.findall(r"^  (\w+)\s+([0-9.]+)$", out, flags=re.MULTILINE)
    assert [name for name, _ in lines] == [name for name, _ in expected.ranked()]  # most probable first
    assert [float(p) for _, p in lines] == pytest.approx([p for _, p in expected.ranked()], abs=1e-4)
    assert re.search(r"^latency: [0-9.]+ ms$", out, flags=re.MULTILINE)


def test_cli_predict_json(image_bundle, text_bundle, tmp_path, capsys) -> None:
    save_dicom(tmp_path / "scan.dcm", pixels(1)[0, 0])
    assert main(["predict", str(image_bundle), str(tmp_path / "scan.dcm"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["label"] in IMAGE_LABELS and out["latency_ms"] > 0 and out["input"].endswith("scan.dcm")
    assert list(out["probabilities"].values()) == sorted(out["probabilities"].values(), reverse=True)
    assert sum(out["probabilities"].values()) == pytest.approx(1.0)

    assert main(["predict", str(text_bundle), "--text", "Small effusion.", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == "multi-label" and out["threshold"] == 0.5 and isinstance(out["label"], list)
    assert set(out["probabilities"]) == set(TEXT_LABELS)


def test_cli_predict_text_file(text, text_bundle, tmp_path, capsys) -> None:
    report = tmp_path / "report.txt"
    report.write_text("Mild pulmonary edema.\n", encoding="utf-8-sig")  # a byte-order mark is fine
    assert main(["predict", str(text_bundle), str(report)]) == 0
    out = capsys.readouterr().out
    expected = text.predict_text("Mild pulmonary edema.\n")
    assert f"labels (probability >= 0.5): {', '.join(expected.label) or 'none'}\n" in out
    assert all(name in out for name in TEXT_LABELS) and "latency: " in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["report.txt"],
            r"report\.txt is not UTF-8 text \(invalid continuation byte at byte 3\); save the report as UTF-8",
        ),
        (["report.txt", "--text", "Edema."], r"give either an INPUT file or --text, not both"),
        ([], r"nothing to predict: give an INPUT file"),
        (["empty.txt"], r"empty\.txt is empty \(or only whitespace\)"),
        (["--text", " "], r"the report text is empty"),
    ],
    ids=["not UTF-8", "both", "neither", "empty file", "blank text"],
)
def test_cli_predict_text_errors(extra, message, text_bundle, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    Path("report.txt").write_bytes(b"Dr \xe9dema (latin-1)")
    Path("empty.txt").write_text("\n")
    assert main(["predict", str(text_bundle), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medassist: error: ") and re.search(message, err)


def test_cli_predict_image_errors(image_bundle, copy_of, capsys) -> None:
    assert main(["predict", str(image_bundle), "--text", "Edema."]) == 2
    assert re.search(
        r"is an image bundle; give an image file \(PNG, JPEG or DICOM\), not --text", capsys.readouterr().err
    )
    bundle = copy_of(image_bundle)
    flip_byte(bundle / "model.onnx")
    assert main(["predict", str(bundle), "x.png"]) == 2
    assert re.search(r"medassist: error: bundle .*model\.onnx does not match its SHA-256", capsys.readouterr().err)


def test_cli_predict_help(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: medassist predict") and "--json" in out and "--threads" in out
