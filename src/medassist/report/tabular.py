"""The report of a tabular study run folder (Markdown and HTML), from its files only."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from medassist.report.html import write_report
from medassist.utils.format import computed_on, fmt_int, fmt_metric, fmt_percent, fmt_value_ci, readable_table

NAMES = {"logistic": "logistic regression", "gradient_boosting": "gradient-boosted trees"}


def build_tabular_report(run_dir: str | Path) -> str:
    run_dir = Path(run_dir)
    m = json.loads((run_dir / "metrics.json").read_text())
    sel = m["selected"]
    rows = {r["model"]: r for r in m["comparison"]}
    chosen = rows[sel["model"]]
    sizes, prev = m["sizes"], m["prevalence"]
    lines = [
        f"# Tabular study: {m['dataset']}",
        "",
        f"Run folder `{run_dir.name}`. Outcome: `{m['target']}`. Patients: train {fmt_int(sizes['train'])}, "
        f"validation {fmt_int(sizes['val'])}, test {fmt_int(sizes['test'])} (outcome rate "
        f"{fmt_percent(prev['train'])}, {fmt_percent(prev['val'])}, {fmt_percent(prev['test'])}); "
        f"{fmt_int(m['data']['dropped_missing_target'])} rows without an outcome left out. Features: "
        f"{len(m['features']['numeric'])} numeric (median-imputed with missing-value indicators, standardised) and "
        f"{len(m['features']['categorical'])} coded (one-hot). Every setting ({m['settings_tried']}) was fitted on "
        "train and scored on validation AUC; each model kept its best setting, and the simpler model was chosen "
        "unless the other's validation AUC was clearly higher (its paired bootstrap interval above zero); the test "
        "split was evaluated only for reporting. Intervals are 95% bootstrap "
        f"intervals ({fmt_int(m['n_boot'])} resamples). " + computed_on(m),
        "",
        "## Result",
        "",
        f"Chosen: **{NAMES.get(sel['model'], sel['model'])}** ({_settings(sel['settings'])}), validation AUC "
        f"{fmt_metric(sel['val_auc'])}. On test: AUC "
        f"{fmt_value_ci(chosen['test_auc'], chosen['test_auc_lo'], chosen['test_auc_hi'])}, accuracy "
        f"{fmt_value_ci(chosen['test_accuracy'], chosen['test_accuracy_lo'], chosen['test_accuracy_hi'])}, "
        f"calibration error (ECE) {fmt_value_ci(chosen['test_ece'], chosen['test_ece_lo'], chosen['test_ece_hi'])}.",
        "",
    ]
    rule = m.get("choice_rule", {})
    best = rule.get("best_on_validation")
    if best and best != sel["model"]:
        g = rule["gaps_to_best"][sel["model"]]
        lines += [
            f"{NAMES.get(best, best).capitalize()} had the higher validation AUC "
            f"({fmt_metric(rows[best]['val_auc'])}), but not "
            f"clearly: its advantage over {NAMES.get(sel['model'], sel['model'])} on the validation patients was "
            f"{fmt_value_ci(g[0], g[1], g[2], kind='delta')}, so the simpler model was kept.",
            "",
        ]
    for name, r in rows.items():
        if name == sel["model"] or "chosen_minus_auc" not in r:
            continue
        lo, hi = r["chosen_minus_auc_lo"], r["chosen_minus_auc_hi"]
        verdict = "a difference" if lo > 0 or hi < 0 else "no difference shown (the interval includes zero)"
        lines += [
            f"Against {NAMES.get(name, name)} on the same test patients: test AUC difference "
            f"{fmt_value_ci(r['chosen_minus_auc'], lo, hi, kind='delta')}: {verdict}.",
            "",
        ]
    comparison = pd.read_csv(run_dir / "tables" / "comparison.csv")
    lines += ["## Models (each at its best validation setting)", "", readable_table(comparison), ""]
    search = pd.read_csv(run_dir / "tables" / "search.csv")
    best = search.sort_values("val_auc", ascending=False).groupby("model").head(3)
    lines += [
        "## The search (the three best settings of each model, by validation AUC)",
        "",
        readable_table(best),
        "",
        "Every setting: `tables/search.csv`.",
        "",
    ]
    if (run_dir / "tables" / "sites.csv").is_file():
        lines += [
            "## Sites",
            "",
            "The outcome's rate differs between the sites, so a per-site difference in the model's numbers mixes the "
            "case mix with the site itself:",
            "",
            readable_table(pd.read_csv(run_dir / "tables" / "sites.csv")),
            "",
        ]
    groups = ",".join(g for g in m["groups"] if g != "age") or "sex"
    lines += [
        "## Audit it",
        "",
        "The validation and test predictions are saved with the groups "
        + ", ".join(f"`{g}`" for g in m["groups"])
        + f" in `predictions/`: `medassist fairness --run {run_dir.name} --groups {groups}` audits the chosen model "
        "by group with intervals and Holm's correction, mitigates by post-processing and writes the ethics report.",
        "",
    ]
    return "\n".join(lines)


def _settings(settings: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in settings.items())


def write_tabular_report(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    return write_report(run_dir, build_tabular_report(run_dir), title=f"Tabular study {run_dir.name}")
