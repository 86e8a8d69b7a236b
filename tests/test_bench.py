"""The MedMNIST benchmark: its summary table, and a smoke run of the real machinery (debug profile)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from medassist.bench.medmnist import PUBLISHED, summarise
from medassist.cli import main


def test_summary_mean_std_targets_and_published_rows() -> None:
    runs = pd.DataFrame(
        {
            "dataset": ["breastmnist"] * 3,
            "method": ["m"] * 3,
            "seed": [0, 1, 2],
            "test_auc": [0.90, 0.92, 0.94],
            "test_accuracy": [0.88, 0.88, 0.91],
            "train_time_s": [1.0, 2.0, 3.0],
            "peak_memory_mb": [100.0, 300.0, 200.0],
        }
    )
    s = summarise(runs)
    row = s[s.method == "m"].iloc[0]
    assert row.test_auc_mean == pytest.approx(0.92) and row.test_auc_std == pytest.approx(0.02)
    assert row.peak_memory_mb_max == 300.0
    assert bool(row.meets_target) is True  # 0.92 >= 0.91 and 0.89 >= 0.87
    assert len(s) == 1 + len(PUBLISHED["breastmnist"])


@pytest.mark.realdata
def test_benchmark_debug_profile_runs(real_data_dir: Path, tmp_path: Path, capsys) -> None:
    assert (
        main(
            [
                "bench",
                "medmnist",
                "--profile",
                "debug",
                "--data-dir",
                str(real_data_dir),
                "--out",
                str(tmp_path),
                "--progress",
                "false",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "published: ResNet-18 (28)" in out and "ResNet-18 reference protocol" in out
    (run,) = list(tmp_path.iterdir())
    m = json.loads((run / "metrics.json").read_text())
    assert len(m["runs"]) == 2
    for r in m["runs"]:
        assert 0.0 <= r["test_auc"] <= 1.0 and r["peak_memory_mb"] > 50 and r["train_time_s"] > 0
