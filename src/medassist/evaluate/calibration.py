"""Calibration: expected calibration error and reliability bins on the top-label confidence."""

from __future__ import annotations

import numpy as np
import pandas as pd

from medassist.errors import DataError, MedAssistError

# Float32 or CSV-rounded softmax outputs drift from 1 a little; logits or sigmoid outputs miss by far more.
_SUM_TOLERANCE = 1e-3
# Rows closer to 1 than this are left untouched: rescaling them would perturb tied scores (and so AUC) for no gain.
_RENORMALISE_ABOVE = 1e-6


def check_inputs(y_true: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate labels and class probabilities; shared by the evaluate modules.

    Args:
        y_true: integer class indices of shape (N,) (an (N, 1) column is accepted too).
        probs: class probabilities of shape (N, K), K >= 2, each row summing to 1.

    Returns:
        ``(y, p)``: int64 labels (N,) and float64 probabilities (N, K); rows off by more than 1e-6 are
        rescaled to sum to 1, so a second call returns the same values.

    Raises:
        DataError: naming the shape, label or row at fault.
    """
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if p.ndim != 2 or p.shape[1] < 2:
        raise DataError(f"probs has shape {p.shape}; expected (N, K) class probabilities with K >= 2 columns.")
    if y.ndim != 1 or y.shape[0] != p.shape[0]:
        raise DataError(
            f"y_true has shape {y.shape} but probs has shape {p.shape}; expected y_true of shape ({p.shape[0]},) "
            "with one class index per row (multi-label targets are not supported here)."
        )
    if y.size == 0:
        raise DataError("y_true and probs are empty; metrics need at least one sample.")
    if not np.issubdtype(y.dtype, np.integer):
        if not (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y))):
            raise DataError(f"y_true has dtype {y.dtype}; expected integer class indices 0..{p.shape[1] - 1}.")
    y = y.astype(np.int64)
    bad = np.flatnonzero((y < 0) | (y >= p.shape[1]))
    if bad.size:
        raise DataError(
            f"y_true[{bad[0]}] is {y[bad[0]]}, outside the class indices 0..{p.shape[1] - 1} "
            f"(probs has {p.shape[1]} columns)."
        )
    finite = np.isfinite(p).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise DataError(f"probs row {row} contains NaN or infinite values: {p[row].tolist()}.")
    sums = p.sum(axis=1)
    off = np.flatnonzero((p < 0).any(axis=1) | (np.abs(sums - 1.0) > _SUM_TOLERANCE))
    if off.size:
        row = int(off[0])
        raise DataError(
            f"probs row {row} is {p[row].tolist()} (sum {sums[row]:.4f}); expected non-negative probabilities "
            "that sum to 1. Apply softmax to logits before evaluating."
        )
    drift = np.abs(sums - 1.0) > _RENORMALISE_ABOVE
    if drift.any():
        p = p.copy()  # never rescale the caller's array in place
        p[drift] /= sums[drift, None]
    return y, p


def bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bin of each confidence in [0, 1]; bins are (low, high], the first also holds 0."""
    if int(n_bins) != n_bins or n_bins < 1:
        raise MedAssistError(f"n_bins={n_bins!r}; expected a positive integer such as 15.")
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    return np.clip(np.searchsorted(edges[1:-1], confidence, side="left"), 0, int(n_bins) - 1)


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error of the top-label confidence.

    The count-weighted mean of ``|accuracy - mean confidence|`` over equal-width confidence bins.

    Args:
        y_true: class indices (N,).
        probs: class probabilities (N, K).
        n_bins: number of equal-width bins on [0, 1].

    Returns:
        ECE in [0, 1]; 0 means confidence matches accuracy in every bin.
    """
    y, p = check_inputs(y_true, probs)
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    bins = bin_index(confidence, n_bins)
    # count_b / N * |acc_b - conf_b| == |sum over bin of (correct - confidence)| / N
    gaps = np.bincount(bins, weights=correct - confidence, minlength=int(n_bins))
    return float(np.abs(gaps).sum() / len(y))


def reliability_bins(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> pd.DataFrame:
    """Per-bin counts, mean confidence and accuracy for a reliability diagram.

    Args:
        y_true: class indices (N,).
        probs: class probabilities (N, K).
        n_bins: number of equal-width bins on [0, 1].

    Returns:
        One row per bin (empty bins included, with NaN confidence and accuracy) and columns
        bin_low, bin_high, count, confidence, accuracy.
    """
    y, p = check_inputs(y_true, probs)
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    bins = bin_index(confidence, n_bins)
    count = np.bincount(bins, minlength=int(n_bins))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(bins, weights=confidence, minlength=int(n_bins)) / count
        accuracy = np.bincount(bins, weights=correct, minlength=int(n_bins)) / count
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    return pd.DataFrame(
        {
            "bin_low": edges[:-1],
            "bin_high": edges[1:],
            "count": count.astype(np.int64),
            "confidence": mean_conf,
            "accuracy": accuracy,
        }
    )
