"""Per-group metrics with fairlearn's ``MetricFrame`` and 95% bootstrap intervals resampled within groups.

Every label is audited as a binary decision: its score (the model's probability) and its decision (at the run's
validation-chosen threshold, or the arg-max class). Point estimates come from ``MetricFrame`` over scikit-learn's
metrics; the intervals from resampling each group's own cases (weighted-count bootstrap, all replicates at once).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame
from sklearn.metrics import brier_score_loss, f1_score, precision_score, recall_score, roc_auc_score

from medassist.evaluate.calibration import bin_index, expected_calibration_error

METRICS = (
    "n",
    "prevalence",
    "auc",
    "sensitivity",
    "specificity",
    "ppv",
    "f1",
    "brier",
    "ece",
    "selection_rate",
    "accuracy",
)
BIASED = ("ece",)  # metrics given the bias-corrected interval (see :func:`interval`)
ECE_BINS = 15  # the bins of medassist.evaluate.calibration's ECE
_MAX_CELLS = 4_000_000  # resample weights held at once (B x n), to bound memory on large groups


@dataclass
class Scored:
    """What is audited, one column per label: truth, score and decision.

    Attributes:
        labels: label names (K).
        y: (N, K) 0/1 truth.
        p: (N, K) scores (probabilities).
        d: (N, K) 0/1 decisions.
        cluster: (N,) the patient of each case, where a patient has several (the bootstrap then resamples
            patients, not cases); None when every case is its own patient.
    """

    labels: list[str]
    y: np.ndarray
    p: np.ndarray
    d: np.ndarray
    cluster: np.ndarray | None = None

    def rows(self, idx: np.ndarray) -> Scored:
        cluster = None if self.cluster is None else self.cluster[idx]
        return Scored(self.labels, self.y[idx], self.p[idx], self.d[idx], cluster)


# --- point estimates (scikit-learn, through MetricFrame) ------------------------------------------------------------
def _auc(y: np.ndarray, q: np.ndarray) -> float:
    return float(roc_auc_score(y, q[:, 0])) if 0 < y.sum() < len(y) else float("nan")


def _ece(y: np.ndarray, q: np.ndarray) -> float:
    p = q[:, 0]
    return expected_calibration_error(y.astype(np.int64), np.column_stack([1 - p, p]), n_bins=ECE_BINS)


def _specificity(y: np.ndarray, q: np.ndarray) -> float:
    return float(recall_score(1 - y, 1 - q[:, 1].astype(int), zero_division=np.nan))


POINT = {
    "n": lambda y, q: float(len(y)),
    "prevalence": lambda y, q: float(np.mean(y)),
    "auc": _auc,
    "sensitivity": lambda y, q: float(recall_score(y, q[:, 1].astype(int), zero_division=np.nan)),
    "specificity": _specificity,
    "ppv": lambda y, q: float(precision_score(y, q[:, 1].astype(int), zero_division=np.nan)),
    "f1": lambda y, q: float(f1_score(y, q[:, 1].astype(int), zero_division=np.nan)),
    "brier": lambda y, q: float(brier_score_loss(y, q[:, 0])),
    "ece": _ece,
    "selection_rate": lambda y, q: float(np.mean(q[:, 1])),
    "accuracy": lambda y, q: float(np.mean(q[:, 1].astype(int) == y)),
}


def _point(s: Scored, k: int, m: str) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return POINT[m](s.y[:, k].astype(int), np.column_stack([s.p[:, k], s.d[:, k]]))


def metric_frame(s: Scored, k: int, groups: pd.Series) -> MetricFrame:
    """fairlearn's MetricFrame of label ``k``: overall, by group and differences of every metric."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined metrics (a group without positives) are NaN, on purpose
        return MetricFrame(
            metrics=POINT,
            y_true=s.y[:, k].astype(int),
            y_pred=np.column_stack([s.p[:, k], s.d[:, k]]),
            sensitive_features=groups.to_numpy(dtype=object),
        )


