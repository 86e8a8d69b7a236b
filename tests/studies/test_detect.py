"""The detection study: its readers (VOC, COCO, YOLO, CSV) and their refusals on generated files, BCCD as
published, the metrics on known answers, box-aware augmentation, and the study end to end (debug profile on a
generated CSV: the numbers mean nothing)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from medassist.cli import main
from medassist.data import boxes as b
from medassist.errors import DataError
from medassist.evaluate import detection as m

H, W = 64, 80
CLASSES = ["big", "small"]


def make_images(root: Path, n: int = 18) -> list[dict]:
    """RGB images with bright red squares ("big") and green dots ("small"); the last image has no object."""
    rng = np.random.default_rng(0)
    rows = []
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image = rng.integers(0, 40, (H, W, 3)).astype(np.uint8)
        name = f"img{i:02d}.png"
        objects = [] if i == n - 1 else [("big", 16), ("small", 8)]
        for label, side in objects:
            y, x = int(rng.integers(0, H - side)), int(rng.integers(0, W - side))
            image[y : y + side, x : x + side, 0 if label == "big" else 1] = 230
            rows.append(
                {"path": f"images/{name}", "x_min": x, "y_min": y, "x_max": x + side, "y_max": y + side, "label": label}
            )
        if not objects:
            rows.append({"path": f"images/{name}", "x_min": "", "y_min": "", "x_max": "", "y_max": "", "label": ""})
        Image.fromarray(image).save(root / "images" / name)
    return rows


def write_csv(root: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(root / "boxes.csv", index=False)
    return root / "boxes.csv"


def write_coco(root: Path, rows: list[dict]) -> Path:
    paths = sorted({r["path"] for r in rows})
    ids = {p: k + 1 for k, p in enumerate(paths)}
    coco = {
        "images": [{"id": ids[p], "file_name": p, "width": W, "height": H} for p in paths],
        "annotations": [
            {
                "id": k + 1,
                "image_id": ids[r["path"]],
                "category_id": CLASSES.index(r["label"]) + 7,
                "bbox": [r["x_min"], r["y_min"], r["x_max"] - r["x_min"], r["y_max"] - r["y_min"]],
                "iscrowd": 0,
            }
            for k, r in enumerate(rows)
            if r["label"]
        ],
        "categories": [{"id": k + 7, "name": c} for k, c in enumerate(CLASSES)],
    }
    (root / "coco.json").write_text(json.dumps(coco))
    return root / "coco.json"


def write_voc(root: Path, rows: list[dict]) -> Path:
    voc = root / "voc"
    (voc / "Annotations").mkdir(parents=True)
    (voc / "JPEGImages").symlink_to(root / "images", target_is_directory=True)
    for p in sorted({r["path"] for r in rows}):
        objs = "".join(
            f"<object><name>{r['label']}</name><bndbox><xmin>{r['x_min'] + 1}</xmin><ymin>{r['y_min'] + 1}</ymin>"
            f"<xmax>{r['x_max']}</xmax><ymax>{r['y_max']}</ymax></bndbox></object>"
            for r in rows
            if r["path"] == p and r["label"]
        )
        name = Path(p).name
        (voc / "Annotations" / f"{Path(p).stem}.xml").write_text(
            f"<annotation><filename>{name}</filename><size><width>{W}</width><height>{H}</height></size>"
            f"{objs}</annotation>"
        )
    return voc


def write_yolo(root: Path, rows: list[dict]) -> Path:
    yolo = root / "yolo"
    (yolo / "images" / "train").mkdir(parents=True)
    (yolo / "labels" / "train").mkdir(parents=True)
    for p in sorted({r["path"] for r in rows}):
        name = Path(p).name
        (yolo / "images" / "train" / name).symlink_to(root / p)
        lines = [
            f"{CLASSES.index(r['label'])} {(r['x_min'] + r['x_max']) / 2 / W} {(r['y_min'] + r['y_max']) / 2 / H} "
            f"{(r['x_max'] - r['x_min']) / W} {(r['y_max'] - r['y_min']) / H}"
            for r in rows
            if r["path"] == p and r["label"]
        ]
        (yolo / "labels" / "train" / f"{Path(p).stem}.txt").write_text("\n".join(lines))
    (yolo / "data.yaml").write_text("names: [big, small]\ntrain: images/train\n")
    return yolo


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("boxes")
    rows = make_images(root)
    write_csv(root, rows)
    return root, rows


def _by_name(s: b.BoxSet) -> dict[str, tuple[np.ndarray, list[str]]]:
    return {n: (bx, [s.classes[k] for k in lab]) for n, bx, lab in zip(s.names, s.boxes, s.labels, strict=True)}


def test_every_format_reads_the_same_boxes(generated) -> None:
    root, rows = generated
    src = {"path": "x"}
    csv = b.assemble(b.read_box_csv(root / "boxes.csv"), classes=CLASSES, source=src)
    coco_records, coco_classes = b.read_coco(write_coco(root, rows), root)
    coco = b.assemble(coco_records, classes=coco_classes, source=src)
    voc = b.assemble(b.read_voc(write_voc(root, rows)), classes=CLASSES, source=src)
    yolo_records, yolo_classes = b.read_yolo(write_yolo(root, rows))
    yolo = b.assemble(yolo_records, classes=yolo_classes, source=src)
    assert coco_classes == yolo_classes == CLASSES
    want = _by_name(csv)
    assert len(want) == 18 and csv.issues["images_without_boxes"] == 1 and csv.images[0].shape == (3, H, W)
    for other in (coco, voc, yolo):
        got = _by_name(other)
        assert set(got) == set(want)
        for name, (boxes, labels) in want.items():
            assert got[name][1] == labels
            np.testing.assert_allclose(got[name][0], boxes, atol=1e-4)


def test_image_size_scales_boxes_with_the_image(generated) -> None:
    root, _ = generated
    native = b.assemble(b.read_box_csv(root / "boxes.csv"), classes=CLASSES, source={})
    half = b.assemble(b.read_box_csv(root / "boxes.csv"), classes=CLASSES, source={}, image_size=W // 2)
    assert half.images[0].shape == (3, H // 2, W // 2)
    np.testing.assert_allclose(half.boxes[0], native.boxes[0] / 2, atol=1e-5)


def test_bad_boxes_are_clipped_or_dropped_and_counted(tmp_path: Path, generated) -> None:
    root, _ = generated
    rows = [
        {"path": str(root / "images/img00.png"), "x_min": -5, "y_min": 2, "x_max": 20, "y_max": 90, "label": "big"},
        {"path": str(root / "images/img00.png"), "x_min": 10, "y_min": 10, "x_max": 10, "y_max": 10, "label": "big"},
        {"path": str(root / "images/img00.png"), "x_min": 30, "y_min": 30, "x_max": 20, "y_max": 40, "label": "small"},
    ]
    csv = write_csv(tmp_path, rows)
    s = b.assemble(b.read_box_csv(csv), classes=CLASSES, source={})
    assert s.issues["clipped"] == 1 and len(s.issues["dropped"]) == 2
    np.testing.assert_allclose(s.boxes[0], [[0, 2, 20, H]])
    with pytest.raises(DataError, match="reaches outside the 80x64 image.*--strict-boxes"):
        b.assemble(b.read_box_csv(csv), classes=CLASSES, source={}, strict=True)


def test_refusals_name_the_problem(tmp_path: Path, generated) -> None:
    root, rows = generated
    missing = write_csv(tmp_path, [{**rows[0], "path": str(root / "images/nowhere.png")}])
    with pytest.raises(DataError, match=r"boxes.csv row 2 names the image .*nowhere.png, which does not exist"):
        b.assemble(b.read_box_csv(missing), classes=CLASSES, source={})
    with pytest.raises(DataError, match="class 'big', which is not one of the classes small"):
        b.assemble(b.read_box_csv(root / "boxes.csv"), classes=["small"], source={})
    with pytest.raises(DataError, match="has no column 'lesion'"):
        b.read_box_csv(root / "boxes.csv", label_column="lesion")
    coco = json.loads(write_coco(tmp_path, rows).read_text())
    coco["annotations"][0]["category_id"] = 99
    (tmp_path / "bad.json").write_text(json.dumps(coco))
    with pytest.raises(DataError, match="category id 99, which is not one of the categories"):
        b.read_coco(tmp_path / "bad.json", root)
    coco["annotations"][0]["category_id"], coco["annotations"][0]["image_id"] = 7, 500
    (tmp_path / "bad.json").write_text(json.dumps(coco))
    with pytest.raises(DataError, match="names image id 500, which is not in the file's images"):
        b.read_coco(tmp_path / "bad.json", root)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    broken = write_csv(tmp_path, [{**rows[0], "path": "broken.png"}])
    with pytest.raises(DataError, match=r"broken.png.*row 2"):
        b.assemble(b.read_box_csv(broken), classes=CLASSES, source={})


def test_metrics_on_known_answers() -> None:
    truth = [np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32), np.array([[5, 5, 15, 25]], np.float32)]
    labels = [np.array([0, 1]), np.array([0])]
    perfect = [
        {"boxes": t, "labels": lab, "scores": np.full(len(t), 0.9)} for t, lab in zip(truth, labels, strict=True)
    ]
    sizes = [(50, 50), (50, 50)]
    ev = m.coco_evaluation(truth, labels, perfect, ["a", "b"], sizes)
    ap = m.average_precision(m.accumulate(ev), ["a", "b"])
    assert ap["map50"] == pytest.approx(1.0) and ap["map"] == pytest.approx(1.0)
    boot = m.bootstrap_ap(ev, ["a", "b"], n_boot=20, seed=0)
    assert boot["map50"]["ci_low"] == pytest.approx(1.0)
    # FROC: every true box found above the one false positive's score (MONAI's curve starts at the second-lowest)
    with_fp = [
        {
            "boxes": np.vstack([truth[0], [[30, 0, 45, 8]]]),
            "labels": np.array([0, 1, 0]),
            "scores": np.array([0.9, 0.8, 0.1]),
        },
        {"boxes": truth[1], "labels": labels[1], "scores": np.array([0.7])},
    ]
    froc = m.froc(m.coco_evaluation(truth, labels, with_fp, ["a", "b"], sizes))
    assert froc["sensitivity"]["0.125"] == pytest.approx(1.0) and froc["targets"] == 3
    shifted = [{**p, "boxes": p["boxes"] + 9} for p in perfect]  # IoU below 0.5 for every box
    miss = m.average_precision(m.accumulate(m.coco_evaluation(truth, labels, shifted, ["a", "b"], sizes)), ["a", "b"])
    assert miss["map50"] == pytest.approx(0.0)
    counts = m.predicted_counts(perfect, [0.5, 0.5])
    assert counts.tolist() == [[1, 1], [1, 0]]
    assert m.predicted_counts(perfect, [0.95, 0.5]).tolist() == [[0, 1], [0, 0]]
    truth_counts = np.array([[1, 1], [1, 0]])
    assert m.choose_count_thresholds(perfect, truth_counts)[0] <= 0.9
    err = m.count_errors(counts, truth_counts, ["a", "b"], n_boot=20, seed=0)
    assert err["a"]["mae"]["mean"] == 0.0 and err["b"]["bias"]["mean"] == 0.0


def test_augmentation_moves_the_boxes_with_the_image(generated) -> None:
    from medassist.models.detection import from_monai
    from medassist.train.detection import BoxBatcher, unpad_targets

    root, _ = generated
    s = b.assemble(b.read_box_csv(root / "boxes.csv"), classes=CLASSES, source={})
    batcher = BoxBatcher(s.subset([0, 1, 2, 3]), augment=True, seed=0)
    for _ in range(6):
        images, targets = batcher.inputs(torch.arange(4))
        for image, t in zip(images, unpad_targets(targets), strict=True):
            for box, label in zip(from_monai(t["boxes"]), t["labels"], strict=True):
                x0, y0, x1, y1 = (int(round(float(v))) for v in box)
                inside = image[int(label == 1), y0 + 1 : y1 - 1, x0 + 1 : x1 - 1]
                assert float(inside.mean()) > 0.75  # the bright square is where its box went


@pytest.fixture(scope="module")
def detect_run(generated, tmp_path_factory) -> Path:
    root, _ = generated
    out = tmp_path_factory.mktemp("detect-runs")
    argv = [
        "detect",
        "--profile",
        "debug",
        "--data",
        "",
        "--boxes",
        str(root / "boxes.csv"),
        "--image-size",
        "0",
        "--anchor-sizes",
        "[6, 10, 14]",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    (run,) = out.iterdir()
    return run


@pytest.mark.long
def test_study_writes_its_run_folder(detect_run: Path) -> None:
    metrics = json.loads((detect_run / "metrics.json").read_text())
    status = json.loads((detect_run / "status.json").read_text())
    data = json.loads((detect_run / "data.json").read_text())
    assert status["kind"] == "detect" and status["status"] == "complete"
    assert set(metrics["units"]) == {
        "capacity-w8",
        "capacity-w16",
        "ablation-no_augmentation",
        "ablation-no_pretraining",
        "size-0.5",
        "size-1",
    }
    assert metrics["units"]["size-1"]["same_as"] == "capacity-w8"
    assert sum(data["sizes"].values()) == 18 and data["classes"] == CLASSES
    ap = metrics["test"]["ap"]
    assert 0.0 <= ap["map50"]["ci_low"] <= ap["map50"]["mean"] <= ap["map50"]["ci_high"] <= 1.0
    assert set(metrics["test"]["froc"]["sensitivity"]) == {"0.125", "0.25", "0.5", "1", "2", "4", "8"}
    assert set(metrics["test"]["counts"]) == set(CLASSES)
    counts = pd.read_csv(detect_run / "tables" / "test_counts.csv")
    assert len(counts) == data["sizes"]["test"] and {"true_big", "found_small"} <= set(counts.columns)
    history = pd.read_csv(detect_run / "history" / "capacity-w8.csv")
    assert {"val_map50", "val_map", "val_loss", "train_loss", "train_cls_loss"} <= set(history.columns)
    report = (detect_run / "report.md").read_text()
    assert "## Analysis" in report and "mAP@0.5" in report and "### FROC" in report
    for fig in ("test_examples", "froc", "capacity_curves", "size_curve"):
        assert (detect_run / "figures" / f"{fig}.png").is_file()
    preds = json.loads((detect_run / "predictions" / "test.json").read_text())
    assert len(preds) == data["sizes"]["test"]


def test_deploy_bundle_and_predict_give_the_studys_boxes(generated, detect_run: Path, tmp_path: Path, capsys) -> None:
    """Deploy measures the variants and writes a detection bundle; `medassist predict` on a test image finds the
    boxes the study found there (fp32 ONNX shipped: --max-map-drop -1 admits no int8 variant)."""
    root, _ = generated
    argv = ["deploy", "--profile", "debug", "--run", str(detect_run), "--out", str(tmp_path / "d"), "--no-progress"]
    assert main([*argv, "--max-map-drop", "-1"]) == 0
    (run,) = (tmp_path / "d").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    table = pd.read_csv(run / "tables" / "benchmark.csv").set_index("variant")
    assert list(table.index) == ["fp32 (PyTorch)", "fp32 (ONNX Runtime)", "int8 static (ONNX Runtime)"]
    assert metrics["parity_max_abs_diff"] < 1e-3 and metrics["chosen"] == "fp32 (ONNX Runtime)"
    assert table.loc["fp32 (ONNX Runtime)", "test_map50"] == pytest.approx(table.loc["fp32 (PyTorch)", "test_map50"])
    assert table.loc["int8 static (ONNX Runtime)", "size_ratio"] > 2.5
    assert "Chosen:" in (run / "report.md").read_text()

    study = json.loads((detect_run / "predictions" / "test.json").read_text())[0]
    thresholds = json.loads((detect_run / "metrics.json").read_text())["test"]["count_thresholds"]
    capsys.readouterr()
    assert (
        main(
            [
                "predict",
                str(run / "bundle"),
                str(root / "images" / study["image"]),
                "--json",
                "--out",
                str(tmp_path / "p"),
            ]
        )
        == 0
    )
    answer = json.loads(capsys.readouterr().out)
    keep = [
        i
        for i, (k, sc) in enumerate(zip(study["labels"], study["scores"], strict=True))
        if sc >= thresholds[CLASSES[k]]
    ]
    assert answer["kind"] == "detection" and answer["labels"] == [CLASSES[study["labels"][i]] for i in keep]
    np.testing.assert_allclose(
        np.array(answer["boxes"]).reshape(-1, 4), np.array([study["boxes"][i] for i in keep]).reshape(-1, 4), atol=0.1
    )
    assert answer["counts"] == {c: answer["labels"].count(c) for c in CLASSES}
    from medassist.deploy.bundle import load_bundle

    found = load_bundle(run / "bundle").detect_image_file(root / "images" / study["image"])  # every box, not counted
    top = min(20, len(study["scores"]))
    assert top > 0 and len(found.scores) == len(study["scores"])
    np.testing.assert_allclose(found.scores[:top], study["scores"][:top], atol=1e-3)
    np.testing.assert_allclose(found.boxes[:top], np.array(study["boxes"][:top]), atol=0.1)
    assert (tmp_path / "p_boxes.png").is_file()
    from fastapi.testclient import TestClient

    from medassist.serve import create_app, load_served

    with TestClient(create_app(load_served([run / "bundle"]))) as client:
        image = (root / "images" / study["image"]).read_bytes()
        r = client.post("/v1/detections", files={"file": ("x.png", image, "image/png")})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["labels"] == answer["labels"] and body["counts"] == answer["counts"]
        assert body["boxes_png"].startswith("data:image/png;base64,")
        from fhir.resources.R4B.diagnosticreport import DiagnosticReport

        fhir = client.post(
            "/v1/detections", files={"file": ("x.png", image)}, headers={"Accept": "application/fhir+json"}
        )
        DiagnosticReport.model_validate(fhir.json())  # one Observation per class, its count
        counts = {o["code"]["text"]: o["valueQuantity"]["value"] for o in fhir.json()["contained"][1:]}
        assert counts == answer["counts"]
        refused = client.post("/v1/detections", files={"file": ("x.png", b"not an image", "image/png")})
        assert refused.status_code in (415, 422)
        assert client.post("/v1/segmentations", files={"file": ("x.png", image, "image/png")}).status_code == 404
    assert main(["predict", str(run / "bundle"), "--text", "no image"]) == 2
    assert "is a detection bundle; give an image file" in capsys.readouterr().err
    _page_shows_the_counts_and_boxes(run / "bundle", root / "images" / study["image"], answer, tmp_path)


def _page_shows_the_counts_and_boxes(bundle: Path, image: Path, answer: dict, tmp_path: Path) -> None:
    """The service's page in Debian's headless Chromium (Playwright): the detection section uploads the image and
    shows each class's count and the image with its boxes, at the upload's own size."""
    import threading
    import time

    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = Path("/usr/bin/chromium")
    if not chromium.is_file():
        pytest.skip(f"{chromium} is missing: `make system-packages` installs Debian's chromium")
    import uvicorn
    from orthanc import free_port

    from medassist.serve import create_app, load_served

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(load_served([bundle])), port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
            try:
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{port}/")
                sync_api.expect(page.locator("#detect-section")).to_be_visible()
                for other in ("#image-section", "#report-section", "#segment-section"):  # no such model served
                    sync_api.expect(page.locator(other)).to_be_hidden()
                page.set_input_files("#detect-file", str(image))
                page.click("#detect-submit")
                sync_api.expect(page.locator("#detect-result")).to_have_attribute("data-done", "1")
                shown = page.locator("#detect-counts").inner_text()
                assert shown == "; ".join(f"{label} {n}" for label, n in answer["counts"].items())
                drawn = page.locator("#detect-boxes")
                assert drawn.evaluate("img => img.complete && img.naturalWidth") == Image.open(image).width
                page.screenshot(path=str(tmp_path / "detect-page.png"), full_page=True)
            finally:
                browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_bccd_reads_as_published() -> None:
    """BCCD's own files: the split's sizes and boxes of its README, with its two zero-area boxes dropped."""
    root = Path(os.environ.get("MEDASSIST_DATA_DIR", "")) / "bccd"
    if not (root / "Annotations").is_dir():
        pytest.skip(f"BCCD is not at {root}")
    records = b.read_voc(root)
    splits = pd.Series([r.split for r in records]).value_counts().to_dict()
    assert splits == {"train": 205, "val": 87, "test": 72}
    by_split: dict[str, dict[str, int]] = {}
    for r in records:
        for lab, box in zip(r.labels, r.boxes, strict=True):
            if box[2] > box[0] and box[3] > box[1]:
                by_split.setdefault(r.split, {}).setdefault(lab, 0)
                by_split[r.split][lab] += 1
    assert by_split["train"] == {"RBC": 2382 - 1, "WBC": 214, "Platelets": 209}
    assert by_split["val"] == {"RBC": 968 - 1, "WBC": 87, "Platelets": 83}
    assert by_split["test"] == {"RBC": 805, "WBC": 71, "Platelets": 69}
    s = b.assemble(records, classes=list(b.BCCD_CLASSES), source={}, image_size=160)
    assert sorted(d["image"] for d in s.issues["dropped"]) == ["BloodImage_00338.jpg", "BloodImage_00343.jpg"]
    assert s.images[0].shape == (3, 120, 160) and s.issues["clipped"] == 0
