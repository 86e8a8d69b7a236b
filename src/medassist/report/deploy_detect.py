"""The report of a detection deploy run, from its metrics.json and benchmark table."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from medassist.report.html import write_report
from medassist.utils.format import computed_on, fmt_ci, fmt_metric, fmt_ratio, readable_table

COLUMNS = [
    "variant",
    "size_mb",
    "size_ratio",
    "latency_b1_median_ms",
    "speedup_b1",
    "val_map50",
    "test_map50",
    "map50_drop_mean",
    "map50_drop_ci_low",
    "map50_drop_ci_high",
]


def build_detect_deploy_report(run_dir: str | Path) -> str:
    run_dir = Path(run_dir)
    m = json.loads((run_dir / "metrics.json").read_text())
    table = pd.read_csv(run_dir / "tables" / "benchmark.csv")
    row = table.set_index("variant").loc[m["chosen"]]
    return "\n".join(
        [
            f"# Deployment study: {m['dataset']} detection ({m['model']})",
            "",
            computed_on(m),
            "",
            f"Source run `{Path(m['source_run']).name}`; every variant measured in one process on {m['threads']} CPU "
            "thread(s); latency on one whole test image at batch 1, MONAI's post-processing (box decoding and "
            "non-maximum suppression) included for every variant. The fp32 ONNX graph's maps differ from PyTorch's by "
            f"at most {m['parity_max_abs_diff']:.1e} on a test image.",
            "",
            f"Chosen: **{m['chosen']}**, the fastest within {m['selection']['max_map_drop']} of fp32's validation "
            f"mAP@0.5: {fmt_ratio(row.size_ratio)} smaller and {fmt_ratio(row.speedup_b1)} faster than fp32 "
            f"PyTorch, test mAP@0.5 {fmt_metric(row.test_map50)}, a paired drop of {fmt_metric(row.map50_drop_mean)} "
            f"{fmt_ci(row.map50_drop_ci_low, row.map50_drop_ci_high)}.",
            "",
            readable_table(table[[c for c in COLUMNS if c in table.columns]]),
            "",
        ]
    )


def write_detect_deploy_report(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    return write_report(run_dir, build_detect_deploy_report(run_dir), title=run_dir.name)
