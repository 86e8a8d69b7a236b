"""End to end: an image study on a user's CSV with metadata columns (generated images and metadata), audited by
`medassist fairness` with ThresholdOptimizer and the balanced retrain through the training engine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from medassist.cli import main


def test_image_csv_run_with_metadata_is_audited_end_to_end(tmp_path: Path, capsys) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    (tmp_path / "imgs").mkdir()
    for i in range(120):
        label = i % 2
        site = "A" if i % 4 < 2 else "B"
        # site B's images are noisier: a real difference the audit may find
        arr = np.clip(rng.normal(70 + 110 * label, 30 if site == "A" else 90, (16, 16)), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(tmp_path / "imgs" / f"{i}.png")
        rows.append(
            {
                "path": f"imgs/{i}.png",
                "label": ["benign", "malignant"][label],
                "site": site,
                "sex": "F" if (i // 2) % 2 else "M",
                "age": float(25 + (i * 7) % 70),
            }
        )
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    out = tmp_path / "runs"
    argv = [
        "image",
        "--profile",
        "debug",
        "--images",
        str(tmp_path / "labels.csv"),
        "--image-size",
        "16",
        "--out",
        str(out),
        "--progress",
        "false",
        "--models",
        "cnn_gap",
        "--transfer",
        "[]",
        "--size-fractions",
        "1.0",
        "--ablations",
        "none",
        "--train.epochs",
        "1",
    ]
    assert main(argv) == 0
    (run,) = list(out.iterdir())
    info = json.loads((run / "predictions" / "info.json").read_text())
    assert info["kind"] == "image" and {"site", "sex", "age"} <= set(info["metadata_columns"])
    assert "path" not in pd.read_parquet(run / "predictions" / "test.parquet").columns  # no file paths saved

    fair_out = tmp_path / "fair"
    argv = [
        "fairness",
        "--run",
        str(run),
        "--groups",
        "site,sex*age",
        "--min-group-size",
        "5",
        "--min-class-cases",
        "1",  # a tiny fixture: compare groups down to a single case of a class
        "--n-boot",
        "50",
        "--out",
        str(fair_out),
        "--progress",
        "false",
    ]
    assert main(argv) == 0
    (fair,) = list(fair_out.iterdir())
    m = json.loads((fair / "metrics.json").read_text())
    assert set(m["audits"]) == {"site", "sex*age"}
    site = m["audits"]["site"]
    assert site["compared"] == ["A", "B"] and sum(site["counts"].values()) == m["source"]["n_test"]
    assert {r["group"] for r in site["table"]} == {"overall", "A", "B"}
    notes = m["mitigation"]["notes"]
    assert notes["equalized_odds"]["fitted_on"] == "validation"
    assert notes["balanced_retrain"]["unit"] == info["unit"]["name"]  # retrained once through the engine
    variants = {r["variant"] for r in m["mitigation"]["table"]}
    assert variants == {"before", "equalized_odds", "demographic_parity", "equal_sensitivity", "balanced_retrain"}
    assert m["mitigation"]["variants"]["balanced_retrain"]["target"] == "eod"
    report = (fair / "report.md").read_text()
    assert "## By site" in report and "## Ethics report" in report and "Recommendations" in report
    assert (fair / "figures" / "reliability_site.png").is_file()