# --- bootstrap replicates (weighted counts) -------------------------------------------------------------------------
def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def weighted_auc(positive: np.ndarray, score: np.ndarray, w: np.ndarray) -> np.ndarray:
    """AUC (ties count one half) under case weights ``w`` (B, n): (B,), NaN where a class has no weight.

    Each positive's rank among the negatives is found once; a replicate then only sums the negatives' weights
    (a cumulative sum over the negatives in score order), which is several times faster than sorting weights.
    """
    pos, neg = np.flatnonzero(positive), np.flatnonzero(~positive)
    order = neg[np.argsort(score[neg], kind="stable")]
    s_neg = score[order]
    lo = np.searchsorted(s_neg, score[pos], side="left")  # negatives strictly below each positive
    hi = np.searchsorted(s_neg, score[pos], side="right")  # ... or tied with it
    cum = np.zeros((w.shape[0], len(order) + 1), dtype=w.dtype)
    np.cumsum(w[:, order], axis=1, out=cum[:, 1:])  # (B, n_neg + 1)
    w_pos = w[:, pos]  # (B, n_pos)
    below = cum[:, lo]
    u = (w_pos * (below + 0.5 * (cum[:, hi] - below))).sum(axis=1, dtype=np.float64)
    n_pos, n_neg = w_pos.sum(axis=1, dtype=np.float64), cum[:, -1].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = u / (n_pos * n_neg)
    out[(n_pos == 0) | (n_neg == 0)] = np.nan
    return out


