"""Classification metrics, with percentile-bootstrap confidence intervals.

Every metric takes ``(y_true, probs)``: integer class indices (N,) and softmax probabilities (N, K),
binary included (K = 2). Point estimates come from ``sklearn.metrics``; the bootstrap uses
count-weighted re-implementations of the same formulas so that 1,000 resamples take milliseconds.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from sklearn import metrics as skm

from medassist.errors import DataError, MedAssistError
from medassist.evaluate import multilabel
from medassist.evaluate.calibration import bin_index, check_inputs, expected_calibration_error

Metric = Callable[[np.ndarray, np.ndarray], float]

# Resample count matrices are processed in chunks of at most this many cells, bounding memory on large test sets.
_MAX_CELLS = 1_000_000
_ECE_BINS = 15


def accuracy(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Fraction of samples whose most probable class is the true class."""
    y, p = check_inputs(y_true, probs)
    return float(skm.accuracy_score(y, p.argmax(axis=1)))


def macro_f1(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Unweighted mean of the per-class F1 over all K classes (a class never seen nor predicted scores 0)."""
    y, p = check_inputs(y_true, probs)
    labels = np.arange(p.shape[1])
    return float(skm.f1_score(y, p.argmax(axis=1), labels=labels, average="macro", zero_division=0))


def auc(y_true: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC: binary on ``probs[:, 1]``, else macro one-vs-rest.

    Returns NaN when it is undefined: only one class present, or (multi-class) a class with no samples.
    """
    y, p = check_inputs(y_true, probs)
    k = p.shape[1]
    present = np.unique(y)
    if present.size < 2 or (k > 2 and present.size < k):
        return float("nan")
    if k == 2:
        return float(skm.roc_auc_score(y, p[:, 1]))
    return float(skm.roc_auc_score(y, p, multi_class="ovr", average="macro", labels=np.arange(k)))


def cross_entropy(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class (natural log), as ``sklearn.metrics.log_loss``."""
    y, p = check_inputs(y_true, probs)
    return float(skm.log_loss(y, p, labels=np.arange(p.shape[1])))


METRICS: dict[str, Metric] = {
    "accuracy": accuracy,
    "auc": auc,
    "macro_f1": macro_f1,
    "loss": cross_entropy,
}
"""Metrics usable for model selection, by name; see :data:`GREATER_IS_BETTER` for their direction."""

CHANCE_AUC = 0.55
"""A validation AUC below this is chance level: the model ranks cases barely better than a coin."""

CHANCE_RULE = (
    f"at chance: validation AUC below {CHANCE_AUC:.2f} (or, where AUC is undefined, the same class predicted for "
    "every validation case)"
)


def at_chance(auc_value: float | None, predicted: np.ndarray | None = None) -> bool:
    """True when a model has learned nothing usable (:data:`CHANCE_RULE`).

    Args:
        auc_value: its validation AUC (macro over labels or classes); NaN or None is not judged.
        predicted: its predicted class per validation case (multi-class), or None.
    """
    if auc_value is not None and np.isfinite(auc_value):
        return bool(auc_value < CHANCE_AUC)
    return bool(predicted is not None and len(predicted) > 1 and np.unique(predicted).size == 1)


GREATER_IS_BETTER: dict[str, bool] = {"accuracy": True, "auc": True, "macro_f1": True, "loss": False, "ece": False}
"""Whether a larger value of each named metric is better."""


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, *, class_names: list[str]) -> dict:
    """All the usual classification metrics, as plain JSON-serialisable Python values.

    Args:
        y_true: class indices (N,).
        probs: class probabilities (N, K).
        class_names: one unique name per class index.

    Returns:
        A dict with n, accuracy, macro_f1, auc (NaN if undefined), ece, per_class
        (``{name: {precision, recall, f1, support}}``), confusion_matrix (rows: true class,
        columns: predicted class) and class_names.
    """
    y, p = check_inputs(y_true, probs)
    k = p.shape[1]
    names = [str(name) for name in class_names]
    if len(names) != k:
        raise DataError(f"class_names has {len(names)} names {names} but probs has {k} columns; give one per class.")
    if len(set(names)) != k:
        raise DataError(f"class_names {names} contains duplicates; each class needs a unique name.")
    pred = p.argmax(axis=1)
    labels = np.arange(k)
    precision, recall, f1, support = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    return {
        "n": len(y),
        "accuracy": float(skm.accuracy_score(y, pred)),
        "macro_f1": macro_f1(y, p),
        "auc": auc(y, p),
        "ece": expected_calibration_error(y, p, n_bins=_ECE_BINS),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(names)
        },
        "confusion_matrix": skm.confusion_matrix(y, pred, labels=labels).tolist(),
        "class_names": names,
    }


# Count-weighted versions: ``w`` is (B, N), how often each case appears in each of B resamples; each returns (B,).


def _onehot(index: np.ndarray, k: int) -> np.ndarray:
    return (index[:, None] == np.arange(k)[None, :]).astype(np.float64)  # (N, k)


def _accuracy_w(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    return w @ (p.argmax(axis=1) == y).astype(np.float64) / w.sum(axis=1)


def _macro_f1_w(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    k = p.shape[1]
    truth, pred = _onehot(y, k), _onehot(p.argmax(axis=1), k)
    tp, n_true, n_pred = w @ (truth * pred), w @ truth, w @ pred  # (B, k) each
    denom = n_true + n_pred
    f1 = np.divide(2.0 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return f1.mean(axis=1)


def _binary_auc_w(positive: np.ndarray, score: np.ndarray, w: np.ndarray) -> np.ndarray:
    # Weighted Mann-Whitney U: each positive beats the negatives with a lower score and ties half of the equal ones.
    order = np.argsort(score, kind="stable")
    s, pos, c = score[order], positive[order], w[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # first index of each group of tied scores
    w_pos = np.add.reduceat(c * pos, starts, axis=1)  # (B, G)
    w_neg = np.add.reduceat(c * ~pos, starts, axis=1)  # (B, G)
    neg_below = np.cumsum(w_neg, axis=1) - w_neg
    n_pos, n_neg = w_pos.sum(axis=1), w_neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (w_pos * (neg_below + 0.5 * w_neg)).sum(axis=1) / (n_pos * n_neg)
    out[(n_pos == 0) | (n_neg == 0)] = np.nan
    return out


def _auc_w(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    if p.shape[1] == 2:
        return _binary_auc_w(y == 1, p[:, 1], w)
    # NaN for any class makes the macro mean NaN, as sklearn refuses a resample missing a class.
    return np.mean([_binary_auc_w(y == c, p[:, c], w) for c in range(p.shape[1])], axis=0)


def _cross_entropy_w(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    eps = np.finfo(p.dtype).eps  # the clipping sklearn's log_loss applies
    nll = -np.log(np.clip(p[np.arange(len(y)), y], eps, 1 - eps))
    return w @ nll / w.sum(axis=1)


def _ece_w(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    confidence = p.max(axis=1)
    gap = (p.argmax(axis=1) == y) - confidence  # (N,)
    per_bin = _onehot(bin_index(confidence, _ECE_BINS), _ECE_BINS) * gap[:, None]  # (N, n_bins)
    return np.abs(w @ per_bin).sum(axis=1) / w.sum(axis=1)


# Multi-label (y and p both (N, K)), positive at multilabel.THRESHOLD.


def _ml_counts(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    truth, pred = (y == 1).astype(np.float64), (p >= multilabel.THRESHOLD).astype(np.float64)
    return w @ (truth * pred), w @ truth, w @ pred  # (B, K) each: true positives, positives, predicted positives


def _ml_macro_f1_w(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    tp, n_true, n_pred = _ml_counts(y, p, w)
    denom = n_true + n_pred
    return np.divide(2.0 * tp, denom, out=np.zeros_like(tp), where=denom > 0).mean(axis=1)  # zero_division=0


def _ml_micro_f1_w(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    tp, n_true, n_pred = (a.sum(axis=1) for a in _ml_counts(y, p, w))
    denom = n_true + n_pred
    return np.divide(2.0 * tp, denom, out=np.zeros_like(tp), where=denom > 0)


def _ml_macro_auc_w(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    # Over the labels that have both classes in the resample, as multilabel.macro_auc does on its input.
    per_label = np.stack([_binary_auc_w(y[:, k] == 1, p[:, k], w) for k in range(y.shape[1])], axis=1)  # (B, K)
    defined = np.isfinite(per_label)
    total = np.where(defined, per_label, 0.0).sum(axis=1)
    count = defined.sum(axis=1)
    return np.divide(total, count, out=np.full(len(total), np.nan), where=count > 0)


_RESAMPLED: dict[Callable, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    accuracy: _accuracy_w,
    macro_f1: _macro_f1_w,
    auc: _auc_w,
    cross_entropy: _cross_entropy_w,
    expected_calibration_error: _ece_w,  # at its default of 15 bins
    multilabel.macro_f1: _ml_macro_f1_w,
    multilabel.micro_f1: _ml_micro_f1_w,
    multilabel.macro_auc: _ml_macro_auc_w,
}


def _resample_counts(index: np.ndarray, n: int) -> np.ndarray:
    b = index.shape[0]
    flat = (index + (np.arange(b) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)  # (B, N)


def _resample_loop(metric: Metric, y: np.ndarray, p: np.ndarray, index: np.ndarray) -> np.ndarray:
    values = np.empty(index.shape[0])
    with warnings.catch_warnings():
        # Undefined resamples are expected and skipped; sklearn's warnings about them are noise.
        warnings.simplefilter("ignore")
        for i, rows in enumerate(index):
            try:
                values[i] = metric(y[rows], p[rows])
            except ValueError:
                values[i] = np.nan
    return values


def bootstrap_ci(
    y_true: np.ndarray,
    probs: np.ndarray,
    metric: Metric,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Point estimate and percentile-bootstrap confidence interval of a metric.

    Cases are resampled with replacement; resamples where the metric is undefined (NaN or a
    ``ValueError``, e.g. AUC on one class) are skipped. The metrics of this module are computed
    for all resamples at once; any other callable is called once per resample.

    Args:
        y_true: class indices (N,).
        probs: class probabilities (N, K).
        metric: ``metric(y_true, probs) -> float``, e.g. a value of :data:`METRICS`.
        n_boot: number of bootstrap resamples.
        alpha: 1 - confidence level (0.05 gives a 95% interval).
        seed: seed of the resampling, so the interval is reproducible.

    Returns:
        ``(value, low, high)``: the metric on the full set and the interval bounds (NaN if no
        resample was defined).
    """
    if np.ndim(y_true) == 2:  # multi-label (N, K): the metric checks its own inputs
        y, p = np.asarray(y_true), np.asarray(probs, dtype=np.float64)
    else:
        y, p = check_inputs(y_true, probs)
    if int(n_boot) != n_boot or n_boot < 1:
        raise MedAssistError(f"n_boot={n_boot!r}; expected a positive number of resamples such as 1000.")
    if not 0.0 < alpha < 1.0:
        raise MedAssistError(f"alpha={alpha!r}; expected a value between 0 and 1 such as 0.05 (a 95% interval).")
    value = float(metric(y, p))
    n = len(y)
    rng = np.random.default_rng(seed)
    fast = _RESAMPLED.get(metric)
    chunk = max(1, _MAX_CELLS // n)
    values = []
    for start in range(0, int(n_boot), chunk):
        index = rng.integers(0, n, size=(min(chunk, int(n_boot) - start), n))  # (B, N) case indices
        if fast is not None:
            values.append(fast(y, p, _resample_counts(index, n)))
        else:
            values.append(_resample_loop(metric, y, p, index))
    boot = np.concatenate(values)
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return value, float("nan"), float("nan")
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return value, float(low), float(high)


def headline_metrics_with_ci(
    y_true: np.ndarray, probs: np.ndarray, *, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> dict[str, dict]:
    """Accuracy, macro F1, AUC and ECE, each with a percentile-bootstrap confidence interval.

    Args:
        y_true: class indices (N,).
        probs: class probabilities (N, K).
        n_boot: number of bootstrap resamples.
        alpha: 1 - confidence level.
        seed: seed of the resampling; every metric uses the same resamples.

    Returns:
        ``{name: {"value", "ci_low", "ci_high"}}`` for accuracy, macro_f1, auc and ece.
    """
    y, p = check_inputs(y_true, probs)
    chosen: dict[str, Metric] = {
        "accuracy": accuracy,
        "macro_f1": macro_f1,
        "auc": auc,
        "ece": expected_calibration_error,
    }
    out: dict[str, dict] = {}
    for name, metric in chosen.items():
        value, low, high = bootstrap_ci(y, p, metric, n_boot=n_boot, alpha=alpha, seed=seed)
        out[name] = {"value": value, "ci_low": low, "ci_high": high}
    return out


def paired_bootstrap_difference(
    y_true: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray, metric: Metric, *, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """``metric(a) - metric(b)`` on the same cases, with a 95% paired percentile-bootstrap interval.

    Both models are scored on the same resampled cases, so the interval reflects the difference between them and
    not the spread of the test set; resamples where the metric is undefined are skipped.
    """
    y, pa, pb = np.asarray(y_true), np.asarray(probs_a, dtype=np.float64), np.asarray(probs_b, dtype=np.float64)
    if len(y) != len(pa) or len(y) != len(pb):
        raise MedAssistError(f"paired difference: {len(y)} labels but {len(pa)} and {len(pb)} predictions")
    rng = np.random.default_rng(seed)
    n = len(y)
    fast = _RESAMPLED.get(metric)
    parts = []
    for start in range(0, int(n_boot), max(1, _MAX_CELLS // n)):
        index = rng.integers(0, n, size=(min(max(1, _MAX_CELLS // n), int(n_boot) - start), n))  # (B, N)
        if fast is not None:  # both models on the same resamples, all at once
            counts = _resample_counts(index, n)
            parts.append(fast(y, pa, counts) - fast(y, pb, counts))
        else:
            parts.append(_resample_loop(metric, y, pa, index) - _resample_loop(metric, y, pb, index))
    diffs = np.concatenate(parts)
    diffs = diffs[np.isfinite(diffs)]
    point = float(metric(y, pa) - metric(y, pb))
    if diffs.size == 0:
        return point, float("nan"), float("nan")
    low, high = np.quantile(diffs, [0.025, 0.975])
    return point, float(low), float(high)
