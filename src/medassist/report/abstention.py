"""The deploy report's section on the shipped rule that answers every finding it can and refers the others by name
(:mod:`medassist.deploy.abstention`), written from the deploy run's metrics.json."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from medassist.utils.format import fmt_percent, fmt_points, fmt_value_ci, readable_table


def _pct_ci(row: dict[str, Any], key: str) -> str:
    lo, hi = row[f"{key}_ci95"]
    return fmt_value_ci(row[key], lo, hi, kind="percent")


def _table(test: dict[str, Any], val: dict[str, Any], unit: str) -> str:
    rows = []
    for t, v in zip(test["findings"], val["findings"], strict=True):
        rows.append(
            {
                unit: t["label"],
                "assessed": "yes" if t["assessed"] else "no: always referred",
                "positives (test)": t["n_positive"],
                "coverage (test)": _pct_ci(t, "coverage"),
                "missed (test)": _pct_ci(t, "miss"),
                "false flags (test)": _pct_ci(t, "false"),
                "coverage (val)": fmt_percent(v["coverage"]),
            }
        )
    return readable_table(pd.DataFrame(rows))


def _over_target(test: dict[str, Any], key: str, target: float) -> list[str]:
    """Findings whose test rate is above the target with the whole interval above it."""
    return [f["label"] for f in test["findings"] if f[f"{key}_ci95"][0] is not None and f[f"{key}_ci95"][0] > target]


def _difficulty(c: dict[str, Any], whole: str) -> list[str]:
    """Whether validation was easier than test (its error without abstention lower, the 95% interval of the
    difference above zero), and what that does to the rule fitted on it."""
    if c.get("val_error_without_abstention") is None or c.get("val_n") is None:
        return []
    v, t = c["val_error_without_abstention"], c["test"]["error_without_abstention"]
    n_v, n_t = c["val_n"], c["test"]["n"]
    half = 1.96 * math.sqrt(v * (1 - v) / n_v + t * (1 - t) / n_t)
    said = (
        f"answering every {whole}, the error is {fmt_percent(v)} on validation and {fmt_percent(t)} on test "
        f"(difference {fmt_points(t - v)} points, 95% CI {fmt_points(t - v - half)} to {fmt_points(t - v + half)})"
    )
    if t - v - half > 0:
        return [
            f"Validation is easier than test: {said}. A rule fitted on the easier split answers test {whole}s that "
            f"it would refer if test were like validation, so the accepted errors on test run above the targets.",
            "",
        ]
    return [f"Validation and test are alike in difficulty: {said}, an interval that includes zero.", ""]


def per_finding_section(c: dict[str, Any], task: str) -> list[str]:
    """Per-finding (or per-class) coverage and accepted errors on test with intervals; how validation compares."""
    pf = c["per_finding"]
    rule, test, val = pf["rule"], pf["test"], pf["val"]
    unit, whole = ("finding", "report") if task == "multi-label" else ("class", "case")
    not_assessed = [f["label"] for f in test["findings"] if not f["assessed"]]
    lines = [
        f"## An answer for every {unit}",
        "",
        f'The bundle answers each {unit} on its own and refers the others by name ("uncertain: ..."). The rule was '
        f"chosen on validation so that among answered cases at most {fmt_percent(rule['target_miss'])} of a "
        f"{unit}'s positives are missed and at most {fmt_percent(rule['target_false'])} of its negatives are flagged"
        f"; a {unit} with fewer than {rule['min_positives']} validation positives is not assessed and always referred"
        + (f" (here: {', '.join(not_assessed)})." if not_assessed else " (none here)."),
        "",
        f"Every {unit} answered: {fmt_value_ci(test['complete'], *test['complete_ci95'], kind='percent')} of "
        f"{test['n']:,} test {whole}s (validation {fmt_percent(val['complete'])}); the case-level rule above answers "
        f"{fmt_percent(c['test']['coverage'])}.",
        "",
        _table(test, val, unit),
        "",
    ]
    lines += _difficulty(c, whole)
    for key, what, target in (("miss", "missed positives", "target_miss"), ("false", "false flags", "target_false")):
        over = _over_target(test, key, rule[target])
        if over:
            lines += [
                f"On test the {what} of {', '.join(over)} are above the {fmt_percent(rule[target])} target with "
                f"the whole interval above it: the target held on validation and not on test.",
                "",
            ]
    lines += ["Every number at full precision, validation and test: `tables/per_finding.csv`.", ""]
    return lines
