"""Disparities between the compared groups, with intervals and a correction for the many labels and pairs.

Per label (and macro): the AUC gap (the best group's AUC minus the worst group's, those two groups fixed at the
point estimate; its interval is the bootstrap interval of that difference), the worst-group AUC, and fairlearn's
equalized-odds and demographic-parity differences (bias-corrected intervals from the same within-group
replicates: a largest-minus-smallest difference grows with resampling noise).

A gap is called a disparity only when a test says so after Holm's correction: every pair of compared groups of
every label is tested (a two-sided p-value of the pair's difference: AUC; true- and false-positive rate
for equalized odds; selection rate for demographic parity), and Holm's step-down holds the chance of any false
call in a grouping at 5% for each measure. Each pair's p-value is a Wald test of its difference with the
standard error of the within-group bootstrap.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference
from scipy.stats import norm

from medassist.fairness.audit import MACRO, GroupAudit, Scored, interval, macro, rows_of

ALPHA = 0.05


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control), in the input's order."""
    p = np.asarray(p, dtype=np.float64)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


def bootstrap_p(diff: np.ndarray, point: float | None = None) -> float:
    """Two-sided p-value that a difference is zero: a Wald test with the bootstrap's standard error.

    (A p-value counted from the replicates could not go below 1 / B, too coarse for Holm's correction over
    hundreds of pairs: with 1,000 replicates no more than 50 tests could ever be rejected.)
    """
    d = diff[np.isfinite(diff)]
    if d.size < 2:
        return float("nan")
    se = float(d.std(ddof=1))
    centre = float(d.mean()) if point is None or not np.isfinite(point) else float(point)
    if se == 0:
        return 1.0 if centre == 0 else 0.0
    return float(2 * norm.sf(abs(centre) / se))


def _rates(audit: GroupAudit, group: str, k: int | None) -> dict[str, np.ndarray]:
    """Bootstrap replicates (B,) of AUC, TPR, FPR and selection rate of a group, for label k or macro (None)."""
    b = audit.boot[group]
    pick = (lambda a: macro(a)) if k is None else (lambda a: a[:, k])
    return {
        "auc": pick(b["auc"]),
        "tpr": pick(b["sensitivity"]),
        "fpr": pick(1 - b["specificity"]),
        "selection": pick(b["selection_rate"]),
    }


def _point(audit: GroupAudit, group: str, label: str, metric: str) -> float:
    t = audit.table
    return float(t.loc[(t.group == group) & (t.label == label), metric].iloc[0])


