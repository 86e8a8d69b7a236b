"""The fairness study's report: reads the fairness run folder's files and nothing else."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from medassist.fairness.mitigate import MITIGATION_NAMES, TARGET_NAMES
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
    "worst_group": "worst group",
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
            "as given. "
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
    point = m.get("operating_point")
    if point:
        out.append(f"**Operating point.** {point['statement'][0].upper() + point['statement'][1:]}.")
        out.append(_far_from_prevalence(m) + "\n")
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
        out += _grouping(run_dir, m, name, entry)
    mit = m.get("mitigation")
    if mit:
        out += _mitigation(run_dir, mit)
    if outside:
        out.append(_outside_card(m))
    ethics = run_dir / "ethics.md"
    if ethics.is_file():
        out.append("\n" + ethics.read_text(encoding="utf-8"))
    return "\n".join(s.rstrip("\n") + "\n" if s.endswith("\n") else s for s in out)


def _far_from_prevalence(m: dict[str, Any]) -> str:
    """A warning when the model says yes far more or far less often than the outcome occurs: every threshold
    metric then describes a model at an operating point it may never be used at."""
    overall = m.get("overall", {}).get(m.get("summary_label", "macro"))
    if not overall:
        return ""
    rate, prevalence = overall["selection_rate"], overall["prevalence"]
    if prevalence > 0 and not 0.25 <= rate / prevalence <= 4:
        return (
            f" **At this threshold the model says yes for {rate:.2%} of test cases against a prevalence of "
            f"{prevalence:.2%}**: sensitivity, specificity, equalized odds and demographic parity describe a model "
            "that "
            + ("almost never says yes" if rate < prevalence else "says yes far more often than the outcome occurs")
            + "; check that this is the threshold the model is used at (--threshold), or choose one by a rule "
            "(--threshold-rule)."
        )
    return ""


RATIO_HEADERS = {"ratio": "ratio to reference", "reference_value": "reference value"}
VERDICT_COLS = ["label", "metric", "group", "reference", "value", "reference_value", "ratio", "verdict"]


def _grouping(run_dir: Path, m: dict[str, Any], name: str, entry: dict[str, Any]) -> list[str]:
    summary = m.get("summary_label", "macro")
    several = summary == "macro"  # several labels, summed up by their macro row
    slug = _slug(name)
    out = [f"\n## By {name}\n"]
    counts = ", ".join(f"{g}: {fmt_int(n)}" for g, n in entry["counts"].items())
    out.append(f"Test cases per group: {counts}.\n")
    if entry.get("suppressed"):
        sup = entry["suppressed"]
        out.append(
            f"Suppressed: {sup['groups']} group(s) of this intersection with fewer than {m['min_group_size']} test "
            f"cases ({fmt_int(sup['rows'])} rows in all) are neither listed nor compared.\n"
        )
    if entry.get("not_compared"):
        out.append(f"Not compared (too small or not stated): {', '.join(entry['not_compared'])}.\n")
    if entry.get("one_class"):
        out.append(
            "Listed, not compared (too few positive or negative test cases for AUC, sensitivity and "
            "specificity): " + ", ".join(f"{k} ({v})" for k, v in entry["one_class"].items()) + ".\n"
        )
    if entry.get("hidden_rows"):
        out.append(f"Rows outside the compared groups: {fmt_int(entry['hidden_rows'])}.\n")
    if "table" not in entry:
        out.append(f"\n{entry.get('note', '')}\n")
        return out
    out.append("\n### Macro over labels\n\n" if several else f"\n### {summary}\n\n")
    out.append(_table(run_dir, f"audit_{slug}", AUDIT_COLS, where=lambda d: d.label == summary))
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
    out += _ratios(run_dir, m, entry, slug)
    if several:
        out.append("\n### Every label\n\n")
        out.append(_table(run_dir, f"audit_{slug}", AUDIT_COLS, where=lambda d: d.label != "macro"))
    what = "Macro metrics" if several else f"Metrics of {summary}"
    out.append("\n" + _fig(run_dir, f"metrics_{slug}", f"{what} by {name}, 95% intervals"))
    out.append("\n" + _fig(run_dir, f"roc_{slug}", f"ROC curves by {name}, each group's operating point marked"))
    out.append("\n" + _fig(run_dir, f"reliability_{slug}", f"Reliability (calibration) by {name}"))
    out.append("\n" + _fig(run_dir, f"disparity_{slug}", f"Disparity ratios by {name} against the tolerance band"))
    return out


def _ratios(run_dir: Path, m: dict[str, Any], entry: dict[str, Any], slug: str) -> list[str]:
    ref, tol, v = entry["reference"], m["tolerance"], entry["verdicts"]
    groups = ", ".join(f"{metric.replace('_', ' ')}: {g}" for metric, g in ref["groups"].items())
    how = {
        "majority": "the largest group",
        "best": "per metric, the group with the most favourable value",
        "named": "the group named by --reference-group",
    }[ref["choice"]]
    out = [
        "\n### Ratios to the reference group\n\n",
        f"Reference: {how} ({groups}). Each group's sensitivity, false-positive rate, PPV and positive rate divided "
        f"by the reference group's, with 95% bootstrap intervals; a ratio within {tol:g}-{1 / tol:.3g} (the "
        f"four-fifths rule at 0.8) is **within** the band. Verdicts: {v['within']} within, {v['below']} below, "
        f"{v['above']} above" + (f", {v['undefined']} undefined" if v["undefined"] else "") + ".\n\n",
    ]
    df = pd.read_csv(run_dir / "tables" / f"ratios_{slug}.csv")
    df = df[df.verdict != "reference"]
    keep = [c for c in df.columns if c in VERDICT_COLS or c in ("ratio_lo", "ratio_hi")]
    out.append(readable_table(df[keep], headers=RATIO_HEADERS, max_columns=None))
    return out


def _mitigation(run_dir: Path, mit: dict[str, Any]) -> list[str]:
    out = [f"\n## Mitigation by {mit['grouping']}: before and after\n\n"]
    out.append(
        "Each mitigation is fitted on the validation split only and evaluated on test; a change is called one only "
        "when its paired 95% interval excludes zero, so a mitigation is **improved**, **no change** or **worse** on "
        "the disparity it targets, and only an improved one is offered. ThresholdOptimizer's decisions are "
        "randomised: its scores after are the probability of a positive decision, so its AUC is that of the "
        "decisions, not of the unchanged model scores.\n\n"
    )
    rows = []
    for name, v in mit["variants"].items():
        rows.append(
            {
                "mitigation": MITIGATION_NAMES.get(name, name),
                "target": TARGET_NAMES[v["target"]],
                "before": v["before"],
                "after": v["after"],
                "change": v["change"],
                "change_lo": v["change_lo"],
                "change_hi": v["change_hi"],
                "verdict": v["verdict"],
                "AUC change": v["auc_change"],
                "AUC change_lo": v["auc_change_lo"],
                "AUC change_hi": v["auc_change_hi"],
                "accuracy change": v["accuracy_change"],
                "accuracy change_lo": v["accuracy_change_lo"],
                "accuracy change_hi": v["accuracy_change_hi"],
            }
        )
    if rows:
        out.append(readable_table(pd.DataFrame(rows), max_columns=None))
    offered = mit["offered"]
    out.append(
        "\n**Offered:** "
        + (
            ", ".join(MITIGATION_NAMES.get(n, n) for n in offered)
            if offered
            else "none: no mitigation narrowed the disparity it targets with an interval that excludes zero"
        )
        + ".\n"
    )
    for name, v in mit["variants"].items():
        if v.get("why"):
            out.append(f"- {MITIGATION_NAMES.get(name, name)} ({v['verdict']}): " + "; ".join(v["why"]) + ".\n")
    small = mit.get("smallest_group_val_positives")
    if small:
        out.append(
            f"\nAs MEDFAIR found across medical imaging tasks, post-processing seldom beats the unmitigated model "
            f"when groups are small; here the smallest compared group ({small['group']}) has {small['positives']} "
            "positive validation case(s), and each mitigation's cost in AUC and accuracy is in the table above.\n"
        )
    for name, note in mit["notes"].items():
        if "not_run" in note:
            out.append(f"\n{MITIGATION_NAMES.get(name, name)}: not run: {note['not_run']}.\n")
        elif note.get("skipped_labels"):
            skipped = "; ".join(f"{k} ({w})" for k, w in note["skipped_labels"].items())
            out.append(f"\n{MITIGATION_NAMES.get(name, name)} left these labels as they were: {skipped}.\n")
        elif name == "balanced_retrain":
            out.append(
                f"\nBalanced retrain of `{note['unit']}` with group x label weights "
                f"({fmt_metric(note['weight_min'])} to {fmt_metric(note['weight_max'])}), "
                f"{fmt_seconds(note['train_seconds'])} s.\n"
            )
    out.append("\nEvery measure of every variant, with its change from before:\n\n")
    out.append(readable_table(pd.read_csv(run_dir / "tables" / "mitigation.csv"), max_columns=None))
    return out


def _outside_card(m: dict[str, Any]) -> str:
    """The model-card section of an outside model: what this audit knows of it, and what it cannot know."""
    src = m["source"]
    overall = m.get("overall", {}).get(m.get("summary_label", "macro"), {})
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
            f"on these test cases: AUC {fmt_metric(overall['auc'])}, calibration error (ECE) "
            f"{fmt_metric(overall['ece'])}, and every subgroup number above"
        )
    unknown = (
        "who made the model and which version this is; its architecture and inputs; the data it was trained and "
        "tuned on, and whether these cases overlap them; its intended use, users and setting; the threshold used "
        "in practice (this audit decides as its operating point above says); how its scores were calibrated; and "
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
