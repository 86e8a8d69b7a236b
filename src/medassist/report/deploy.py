"""The deployment study's report: reads the deploy run folder's files and nothing else."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from medassist.deploy.variants import BASELINE
from medassist.report.html import markdown_to_html
from medassist.run import markdown_table
from medassist.utils.io import atomic_write_text


def _pct(x: float) -> str:
    return f"{100 * x:.1f} points"


def _missed(r: dict[str, Any], t: dict[str, float]) -> list[str]:
    out = []
    if r["size_ratio"] < t["size_ratio"]:
        out.append(f"size ({r['size_ratio']:.1f}x, target {t['size_ratio']:.0f}x)")
    if r["speedup_b1"] < t["speedup_b1"]:
        out.append(f"speed ({r['speedup_b1']:.1f}x, target {t['speedup_b1']:.0f}x)")
    if r["test_accuracy_drop"] > t["accuracy_drop"] + 1e-12:
        out.append(f"accuracy (drop {_pct(r['test_accuracy_drop'])}, at most {_pct(t['accuracy_drop'])})")
    if r["test_auc_drop"] > t["auc_drop"] + 1e-12:
        out.append(f"AUC (drop {r['test_auc_drop']:.4f}, at most {t['auc_drop']:.3f})")
    return out


def deploy_analysis(m: dict[str, Any]) -> str:
    """A 100-150-word explanation generated from the measured variants: which technique worked best and why, and
    the deployment constraints weighed."""
    rows = {r["variant"]: r for r in m["variants"]}
    t = m["targets"]
    chosen = rows[m["chosen"]]
    base = rows[BASELINE]
    s = []
    s.append(
        f"The shipped variant, {m['chosen']}, was chosen on validation: it is {chosen['size_ratio']:.1f}x smaller "
        f"and {chosen['speedup_b1']:.1f}x faster at batch 1 than the fp32 PyTorch model "
        f"({chosen['latency_b1_median_ms']:.2f} vs {base['latency_b1_median_ms']:.2f} ms), with a test accuracy "
        f"drop of {_pct(chosen['test_accuracy_drop'])} and an AUC drop of {chosen['test_auc_drop']:.4f}."
    )
    missed = _missed(chosen, t)
    meeting = [r for r in m["variants"] if r["meets_target"]]
    if not missed:
        s.append("It meets every target.")
    else:
        s.append(f"It misses the target on {', '.join(missed)}.")
        if meeting:
            s.append(f"On test, {len(meeting)} variant(s) met every target, e.g. {meeting[0]['variant']}.")
    onnx, int8 = rows.get("fp32 (ONNX Runtime)"), next((r for r in m["variants"] if "int8" in r["variant"]), None)
    if onnx and int8:
        s.append(
            f"Exporting to ONNX Runtime alone gave {onnx['speedup_b1']:.1f}x, by removing Python overhead; "
            f"{int8['variant']} gave {int8['speedup_b1']:.1f}x at {int8['size_ratio']:.1f}x smaller, since int8 "
            "weights take a quarter of the bytes."
        )
    mag = next((r for r in m["variants"] if r["variant"].startswith("magnitude")), None)
    if mag:
        s.append(
            f"Magnitude pruning shrank the file {mag['size_ratio']:.1f}x but ran at {mag['speedup_b1']:.1f}x, "
            "because dense kernels still multiply the zeros."
        )
    s.append(
        "Weighed: memory (file size), latency for one patient at batch 1, battery (fewer multiply-adds per "
        "prediction; energy itself was not measured), and accuracy within the stated drops."
    )
    return " ".join(s)


def _table(df: pd.DataFrame, cols: list[str]) -> str:
    return markdown_table(df[[c for c in cols if c in df.columns]])


def build_deploy_report(run_dir: str | Path) -> str:
    """The Markdown report of a deploy run folder."""
    run_dir = Path(run_dir)
    m = json.loads((run_dir / "metrics.json").read_text())
    table = pd.read_csv(run_dir / "tables" / "benchmark.csv")
    intervals = pd.read_csv(run_dir / "tables" / "test_intervals.csv")
    t = m["targets"]
    tb = next(c for c in table.columns if c.startswith("throughput_b"))
    lines = [
        f"# Deployment study: {m['dataset']} ({m['model']})",
        "",
        f"Source run `{m['source_run']}`; every variant measured in one process on "
        f"{m['threads']} CPU threads, with warm-up and interleaved timing rounds (medians and 95th percentiles). "
        f"Targets for the best variant against the fp32 PyTorch model: at least {t['size_ratio']:.0f}x smaller, at "
        f"least {t['speedup_b1']:.0f}x faster at batch 1, test accuracy drop at most {_pct(t['accuracy_drop'])}, "
        f"AUC drop at most {t['auc_drop']:.3f}. The shipped variant is chosen on the validation split (the fastest "
        f"ONNX variant whose validation accuracy and AUC drops stay within "
        f"{_pct(m['selection']['max_accuracy_drop'])} and {m['selection']['max_auc_drop']:.3f}); test numbers are "
        "reported only.",
        "",
        "## Analysis",
        "",
        deploy_analysis(m),
        "",
        "## Benchmark",
        "",
        _table(
            table,
            [
                "variant",
                "size_mb",
                "size_ratio",
                "latency_b1_median_ms",
                "latency_b1_p95_ms",
                "speedup_b1",
                tb,
                "test_accuracy",
                "test_auc",
                "test_accuracy_drop",
                "test_auc_drop",
                "meets_target",
            ],
        ),
        "Drops are the fp32 PyTorch model's value minus the variant's (positive = worse). Validation metrics, "
        "techniques and notes are in `tables/benchmark.csv`.",
        "",
        "![size against latency](figures/size_latency.png)",
        "",
        "## Test metrics with 95% bootstrap intervals",
        "",
        markdown_table(intervals),
        "",
        "## Parity with the model each variant was made from (whole test split)",
        "",
        _table(
            table.dropna(subset=["parity_with"]), ["variant", "parity_with", "max_abs_logit_diff", "label_agreement"]
        ),
        "",
        "## Techniques",
        "",
        _table(table, ["variant", "technique", "runtime", "note"]),
    ]
    transformer = run_dir / "tables" / "transformer.csv"
    if transformer.is_file():
        lines += [
            "## Dynamic int8 of the text study's Transformer",
            "",
            _table(
                pd.read_csv(transformer),
                [
                    "variant",
                    "size_mb",
                    "size_ratio",
                    "latency_b1_median_ms",
                    "speedup_b1",
                    "test_accuracy",
                    "test_auc",
                    "test_macro_f1",
                    "test_auc_drop",
                    "label_agreement",
                ],
            ),
            "",
        ]
    if m.get("teachers"):
        lines += [
            f"Distillation teachers (averaged log-probabilities): {', '.join(m['teachers']['teachers'])}; "
            f"student: {m['teachers']['student']} {m['teachers']['student_kwargs']}.",
            "",
        ]
    lines += [
        "## The bundle",
        "",
        f"`bundle/` holds the shipped model (`model.onnx`), its preprocessing, label names and test metrics "
        f"(`bundle.json`) and `manifest.json` with the sha256 of every file; the loader refuses a tampered, "
        f"truncated or mismatching file. Run it with `medassist predict {run_dir.name}/bundle <input>`.",
        "",
    ]
    return "\n".join(lines)


def write_deploy_report(run_dir: str | Path) -> Path:
    """Write ``report.md`` and a self-contained ``report.html`` into the deploy run folder."""
    run_dir = Path(run_dir)
    text = build_deploy_report(run_dir)
    atomic_write_text(run_dir / "report.md", text)
    atomic_write_text(run_dir / "report.html", markdown_to_html(text, base_dir=run_dir, title="Deployment study"))
    return run_dir / "report.md"
