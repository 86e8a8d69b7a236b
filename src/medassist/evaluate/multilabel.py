"""Multi-label metrics: ``(y_true, probs)`` with 0/1 labels (N, K) and per-label sigmoid probabilities (N, K).

A prediction is positive at probability 0.5. Macro averages run over the labels; AUC over the labels that have
both a positive and a negative case in ``y_true`` (NaN if none has).
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from medassist.errors import DataError

THRESHOLD = 0.5


def _check(y_true: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(y_true), np.asarray(probs, dtype=np.float64)
    if y.ndim != 2 or y.shape != p.shape:
        raise DataError(f"multi-label y_true {y.shape} and probs {p.shape} must both be (N, K)")
    if not np.isfinite(p).all():
        raise DataError("probs contain NaN or infinite values")
    return y.astype(np.int64), p


def label_accuracy(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean over labels of the fraction of cases predicted right."""
    y, p = _check(y_true, probs)
    return float(((p >= THRESHOLD) == (y == 1)).mean())


def _counts(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, false positives and false negatives per label (K,)."""
    pred = p >= THRESHOLD
    return (pred & (y == 1)).sum(0), (pred & (y == 0)).sum(0), (~pred & (y == 1)).sum(0)


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """F1 = 2TP / (2TP + FP + FN), 0 where a label is neither present nor predicted (sklearn's zero_division=0)."""
    den = 2 * tp + fp + fn
    return np.divide(2 * tp, den, out=np.zeros(np.shape(tp), dtype=np.float64), where=den > 0)


def macro_f1(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean over labels of each label's F1 (computed from counts, so that one label column is not read as a
    binary problem with two classes, as sklearn reads an (N, 1) array)."""
    y, p = _check(y_true, probs)
    return float(_f1(*_counts(y, p)).mean())


def micro_f1(y_true: np.ndarray, probs: np.ndarray) -> float:
    """F1 of all (report, label) decisions pooled."""
    y, p = _check(y_true, probs)
    tp, fp, fn = (c.sum() for c in _counts(y, p))
    return float(_f1(np.array(tp), np.array(fp), np.array(fn)))


def macro_auc(y_true: np.ndarray, probs: np.ndarray) -> float:
    y, p = _check(y_true, probs)
    per_label = per_label_auc(y, p)
    valid = per_label[~np.isnan(per_label)]
    return float(valid.mean()) if valid.size else float("nan")


def per_label_auc(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """AUC of each label (NaN where a label has only one class in ``y_true``)."""
    y, p = _check(y_true, probs)
    out = np.full(y.shape[1], np.nan)
    for k in range(y.shape[1]):
        if 0 < y[:, k].sum() < len(y):
            out[k] = skm.roc_auc_score(y[:, k], p[:, k])
    return out


def binary_cross_entropy(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean over cases and labels of the binary log-loss."""
    y, p = _check(y_true, probs)
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


MULTILABEL_METRICS = {
    "accuracy": label_accuracy,
    "auc": macro_auc,
    "macro_f1": macro_f1,
    "micro_f1": micro_f1,
    "loss": binary_cross_entropy,
}
