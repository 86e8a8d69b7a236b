"""Figures of the audit: per-group metrics with 95% error bars, a reliability diagram per group, ROC curves per
group with each group's operating point, and the disparity ratios against the tolerance band."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from medassist.evaluate.calibration import bin_index  # noqa: E402
from medassist.fairness.audit import Scored, summary_label  # noqa: E402
from medassist.utils.io import atomic_path  # noqa: E402

SHOWN = ("auc", "sensitivity", "specificity", "ppv", "f1", "brier", "ece")


def plot_group_metrics(table: pd.DataFrame, path: Path, *, title: str) -> Path:
    """The summary metrics (the label's, or the macro over labels) of each group (and overall) with their 95%
    bootstrap intervals as error bars."""
    labels = [x for x in dict.fromkeys(table.label) if x != "macro"]
    summary = summary_label(labels)
    rows = table[table.label == summary].reset_index(drop=True)
    fig, axes = plt.subplots(1, len(SHOWN), figsize=(2.4 * len(SHOWN), 3.2), sharey=False)
    x = np.arange(len(rows))
    for ax, m in zip(axes, SHOWN, strict=True):
        v = rows[m].to_numpy(dtype=float)
        lo, hi = rows[f"{m}_lo"].to_numpy(dtype=float), rows[f"{m}_hi"].to_numpy(dtype=float)
        err = np.vstack([np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)])
        colors = ["0.4" if g == "overall" else f"C{i}" for i, g in enumerate(rows.group)]
        ax.bar(x, v, color=colors, alpha=0.8)
        ax.errorbar(x, v, yerr=np.nan_to_num(err), fmt="none", ecolor="k", capsize=3, lw=1)
        ax.set_xticks(x, rows.group, rotation=60, ha="right", fontsize=7)
        ax.set_title(m, fontsize=9)
    what = "macro over labels" if summary == "macro" else summary
    fig.suptitle(f"{what}, {title} (95% bootstrap intervals within groups)", fontsize=9)
    return _save(fig, path)


def plot_group_reliability(
    s: Scored, groups: pd.Series, compared: list[str], path: Path, *, title: str, n_bins: int = 10
) -> Path:
    """Observed frequency against predicted probability per group, over every (case, label) pair."""
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    g = groups.to_numpy(dtype=object)
    for i, group in enumerate(compared):
        rows = g == group
        p, y = s.p[rows].ravel(), s.y[rows].ravel()
        b = bin_index(p, n_bins)
        count = np.bincount(b, minlength=n_bins)
        ok = count > 0
        mean_p = np.bincount(b, weights=p, minlength=n_bins)[ok] / count[ok]
        freq = np.bincount(b, weights=y, minlength=n_bins)[ok] / count[ok]
        ax.plot(mean_p, freq, "o-", color=f"C{i + 1}", ms=3, label=f"{group} (n={int(rows.sum())})")
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed frequency")
    ax.set_title(f"reliability by {title}", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


MAX_PANELS = 8  # labels drawn in one ROC figure


def plot_group_roc(s: Scored, groups: pd.Series, compared: list[str], path: Path, *, title: str) -> Path:
    """Per label, each group's ROC curve (scikit-learn's ``roc_curve``) with its operating point marked: the
    false- and true-positive rate of the audited decisions in that group."""
    shown = s.labels[:MAX_PANELS]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.0 * len(shown), 4.0), squeeze=False)
    g = groups.to_numpy(dtype=object)
    for k, (ax, label) in enumerate(zip(axes[0], shown, strict=True)):
        ax.plot([0, 1], [0, 1], "k:", lw=1)
        for i, group in enumerate(compared):
            rows = g == group
            y, p, d = s.y[rows, k], s.p[rows, k], s.d[rows, k]
            if y.min(initial=1) == y.max(initial=0):
                continue  # one class only: no curve
            fpr, tpr, _ = roc_curve(y, p)
            color = f"C{i}"
            ax.plot(fpr, tpr, color=color, lw=1.2, label=f"{group} (n={int(rows.sum())})")
            op_fpr, op_tpr = float(d[y == 0].mean()), float(d[y == 1].mean())
            ax.plot([op_fpr], [op_tpr], "o", color=color, ms=7, mec="k")
        ax.set_xlabel("false-positive rate")
        ax.set_ylabel("sensitivity")
        ax.set_title(f"{label}: ROC by {title} (dots: operating points)", fontsize=8)
        ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def plot_disparity(ratios: pd.DataFrame, path: Path, *, title: str, tolerance: float) -> Path:
    """Each group's ratio to the reference group (log scale) with its 95% interval, per metric, over the shaded
    tolerance band [tolerance, 1 / tolerance]; the label is the first one audited."""
    label = ratios.label.iloc[0]
    rows = ratios[ratios.label == label]
    metrics = list(dict.fromkeys(rows.metric))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 0.45 * rows.group.nunique() + 1.6))
    axes = np.atleast_1d(axes)
    for ax, metric in zip(axes, metrics, strict=True):
        r = rows[rows.metric == metric].reset_index(drop=True)
        y = np.arange(len(r))
        ax.axvspan(tolerance, 1 / tolerance, color="0.9", zorder=0)
        ax.axvline(1.0, color="0.5", lw=0.8)
        ratio = r.ratio.to_numpy(dtype=float)
        lo, hi = r.ratio_lo.to_numpy(dtype=float), r.ratio_hi.to_numpy(dtype=float)
        ok = np.isfinite(ratio) & (ratio > 0)
        colors = np.where(r.verdict.isin(["within", "reference"]), "C0", "C3")
        err = np.vstack([np.clip(ratio - lo, 0, None), np.clip(hi - ratio, 0, None)])
        for j in np.flatnonzero(ok):
            ax.errorbar(ratio[j], y[j], xerr=np.nan_to_num(err[:, j : j + 1]), fmt="o", color=colors[j], capsize=3)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator([0.1, 0.25, 0.5, tolerance, 1.0, 1 / tolerance, 2.0, 4.0, 10.0]))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(axis="x", labelsize=7)
        ax.set_yticks(
            y, [f"{g}{' (ref.)' if v == 'reference' else ''}" for g, v in zip(r.group, r.verdict, strict=True)]
        )
        ax.tick_params(axis="y", labelsize=7)
        ax.invert_yaxis()  # the first group on top
        ax.set_title(metric.replace("_", " "), fontsize=9)
        ax.set_xlabel("ratio to reference", fontsize=8)
    fig.suptitle(f"{label}: disparity ratios by {title}, band {tolerance:g}-{1 / tolerance:.3g}", fontsize=9)
    return _save(fig, path)
