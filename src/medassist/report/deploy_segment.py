"""The report of a segmentation deploy run, from its metrics.json and benchmark table."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from medassist.report.html import write_report
from medassist.utils.format import computed_on, fmt_ci, fmt_metric, fmt_ratio, readable_table


def build_segment_deploy_report(run_dir: str | Path) -> str:
    run_dir = Path(run_dir)
    m = json.loads((run_dir / "metrics.json").read_text())
    table = pd.read_csv(run_dir / "tables" / "benchmark.csv")
    row = table.set_index("variant").loc[m["chosen"]]
    cols = [
        "variant",
        "size_mb",
        "size_ratio",
        "latency_b1_median_ms",
        "speedup_b1",
        "val_dice",
        "test_dice",
        "dice_drop_mean",
        "dice_drop_ci_low",
        "dice_drop_ci_high",
        "test_max_abs_prob_diff",
    ]
    return "\n".join(
        [
            f"# Deployment study: {m['dataset']} segmentation ({m['model']})",
            "",
            computed_on(m),
            "",
            f"Source run `{Path(m['source_run']).name}`; every variant measured in one process on {m['threads']} "
            "CPU thread(s), latency on one whole test image (batch 1, padded to a multiple of 16).",
            "",
            readable_table(table[cols]),
            "",
            f"Shipped: **{m['chosen']}**, the fastest variant whose validation Dice is at most "
            f"{fmt_metric(m['selection']['max_dice_drop'])} below fp32 PyTorch: {fmt_ratio(row.size_ratio)} smaller, "
            f"{fmt_ratio(row.speedup_b1)} faster at batch 1, test Dice {fmt_metric(row.test_dice)} (drop "
            f"{fmt_metric(row.dice_drop_mean)} {fmt_ci(row.dice_drop_ci_low, row.dice_drop_ci_high)}, paired over "
            "test images).",
            "",
            "Every column at full precision: `tables/benchmark.csv`. The bundle: `bundle/` (verified by its manifest).",
            "",
        ]
    )


def write_segment_deploy_report(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    return write_report(run_dir, build_segment_deploy_report(run_dir), title=run_dir.name)
