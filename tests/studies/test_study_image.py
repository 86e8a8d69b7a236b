"""End-to-end: the image study on the real PneumoniaMNIST file (debug profile), its report, failure and resume."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medassist.cli import main
from medassist.run import Run


@pytest.mark.realdata
def test_run_folder_is_complete(study_run: Path) -> None:
    assert json.loads((study_run / "status.json").read_text())["status"] == "complete"
    for rel in [
        "config.yaml",
        "metrics.json",
        "report.md",
        "report.html",
        "history/capacity-mlp.csv",
        "tables/capacity.csv",
        "tables/capacity.md",
        "tables/ablation.csv",
        "tables/transfer.csv",
        "tables/size_curve.csv",
        "tables/test_per_class.csv",
        "tables/test_headline.csv",
        "figures/capacity_curves.png",
        "figures/size_curve.png",
        "figures/confusion_matrix.png",
        "figures/roc.png",
        "figures/reliability.png",
        "figures/predictions.png",
        "figures/gradcam.png",
        "models/model.safetensors",
        "models/model.pt",
        "models/model.json",
    ]:
        assert (study_run / rel).is_file(), rel


@pytest.mark.realdata
def test_metrics_and_selection_use_validation_only(study_run: Path) -> None:
    m = json.loads((study_run / "metrics.json").read_text())
    assert {r["regularisation"] for r in m["ablation"]} == {
        "none",
        "augmentation",
        "weight_decay",
        "dropout",
        "early_stopping",
        "all",
    }
    assert {r["mode"] for r in m["transfer"]} == {"scratch", "finetune", "frozen"}
    candidates = [r["val_auc"] for r in m["ablation"] + m["transfer"]]
    assert m["selected"]["val_auc"] == pytest.approx(max(candidates))
    h = m["selected"]["headline"]
    for key in ("accuracy", "macro_f1", "auc", "ece"):
        assert h[key]["ci_low"] <= h[key]["value"] <= h[key]["ci_high"]
    assert m["diagnosis"]["label"] in {"good fit", "high bias", "high variance", "high bias and high variance"}
    assert h["auc"]["value"] > 0.8  # even the debug profile learns PneumoniaMNIST


@pytest.mark.realdata
def test_saved_model_loads_safely(study_run: Path) -> None:
    meta = json.loads((study_run / "models/model.json").read_text())
    state = torch.load(study_run / "models/model.pt", weights_only=True)
    assert set(state) == set(load_file(str(study_run / "models/model.safetensors")))
    from medassist.models import create_model

    model = create_model(
        meta["model"], num_classes=meta["num_classes"], in_channels=meta["in_channels"], **meta["model_kwargs"]
    )
    model.load_state_dict(state)


@pytest.mark.realdata
def test_report_has_every_section_and_a_generated_analysis(study_run: Path) -> None:
    text = (study_run / "report.md").read_text()
    for heading in (
        "## Analysis",
        "## Headline",
        "## Capacity and bias-variance",
        "### Learning curve over",
        "## Regularisation ablation",
        "## Transfer learning",
        "## Example predictions and Grad-CAM",
    ):
        assert heading in text
    analysis = text.split("## Analysis")[1].split("\n## ")[0]
    words = len(analysis.split())
    assert 200 <= words <= 300, words
    m = json.loads((study_run / "metrics.json").read_text())
    assert f"{m['selected']['headline']['auc']['value']:.3f}" in analysis  # numbers come from metrics.json
    html = (study_run / "report.html").read_text()
    assert "data:image/png;base64," in html and "<table>" in html
    assert not re.search(r'src="figures/', html), "figures must be embedded"


@pytest.mark.realdata
def test_failed_run_is_marked_failed_and_resumes(real_data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from medassist.studies import image as study

    def boom(*args, **kwargs):
        raise RuntimeError("simulated crash during evaluation")

    monkeypatch.setattr("medassist.studies.image_eval.evaluate_selected", boom)
    argv = [
        "image",
        "--profile",
        "debug",
        "--data-dir",
        str(real_data_dir),
        "--out",
        str(tmp_path),
        "--progress",
        "false",
        "--models",
        "mlp",
        "--transfer",
        "[]",
        "--size-fractions",
        "1.0",
    ]
    with pytest.raises(RuntimeError):
        main(argv)
    (run,) = list(tmp_path.iterdir())
    status = Run(run).status()
    assert status["status"] == "failed" and "simulated crash" in status["error"]
    assert not (run / "report.md").exists()
    done = run / "units" / "capacity-mlp" / "result.json"
    stamp = done.stat().st_mtime_ns

    monkeypatch.undo()
    assert study is not None
    assert main([*argv, "--resume", str(run)]) == 0
    assert Run(run).status()["status"] == "complete"
    assert done.stat().st_mtime_ns == stamp, "a finished model is reused on resume, not retrained"


def test_study_on_own_image_folder(tmp_path: Path) -> None:
    """The study runs on a user's folder of PNGs (one subfolder per class) at another input size."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, bright in (("benign", 60), ("malignant", 190)):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(30):
            arr = np.clip(rng.normal(bright, 30, (20, 20)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(tmp_path / "imgs" / cls / f"{i}.png")
    out = tmp_path / "runs"
    argv = [
        "image",
        "--profile",
        "debug",
        "--images",
        str(tmp_path / "imgs"),
        "--image-size",
        "16",
        "--out",
        str(out),
        "--progress",
        "false",
        "--models",
        "cnn,cnn_gap",
        "--transfer",
        "[]",
        "--size-fractions",
        "1.0",
        "--ablations",
        "none,dropout",
        "--train.epochs",
        "3",
    ]
    assert main(argv) == 0
    (run,) = list(out.iterdir())
    data = json.loads((run / "data.json").read_text())
    assert data["class_names"] == ["benign", "malignant"] and data["image_size"] == 16
    assert sum(data["sizes"].values()) == 60
    assert (run / "report.md").is_file() and (run / "figures" / "gradcam.png").is_file()
