"""Decision thresholds chosen on the validation split: one per label, maximising that label's F1.

A multi-label model predicts a label when its probability reaches the label's threshold. 0.5 is right only for a
calibrated model on balanced labels; rare findings usually need a lower one. The thresholds are chosen on validation
and then applied, unchanged, to test.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import precision_recall_curve

from medassist.errors import DataError

DEFAULT = 0.5


def choose_thresholds(y_val: np.ndarray, p_val: np.ndarray) -> np.ndarray:
    """Per-label thresholds (K,) that maximise each label's F1 on validation.

    A label with no positive (or no negative) validation case keeps 0.5: there is nothing to choose from. Among
    thresholds with the same best F1 the highest is kept (the fewest false positives).

    Args:
        y_val: 0/1 labels (N, K) of the validation split.
        p_val: predicted probabilities (N, K) on the same reports.
    """
    y, p = np.asarray(y_val), np.asarray(p_val, dtype=np.float64)
    if y.ndim != 2 or y.shape != p.shape:
        raise DataError(f"thresholds need labels and probabilities of the same shape (N, K), got {y.shape}, {p.shape}")
    out = np.full(y.shape[1], DEFAULT)
    for k in range(y.shape[1]):
        if not 0 < y[:, k].sum() < len(y):
            continue
        precision, recall, cuts = precision_recall_curve(y[:, k], p[:, k])
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
        best = np.flatnonzero(f1 >= f1.max() - 1e-12)
        out[k] = float(cuts[best[-1]])
    return out


def apply_thresholds(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """0/1 decisions (N, K) as floats, so that any metric thresholding at 0.5 scores them as given."""
    p, t = np.asarray(probs, dtype=np.float64), np.asarray(thresholds, dtype=np.float64)
    if p.ndim != 2 or t.shape != (p.shape[1],):
        raise DataError(f"{t.shape} thresholds for probabilities of shape {p.shape}; expected one per label")
    return (p >= t).astype(np.float64)
