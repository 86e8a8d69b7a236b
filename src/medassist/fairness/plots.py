"""Figures of the audit: per-group metrics with 95% error bars, and a reliability diagram per group."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from medassist.evaluate.calibration import bin_index  # noqa: E402
from medassist.fairness.audit import Scored  # noqa: E402
from medassist.utils.io import atomic_path  # noqa: E402

SHOWN = ("auc", "sensitivity", "specificity", "ppv", "f1", "brier", "ece")


def plot_group_metrics(table: pd.DataFrame, path: Path, *, title: str) -> Path:
    """Macro metrics of each group (and overall) with their 95% bootstrap intervals as error bars."""
    rows = table[table.label == "macro"].reset_index(drop=True)
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
    fig.suptitle(f"macro over labels, {title} (95% bootstrap intervals within groups)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


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
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