def disparities(audit: GroupAudit, s: Scored, groups: pd.Series) -> tuple[pd.DataFrame, dict[str, dict]]:
    """One row per label and a macro row: the gaps, their intervals, Holm-adjusted p-values and disparity calls;
    and per label the bootstrap replicates (B,) of its AUC gap, equalized-odds and demographic-parity differences
    (paired with any other audit drawn with the same seed on the same groups)."""
    compared = audit.compared
    keep = groups.isin(compared).to_numpy()
    g = groups[keep].to_numpy(dtype=object)
    rows, tests = [], {"auc": [], "eo": [], "dp": []}  # (row index, p) of every pair test
    for k, label in enumerate(rows_of(s.labels)):
        kk = None if label == MACRO else k
        row: dict = {"grouping": audit.grouping, "label": label, "n_groups": len(compared)}
        reps = {grp: _rates(audit, grp, kk) for grp in compared}
        aucs = {grp: _point(audit, grp, label, "auc") for grp in compared}
        defined = [grp for grp in compared if np.isfinite(aucs[grp])]
        if len(defined) >= 2:
            worst = min(defined, key=aucs.get)
            best = max((grp for grp in defined if grp != worst), key=aucs.get)  # two groups, even when tied
            diff = reps[best]["auc"] - reps[worst]["auc"]
            row["_gap_reps"] = diff
            row.update(
                {
                    "auc_gap": aucs[best] - aucs[worst],
                    "auc_gap_groups": f"{best} - {worst}",
                    **dict(zip(("auc_gap_lo", "auc_gap_hi"), interval(diff), strict=True)),
                    "worst_group": worst,
                    "worst_group_auc": aucs[worst],
                    "worst_group_auc_lo": _point(audit, worst, label, "auc_lo"),
                    "worst_group_auc_hi": _point(audit, worst, label, "auc_hi"),
                }
            )
        if label != MACRO:
            y, d = s.y[keep, k].astype(int), s.d[keep, k].astype(int)
            row["eod"] = float(equalized_odds_difference(y, d, sensitive_features=g))
            row["dpd"] = float(demographic_parity_difference(y, d, sensitive_features=g))
        else:
            row["eod"] = float(np.nanmean([r["eod"] for r in rows]))
            row["dpd"] = float(np.nanmean([r["dpd"] for r in rows]))
        tpr = np.stack([reps[grp]["tpr"] for grp in compared], axis=1)  # (B, G)
        fpr = np.stack([reps[grp]["fpr"] for grp in compared], axis=1)
        sel = np.stack([reps[grp]["selection"] for grp in compared], axis=1)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a replicate without positives in a group: NaN
            eod_reps = np.maximum(np.nanmax(tpr, 1) - np.nanmin(tpr, 1), np.nanmax(fpr, 1) - np.nanmin(fpr, 1))
            dpd_reps = np.nanmax(sel, 1) - np.nanmin(sel, 1)
        if label == MACRO:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                eod_reps = np.nanmean(np.stack([r["_eod_reps"] for r in rows], 1), 1)
                dpd_reps = np.nanmean(np.stack([r["_dpd_reps"] for r in rows], 1), 1)
        row["_eod_reps"], row["_dpd_reps"] = eod_reps, dpd_reps
        row.update(dict(zip(("eod_lo", "eod_hi"), interval(eod_reps, around=row["eod"]), strict=True)))
        row.update(dict(zip(("dpd_lo", "dpd_hi"), interval(dpd_reps, around=row["dpd"]), strict=True)))
        if label != MACRO:  # the macro row summarises; the tests are per label
            i = len(rows)
            for a, b in itertools.combinations(compared, 2):
                tests["auc"].append((i, bootstrap_p(reps[a]["auc"] - reps[b]["auc"])))
                for rate in ("tpr", "fpr"):
                    tests["eo"].append((i, bootstrap_p(reps[a][rate] - reps[b][rate])))
                tests["dp"].append((i, bootstrap_p(reps[a]["selection"] - reps[b]["selection"])))
        rows.append(row)
    boot = {}
    for r in rows:
        boot[r["label"]] = {"eod": r.pop("_eod_reps"), "dpd": r.pop("_dpd_reps"), "auc_gap": r.pop("_gap_reps", None)}
    table = pd.DataFrame(rows)
    for measure, pairs in tests.items():
        p = np.array([q for _, q in pairs], dtype=np.float64)
        finite = np.isfinite(p)
        adj = np.full(len(p), np.nan)
        adj[finite] = holm(p[finite])
        best_p = pd.Series(np.nan, index=table.index)
        for (i, _), a in zip(pairs, adj, strict=True):
            if np.isfinite(a):
                best_p[i] = a if not np.isfinite(best_p[i]) else min(best_p[i], a)
        table[f"{measure}_p_holm"] = best_p
        table[f"{measure}_disparity"] = best_p < ALPHA
        table.attrs[f"{measure}_tests"] = int(finite.sum())
        table.attrs[f"{measure}_uncorrected"] = int((p[finite] < ALPHA).sum())
    return table, boot


def chance_summary(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per measure: tests made, how many one would expect below 0.05 by chance alone, how many were (uncorrected),
    and how many disparities remain after Holm's correction."""
    out = {}
    for measure in ("auc", "eo", "dp"):
        m = int(table.attrs.get(f"{measure}_tests", 0))
        out[measure] = {
            "tests": m,
            "expected_by_chance": ALPHA * m,
            "uncorrected_below_alpha": int(table.attrs.get(f"{measure}_uncorrected", 0)),
            "disparities_holm": int(table.loc[table.label != MACRO, f"{measure}_disparity"].sum()),
        }
    return out
