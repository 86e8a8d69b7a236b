"""The deploy study end to end on a real image run: every variant measured, the bundle, calibration and abstention,
and a prediction from the bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medassist.cli import main
from medassist.deploy.bundle import load_bundle
from medassist.report.deploy import deploy_analysis


@pytest.fixture(scope="module")
def image_deploy(study_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deploy")
    argv = ["deploy", "--profile", "debug", "--run", str(study_run), "--out", str(out), "--progress", "false"]
    assert main(argv) == 0
    (run,) = list(out.iterdir())
    return run


@pytest.mark.long
@pytest.mark.realdata
def test_image_deploy_run(image_deploy: Path, real_data_dir: Path, tmp_path: Path, capsys) -> None:
    assert json.loads((image_deploy / "status.json").read_text())["status"] == "complete"
    for rel in (
        "report.md",
        "report.html",
        "tables/benchmark.csv",
        "tables/test_intervals.csv",
        "figures/size_latency.png",
        "bundle/model.onnx",
        "bundle/manifest.json",
    ):
        assert (image_deploy / rel).is_file(), rel
    m = json.loads((image_deploy / "metrics.json").read_text())
    table = pd.read_csv(image_deploy / "tables/benchmark.csv")
    assert table.variant.iloc[0] == "fp32 (PyTorch)"
    assert {
        "int8 static (ONNX Runtime)",
        "distilled student int8 (ONNX Runtime)",
        "distilled + channel-pruned int8 (ONNX Runtime)",
    } <= set(table.variant)
    assert (table.size_mb > 0).all() and (table.latency_b1_median_ms > 0).all()
    onnx = table.set_index("variant").loc["fp32 (ONNX Runtime)"]
    assert onnx.max_abs_logit_diff < 1e-3 and onnx.label_agreement == 1.0  # export parity over the test split
    assert table.set_index("variant").loc["int8 static (ONNX Runtime)"].label_agreement >= 0.98
    words = len(deploy_analysis(m).split())
    assert 100 <= words <= 150, words
    bundle = load_bundle(image_deploy / "bundle")
    assert bundle.meta["info"]["variant"] == m["chosen"]
    c = m["calibration"]  # fitted on validation; measured on test with intervals
    assert bundle.temperature == c["temperature"] > 0 and bundle.abstain_rule == c["per_finding"]["rule"]
    assert bundle.abstain_rule["rule"] == "per-class" and bundle.min_confidence is None
    assert c["test"]["coverage_ci95"][0] <= c["test"]["coverage"] <= c["test"]["coverage_ci95"][1]
    per_class = c["per_finding"]["test"]
    assert [f["label"] for f in per_class["findings"]] == ["normal", "pneumonia"]
    assert per_class["complete_ci95"][0] <= per_class["complete"] <= per_class["complete_ci95"][1]
    report = (image_deploy / "report.md").read_text()
    assert "## Calibration and abstention" in report and "## An answer for every class" in report
    assert ("Validation is easier than test" in report) != ("Validation and test are alike" in report)
    from PIL import Image

    test = np.load(real_data_dir / "medmnist" / "pneumoniamnist.npz")["test_images"]
    Image.fromarray(test[0]).save(tmp_path / "x.png")
    assert main(["predict", str(image_deploy / "bundle"), str(tmp_path / "x.png"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["label"] in ("normal", "pneumonia") and out["latency_ms"] > 0
