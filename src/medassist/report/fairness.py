"""The fairness study's report: reads the fairness run folder's files and nothing else."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from medassist.report.html import write_report
from medassist.report.image import _fig
from medassist.utils.format import computed_on, fmt_int, fmt_metric, fmt_seconds, readable_table

AUDIT_COLS = ["group", "label", "n", "prevalence", "auc", "sensitivity", "specificity", "ppv", "f1", "brier", "ece"]
DISP_COLS = ["label", "auc_gap", "auc_gap_groups", "worst_group", "worst_group_auc", "eod", "dpd"]
DISP_COLS += ["auc_p_holm", "auc_disparity", "eo_p_holm", "eo_disparity", "dp_p_holm", "dp_disparity"]
HEADERS = {
    "auc_gap": "AUC gap",
    "auc_gap_groups": "between",
    "worst_group_auc": "worst-group AUC",
    "eod": "equalized-odds diff.",
    "dpd": "demographic-parity diff.",
    "auc_p_holm": "AUC p (Holm)",
    "eo_p_holm": "EO p (Holm)",
    "dp_p_holm": "DP p (Holm)",
    "auc_disparity": "AUC disparity",
    "eo_disparity": "EO disparity",
    "dp_disparity": "DP disparity",
    "ppv": "PPV",
    "auc": "AUC",
    "ece": "ECE",
}


def _slug(name: str) -> str:
    return name.replace("*", "_x_").replace(" ", "_")


def _table(run_dir: Path, name: str, cols: list[str], *, where: pd.Series | None = None) -> str:
    df = pd.read_csv(run_dir / "tables" / f"{name}.csv")
    if where is not None:
        df = df[where(df)]
    keep = [c for c in df.columns if c in cols or (c.endswith(("_lo", "_hi")) and c[:-3] in cols)]
    return readable_table(df[keep], headers=HEADERS, max_columns=None)


def build_fairness_report(run_dir: str | Path) -> str:
    """The Markdown report of a fairness run folder."""
    run_dir = Path(run_dir)
    m = json.loads((run_dir / "metrics.json").read_text())
    src = m["source"]
    outside = src["kind"] == "outside"
    if outside:
        out = [f"# Fairness and ethics: {src['dataset']} (an outside model's predictions)\n"]
        where = (
            f"Audited predictions file: `{src['run']}`; {fmt_int(src['n_test'])} test cases, {fmt_int(src['n_val'])} "
            f"validation cases, {len(src['labels'])} label(s), split {src['split_rule']}. Scores read from the file "
            "as given; decisions at 0.5 (binary and multi-label) or the highest probability (multi-class). "
        )
    else:
        out = [f"# Fairness and ethics: {src['dataset']} ({src['kind']} study, model {src['model']})\n"]
        where = (
            f"Audited run: `{src['run']}`; {fmt_int(src['n_test'])} test cases, {fmt_int(src['n_val'])} validation "
            f"cases, {len(src['labels'])} label(s). Predictions read from the run's saved files (no retraining to "
            "audit). "
        )
    out.append(
        where
        + f"Intervals are 95% bootstrap intervals ({fmt_int(m['n_boot'])} resamples within each group); groups with "
        f"fewer than {m['min_group_size']} test cases are listed, not compared. ECE and the equalized-odds and "
        "demographic-parity differences carry bias-corrected percentile intervals (shifted by the bootstrap's bias), "
        "since resampling inflates them; the other metrics plain percentile intervals. A gap is called a disparity "
        "only when its pairwise bootstrap test stays below 0.05 after Holm's correction over every label and pair "
        "of groups. " + computed_on(m) + "\n"
    )
    for col, n in src.get("stated", {}).items():
        out.append(f"- `{col}` stated for {fmt_int(n)} of {fmt_int(src['n_test'])} test cases\n")
    ds = src.get("dataset_stated")
    if ds:
        out.append(
            f"- in the whole data set ({fmt_int(ds['reports'])} reports), sex is stated in {fmt_int(ds['sex'])} and "
            f"age in {fmt_int(ds['age'])}\n"
        )
    if not m.get("demographics"):
        note = m["no_demographics"]
        out.append(f"\n## No demographics\n\n{note['statement']}.\n")
        if note.get("source_note"):
            out.append(f"What the source says about who is in it: {note['source_note']}\n")
        out.append("\nBiases that could exist, and how to test:\n")
        out += [f"- **{b['attribute']}**: {b['how_to_test']}\n" for b in note["possible_biases"]]
    timing = m.get("timing", {})
    if "audit_s" in timing:
        out.append(f"\nAudit time: {fmt_seconds(timing['audit_s'])} s (every grouping, label, metric and interval).\n")
    for name, entry in m.get("audits", {}).items():
        slug = _slug(name)
        out.append(f"\n## By {name}\n")
        counts = ", ".join(f"{g}: {fmt_int(n)}" for g, n in entry["counts"].items())
        out.append(f"Test cases per group: {counts}.\n")
        if entry.get("not_compared"):
            out.append(f"Not compared (too small or not stated): {', '.join(entry['not_compared'])}.\n")
        if entry.get("one_class"):
            out.append(
                "Listed, not compared (too few positive or negative test cases for AUC, sensitivity and "
                "specificity): " + ", ".join(f"{k} ({v})" for k, v in entry["one_class"].items()) + ".\n"
            )
        if "table" not in entry:
            out.append(f"\n{entry.get('note', '')}\n")
            continue
        out.append("\n### Macro over labels\n\n")
        out.append(_table(run_dir, f"audit_{slug}", AUDIT_COLS, where=lambda d: d.label == "macro"))
        out.append("\n### Disparities\n\n")
        for measure, label in (("auc", "AUC"), ("eo", "equalized odds"), ("dp", "demographic parity")):
            c = entry["chance"][measure]
            out.append(
                f"- {label}: {c['tests']} pairwise tests; {c['expected_by_chance']:.1f} expected below 0.05 by "
                f"chance, {c['uncorrected_below_alpha']} observed; **{c['disparities_holm']} labels with a "
                "disparity after Holm's correction**\n"
            )
        out.append("\n")
        out.append(_table(run_dir, f"disparities_{slug}", DISP_COLS))
        out.append("\n### Every label\n\n")
        out.append(_table(run_dir, f"audit_{slug}", AUDIT_COLS, where=lambda d: d.label != "macro"))
        out.append("\n" + _fig(run_dir, f"metrics_{slug}", f"Macro metrics by {name}, 95% intervals"))
        out.append("\n" + _fig(run_dir, f"reliability_{slug}", f"Reliability by {name}"))
    mit = m.get("mitigation")
    if mit:
        out.append(f"\n## Mitigation by {mit['grouping']}: before and after\n\n")
        out.append(
            f"ThresholdOptimizer ({mit['constraint']}) fitted on the validation split only and applied to test; "
            "its scores after are the probability of a positive decision under the fitted (randomised) rule, so "
            "its AUC is that of the decisions, not of the unchanged model scores. "
        )
        retrain = mit["notes"].get("balanced_retrain", {})
        if "not_run" in retrain:
            out.append(f"Balanced retrain not run: {retrain['not_run']}.")
        elif retrain:
            out.append(
                f"Balanced retrain of `{retrain['unit']}` with group x label weights "
                f"({fmt_metric(retrain['weight_min'])} to {fmt_metric(retrain['weight_max'])}), "
                f"{fmt_seconds(retrain['train_seconds'])} s."
            )
        skipped = mit["notes"].get("threshold_optimizer", {}).get("skipped_labels", {})
        if skipped:
            out.append(
                " ThresholdOptimizer left these labels as they were: "
                + "; ".join(f"{k} ({v})" for k, v in skipped.items())
                + "."
            )
        out.append(f" Worst label by equalized-odds difference before: **{mit['worst_label']}**.\n\n")
        out.append(readable_table(pd.read_csv(run_dir / "tables" / "mitigation.csv"), max_columns=None))
        for variant, t in mit["target"].items():
            out.append(
                f"\n- {variant}: worst-label equalized-odds difference {fmt_metric(t['worst_label_eod_before'])} -> "
                f"{fmt_metric(t['worst_label_eod_after'])} (ratio {fmt_metric(t['eod_ratio'])}; halved: "
                f"{'yes' if t['halved'] else 'no'}), macro-AUC cost {fmt_metric(t['macro_auc_cost'])} (within 0.005: "
                f"{'yes' if t['cost_within_0_005'] else 'no'})"
            )
        out.append("\n")
    if outside:
        out.append(_outside_card(m))
    ethics = run_dir / "ethics.md"
    if ethics.is_file():
        out.append("\n" + ethics.read_text(encoding="utf-8"))
    return "\n".join(s.rstrip("\n") + "\n" if s.endswith("\n") else s for s in out)


def _outside_card(m: dict[str, Any]) -> str:
    """The model-card section of an outside model: what this audit knows of it, and what it cannot know."""
    src = m["source"]
    overall = m.get("overall", {}).get("macro", {})
    rows = src.get("rows", {})
    known = [
        f"its scores for {fmt_int(rows.get('total', src['n_test'] + src['n_val']))} cases in `{src['run']}` "
        f"({fmt_int(rows.get('left_out', 0))} rows marked train left out), task "
        f"{'binary' if src['task'] == 'multi-class' and len(src['labels']) == 1 else src['task']}, labels "
        + ", ".join(f"`{x}`" for x in src["labels"]),
        "the groups the file records: " + (", ".join(f"`{c}`" for c in src["metadata_columns"]) or "none"),
    ]
    if overall:
        known.append(
            f"on these test cases: macro AUC {fmt_metric(overall['auc'])}, calibration error (ECE) "
            f"{fmt_metric(overall['ece'])}, and every subgroup number above"
        )
    unknown = (
        "who made the model and which version this is; its architecture and inputs; the data it was trained and "
        "tuned on, and whether these cases overlap them; its intended use, users and setting; the threshold used "
        "in practice (this audit decides at 0.5 or the highest probability); how its scores were calibrated; and "
        "how it behaves on groups the file does not record"
    )
    return (
        "\n## Model card: an outside model\n\n"
        + "**What is known** (from the file and this audit): "
        + "; ".join(known)
        + ".\n\n**What is not known** (ask the model's maker): "
        + unknown
        + ". Mitigation by retraining is not possible: only the scores are here.\n"
    )


def write_fairness_report(run_dir: str | Path) -> Path:
    """Write report.md and report.html of a fairness run folder; return report.md."""
    run_dir = Path(run_dir)
    return write_report(run_dir, build_fairness_report(run_dir), title="medassist fairness")
