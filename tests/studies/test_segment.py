"""The segmentation study end to end on a generated folder (debug profile: the numbers mean nothing): run folder,
report, deploy with parity and int8, the bundle's checks, `predict` writing a mask and an overlay, and the service's
/v1/segmentations."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from medassist.cli import main
from medassist.deploy.bundle import load_bundle
from medassist.errors import DataError
from medassist.evaluate.segmentation import image_metrics

SIDE = 48


def make_folder(root: Path, n: int = 12) -> Path:
    """Images with bright discs (the lesions) and their 0/255 masks."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIDE, :SIDE]
    for i in range(n):
        mask = np.zeros((SIDE, SIDE), np.uint8)
        for _ in range(2):
            r = rng.integers(4, 10)
            cy, cx = rng.integers(r, SIDE - r, 2)
            mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 255
        image = np.clip(rng.normal(60, 20, (SIDE, SIDE)) + 0.5 * mask, 0, 255).astype(np.uint8)
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "images" / f"case{i:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"case{i:02d}_mask.png")
    return root


@pytest.fixture(scope="module")
def segment_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("seg")
    folder = make_folder(root / "data")
    argv = ["segment", "--profile", "debug", "--images", str(folder), "--out", str(root / "runs"), "--no-progress"]
    assert main(argv) == 0
    (run,) = (root / "runs").iterdir()
    return run


def test_study_writes_its_run_folder(segment_run: Path) -> None:
    m = json.loads((segment_run / "metrics.json").read_text())
    status = json.loads((segment_run / "status.json").read_text())
    assert status["kind"] == "segment" and status["status"] == "complete"
    assert set(m["units"]) == {
        "capacity-w2",
        "capacity-w4",
        "ablation-none",
        "ablation-augmentation",
        "size-0.5",
        "size-1",
    }
    assert m["chosen"] in ("capacity-w2", "capacity-w4")
    dice = m["test"]["metrics"]["dice"]
    assert 0.0 <= dice["ci_low"] <= dice["mean"] <= dice["ci_high"] <= 1.0
    per_image = pd.read_csv(segment_run / "tables" / "test_per_image.csv")
    data = json.loads((segment_run / "data.json").read_text())
    assert len(per_image) == data["sizes"]["test"] >= 1 and set(per_image.columns) >= {"dice", "iou", "hd95"}
    assert sum(data["sizes"].values()) == 12 and data["num_classes"] == 2
    report = (segment_run / "report.md").read_text()
    assert "## Analysis" in report and "## Test" in report and (segment_run / "figures/test_overlays.png").is_file()
    history = pd.read_csv(segment_run / "history" / "capacity-w2.csv")
    assert {"val_dice", "val_loss", "train_loss"} <= set(history.columns)


def test_metrics_of_one_image() -> None:
    truth = np.zeros((20, 20), np.uint8)
    truth[5:15, 5:15] = 1
    pred = np.zeros_like(truth)
    pred[5:15, 5:10] = 1  # half the square
    m = image_metrics(pred, truth, None, 2)
    assert m["dice"] == pytest.approx(2 * 50 / (50 + 100)) and m["iou"] == pytest.approx(0.5)
    assert m["sensitivity"] == pytest.approx(0.5) and m["specificity"] == 1.0 and m["area_error"] == -0.5
    assert m["hd95"] > 0
    fov = np.zeros_like(truth, dtype=bool)  # outside the field of view nothing counts
    assert image_metrics(pred, truth, fov, 2)["dice"] == 1.0


def test_deploy_predict_and_serve(segment_run: Path, tmp_path: Path, capsys) -> None:
    argv = ["deploy", "--profile", "debug", "--run", str(segment_run), "--out", str(tmp_path / "d"), "--no-progress"]
    assert main(argv) == 0
    capsys.readouterr()
    (run,) = (tmp_path / "d").iterdir()
    table = pd.read_csv(run / "tables" / "benchmark.csv").set_index("variant")
    assert list(table.index)[:3] == ["fp32 (PyTorch)", "fp32 (ONNX Runtime)", "int8 static (ONNX Runtime)"]
    assert len(table) == 5 and table.iloc[3:].size_mb.lt(table.iloc[1].size_mb).all()  # pruned, fp32 and int8
    assert table.loc["fp32 (ONNX Runtime)"].test_max_abs_prob_diff < 1e-3  # export parity
    assert (run / "report.md").read_text().startswith("# Deployment study: data segmentation (unet)")
    (run / "report.md").unlink()
    assert main(["report", str(run)]) == 0 and (run / "report.md").is_file()  # re-rendered from the run folder
    assert main(["report", str(segment_run)]) == 0
    capsys.readouterr()
    bundle = load_bundle(run / "bundle")
    assert bundle.kind == bundle.task == "segmentation" and bundle.image_shape == (SIDE, SIDE)

    # predict: a bigger image than the model's shape comes back at its own size
    big = np.zeros((96, 80), np.uint8)
    big[30:60, 20:50] = 200
    Image.fromarray(big).save(tmp_path / "x.png")
    assert main(["predict", str(run / "bundle"), str(tmp_path / "x.png"), "--out", str(tmp_path / "p"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    mask = np.asarray(Image.open(out["mask"]))
    assert mask.shape == (96, 80) and set(np.unique(mask)) <= {0, 255} and Image.open(out["overlay"]).mode == "RGB"
    assert out["area_pixels"]["foreground"] == int((mask > 0).sum()) and out["area_mm2"] is None
    with pytest.raises(DataError):
        bundle.segment_image(np.zeros((4, 8, 8), np.uint8))
    # a DICOM with its pixel spacing: the area in mm² too
    from helpers import save_dicom

    dcm = save_dicom(tmp_path / "x.dcm", big, PixelSpacing=[0.5, 0.25])
    seg = bundle.segment_image_file(dcm)
    assert seg.area_mm2["foreground"] == pytest.approx(seg.area_pixels["foreground"] * 0.125)

    from medassist.serve import create_app, load_served

    with TestClient(create_app(load_served([run / "bundle"]))) as client:
        buf = io.BytesIO()
        Image.fromarray(big).save(buf, format="PNG")
        r = client.post("/v1/segmentations", files={"file": ("x.png", buf.getvalue(), "image/png")})
        assert r.status_code == 200, r.text
        body = r.json()
        served_mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["mask_png"].split(",", 1)[1]))))
        assert served_mask.shape == (96, 80) and body["area_pixels"]["foreground"] == int((served_mask > 0).sum())
        assert body["overlay_png"].startswith("data:image/png;base64,")
        assert client.post("/v1/images", files={"file": ("x.png", buf.getvalue(), "image/png")}).status_code == 404
        assert client.get("/v1/models").json()["models"][0]["kind"] == "segmentation"
