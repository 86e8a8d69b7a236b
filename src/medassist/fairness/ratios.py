"""Disparity ratios to a reference group, as an auditor reads them (Aequitas' view).

For each label and each compared group: its sensitivity, false-positive rate, PPV and positive (selection) rate
divided by the reference group's, with a 95% interval from the within-group bootstrap replicates, and a verdict
against the tolerance band: a ratio within [tolerance, 1 / tolerance] (the four-fifths rule: 0.8 to 1.25) is
**within**, otherwise **below** or **above**. The reference group is, per grouping, one of Aequitas' three:

- ``majority``: the compared group with the most test cases;
- ``best``: per metric, the group with the most favourable value (highest sensitivity, PPV and positive rate,
  lowest false-positive rate), as the four-fifths rule compares a selection rate with the highest one;
- a named group (``GROUP``, or ``grouping=GROUP`` to name it for one grouping only).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from medassist.errors import MedAssistError
from medassist.fairness.audit import GroupAudit, interval

# metric -> (column of the audit table and replicates, whether a higher value is better)
RATIO_METRICS = {
    "sensitivity": ("sensitivity", True),
    "fpr": ("specificity", False),  # 1 - specificity
    "ppv": ("ppv", True),
    "positive_rate": ("selection_rate", True),
}
CHOICES = ("majority", "best")


def reference_for(grouping: str, groups: list[str], choices: list[str]) -> str:
    """The reference choice of one grouping: ``grouping=GROUP`` if given for it, else a bare group name it holds,
    else ``majority`` or ``best`` (the first given; ``majority`` by default).

    Raises:
        MedAssistError: a named group that is not one of the grouping's compared groups.
    """
    bare = None
    for c in choices:
        name, sep, group = c.partition("=")
        if sep and name.strip() == grouping:
            if group.strip() not in groups:
                raise MedAssistError(
                    f"--reference-group {c}: '{group.strip()}' is not a compared group of {grouping}; its compared "
                    f"groups are {', '.join(groups)}"
                )
            return group.strip()
        if not sep and c in groups:
            return c
        if not sep and c in CHOICES and bare is None:
            bare = c
    return bare or "majority"


def check_choices(choices: list[str], groupings: dict[str, list[str]]) -> None:
    """Every ``--reference-group`` value names a choice, a grouping's group, or ``grouping=GROUP`` of an audited
    grouping (``groupings``: each audited grouping's compared groups)."""
    every = {g for groups in groupings.values() for g in groups}
    for c in choices:
        name, sep, _ = c.partition("=")
        if sep and name.strip() not in groupings:
            raise MedAssistError(
                f"--reference-group {c}: '{name.strip()}' is not an audited grouping with two compared groups; "
                f"choose one of {', '.join(groupings) or 'none'}"
            )
        if sep and c.partition("=")[2].strip() not in groupings[name.strip()]:
            raise MedAssistError(
                f"--reference-group {c}: '{c.partition('=')[2].strip()}' is not a compared group of {name.strip()}; "
                f"its compared groups are {', '.join(groupings[name.strip()])}"
            )
        if not sep and c not in CHOICES and c not in every:
            raise MedAssistError(
                f"--reference-group {c}: not majority, best, or a compared group of any grouping "
                f"({', '.join(sorted(every))}); use grouping=GROUP to name one grouping's group"
            )


def _value(audit: GroupAudit, group: str, label: str, column: str) -> float:
    t = audit.table
    v = float(t.loc[(t.group == group) & (t.label == label), column].iloc[0])
    return 1 - v if column == "specificity" else v


def ratio_table(audit: GroupAudit, labels: list[str], reference: str, tolerance: float) -> pd.DataFrame:
    """One row per (label, metric, compared group): value, reference value, ratio with its 95% interval and the
    verdict against the band [tolerance, 1 / tolerance]."""
    if not 0 < tolerance < 1:
        raise MedAssistError(f"--tolerance must lie between 0 and 1 (0.8 is the four-fifths rule), got {tolerance}")
    band = (tolerance, 1 / tolerance)
    sizes = audit.counts
    rows = []
    for k, label in enumerate(labels):
        for metric, (column, higher_better) in RATIO_METRICS.items():
            values = {g: _value(audit, g, label, column) for g in audit.compared}
            if reference == "majority":
                ref = max(audit.compared, key=lambda g: (sizes.get(g, 0), -audit.compared.index(g)))
            elif reference == "best":
                defined = [g for g in audit.compared if np.isfinite(values[g])]
                pick = max if higher_better else min
                ref = pick(defined, key=values.get) if defined else audit.compared[0]
            else:
                ref = reference

            def reps(g: str, column: str = column, k: int = k) -> np.ndarray:
                r = audit.boot[g][column][:, k]
                return 1 - r if column == "specificity" else r

            for g in audit.compared:
                ratio = values[g] / values[ref] if values[ref] > 0 else float("nan")
                with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    lo, hi = interval(reps(g) / np.where(reps(ref) > 0, reps(ref), np.nan))
                if g == ref:
                    verdict = "reference"
                elif not np.isfinite(ratio):
                    verdict = "undefined"
                else:
                    verdict = "below" if ratio < band[0] else "above" if ratio > band[1] else "within"
                rows.append(
                    {
                        "grouping": audit.grouping,
                        "label": label,
                        "metric": metric,
                        "group": g,
                        "reference": ref,
                        "value": values[g],
                        "reference_value": values[ref],
                        "ratio": ratio,
                        "ratio_lo": lo if g != ref else 1.0,
                        "ratio_hi": hi if g != ref else 1.0,
                        "verdict": verdict,
                        "interval_outside_band": bool(g != ref and (hi < band[0] or lo > band[1])),
                    }
                )
    return pd.DataFrame(rows)