def weighted_metrics(s: Scored, w: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric of every label under case weights ``w`` (B, n): arrays of shape (B, K).

    With all weights 1 these equal the scikit-learn values of :data:`POINT`.
    """
    y, d = s.y.astype(w.dtype), s.d.astype(w.dtype)
    total = w.sum(axis=1, dtype=np.float64)[:, None]  # (B, 1)
    tp, pos = w @ (y * d), w @ y
    fp, neg = w @ ((1 - y) * d), w @ (1 - y)
    out = {
        "n": np.broadcast_to(total, tp.shape).copy(),
        "prevalence": pos / total,
        "sensitivity": _ratio(tp, pos),
        "specificity": _ratio(neg - fp, neg),
        "ppv": _ratio(tp, tp + fp),
        "f1": _ratio(2 * tp, pos + tp + fp),
        "brier": w @ ((s.p - y) ** 2).astype(w.dtype) / total,
        "selection_rate": w @ d / total,
        "accuracy": (tp + neg - fp) / total,
    }
    k = len(s.labels)
    auc, ece = np.empty_like(tp), np.empty_like(tp)
    for j in range(k):
        auc[:, j] = weighted_auc(y[:, j] == 1, s.p[:, j], w)
        conf = np.maximum(s.p[:, j], 1 - s.p[:, j])
        gap = ((s.p[:, j] > 0.5) == (y[:, j] == 1)) - conf  # arg-max of (1 - p, p) is right, minus its confidence
        bins = bin_index(conf, ECE_BINS)
        per_bin = np.zeros((len(gap), ECE_BINS), dtype=w.dtype)
        per_bin[np.arange(len(gap)), bins] = gap
        ece[:, j] = np.abs(w @ per_bin).sum(axis=1) / total[:, 0]
    out["auc"], out["ece"] = auc, ece
    return out


def resample_counts(index: np.ndarray, n: int) -> np.ndarray:
    """How often each of ``n`` cases is drawn in each resample of ``index`` (B, n): float32 counts (exact)."""
    b = index.shape[0]
    flat = (index + (np.arange(b) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float32)


def replicates(s: Scored, *, n_boot: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``n_boot`` bootstrap replicates of every metric on the cases of ``s``: arrays (n_boot, K). With
    ``s.cluster``, each replicate draws patients and takes every case of a drawn patient (a cluster bootstrap)."""
    n = len(s.y)
    chunk = max(1, _MAX_CELLS // max(n, 1))
    codes = None if s.cluster is None else np.unique(s.cluster, return_inverse=True)[1].reshape(-1)
    units = n if codes is None else int(codes.max()) + 1 if n else 0
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, n_boot, chunk):
        index = rng.integers(0, units, size=(min(chunk, n_boot - start), units))
        counts = resample_counts(index, units)
        parts.append(weighted_metrics(s, counts if codes is None else counts[:, codes]))
    return {m: np.concatenate([p[m] for p in parts]) for m in METRICS}


def interval(values: np.ndarray, alpha: float = 0.05, *, around: float | None = None) -> tuple[float, float]:
    """Percentile interval of bootstrap values along axis 0, ignoring undefined replicates.

    With ``around`` (the point estimate), the percentile interval shifted by the bootstrap's bias (the mean of the
    replicates minus the estimate), kept at or above zero: for statistics that resampling inflates (a calibration
    error sums absolute bin gaps; a largest-minus-smallest rate grows with noise), whose plain percentile interval
    can lie wholly above the estimate.
    """
    v = values[np.isfinite(values)]
    if v.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(v, [alpha / 2, 1 - alpha / 2])
    if around is not None and np.isfinite(around):
        bias = float(v.mean()) - around
        return float(max(0.0, lo - bias)), float(max(0.0, hi - bias))
    return float(lo), float(hi)


MACRO = "macro"


def summary_label(labels: list[str]) -> str:
    """The row that sums an audit up: the label itself when there is one, "macro" (the mean over labels) when
    there are several. A one-label audit has no macro row: it would repeat the label's."""
    return labels[0] if len(labels) == 1 else MACRO


def rows_of(labels: list[str]) -> list[str]:
    """The labels of an audit's rows: every label, and "macro" only when there are several."""
    return [*labels, MACRO] if len(labels) > 1 else list(labels)


def macro(values: np.ndarray) -> np.ndarray:
    """The mean over labels (last axis) of the labels defined in each row."""
    defined = np.isfinite(values)
    count = defined.sum(axis=-1)
    total = np.where(defined, values, 0.0).sum(axis=-1)
    return np.divide(total, count, out=np.full(count.shape, np.nan), where=count > 0)


@dataclass
class GroupAudit:
    """The audit of one grouping.

    Attributes:
        grouping: its name.
        counts: test cases per group (small and not-stated groups included).
        compared: the groups with at least the minimum size.
        table: one row per (group, label; "macro" too where there are several labels): every metric with its
            interval.
        boot: group -> metric -> (B, K) bootstrap replicates, for the disparities.
        frames: label -> fairlearn MetricFrame (over the compared groups).
    """

    grouping: str
    counts: dict[str, int]
    compared: list[str]
    table: pd.DataFrame
    boot: dict[str, dict[str, np.ndarray]] = field(repr=False)
    frames: dict[str, MetricFrame] = field(repr=False)


def audit_grouping(
    s: Scored,
    groups: pd.Series,
    name: str,
    *,
    counts: dict[str, int],
    compared: list[str],
    n_boot: int,
    seed: int,
    cache: dict | None = None,
) -> GroupAudit:
    """Metrics of every compared group (and overall) per label and macro, each with a 95% bootstrap interval.

    ``cache`` (a dict shared between the groupings of one audit) keeps the overall replicates, drawn once.
    """
    keep = groups.isin(compared).to_numpy()
    sub, g = s.rows(np.flatnonzero(keep)), groups[keep].reset_index(drop=True)
    frames = {label: metric_frame(sub, k, g) for k, label in enumerate(s.labels)}
    rng = np.random.default_rng(seed)
    rows, boot = [], {}
    for group in ["overall", *compared]:
        idx = np.arange(len(s.y)) if group == "overall" else np.flatnonzero(groups.to_numpy(dtype=object) == group)
        part = s.rows(idx)
        if group == "overall" and cache is not None and "overall" in cache:
            boot[group] = cache["overall"]
        else:
            seed_g = np.random.default_rng([seed, 7]) if group == "overall" else rng
            boot[group] = replicates(part, n_boot=n_boot, rng=seed_g)
            if group == "overall" and cache is not None:
                cache["overall"] = boot[group]
        point = weighted_metrics(part, np.ones((1, len(idx))))
        for k, label in enumerate(rows_of(s.labels)):
            row = {"grouping": name, "group": group, "label": label}
            for m in METRICS:
                if label == MACRO:
                    value, reps = float(macro(point[m])[0]), macro(boot[group][m])
                else:
                    value = _point(part, k, m) if group == "overall" else float(frames[label].by_group.loc[group, m])
                    reps = boot[group][m][:, k]
                row[m] = value
                if m != "n":  # a group's size is fixed by the resampling within groups
                    row[f"{m}_lo"], row[f"{m}_hi"] = interval(reps, around=value if m in BIASED else None)
            rows.append(row)
    return GroupAudit(name, counts, compared, pd.DataFrame(rows), boot, frames)
