"""Calibrated probabilities and the abstention rule of a bundle, both fitted on the validation split.

- Temperature scaling (Guo et al., 2017): one positive number T that divides the logits before the softmax (or the
  sigmoid of each label), fitted by minimising the validation negative log-likelihood. It leaves the multi-class
  label unchanged and moves only how confident the probabilities are.
- Selective prediction: a case is answered only when its confidence is at least a threshold, chosen on validation as
  the lowest one at which the accepted cases' error is at most a target (2% by default); the others are referred to a
  clinician. Multi-class confidence is the top probability and an error a wrong label; multi-label confidence is the
  smallest margin of any label from its decision threshold (0 at the threshold, 1 at probability 0 or 1) and an
  error any wrong label of the case.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from medassist.errors import MedAssistError

ABSTAIN_REASON = "uncertain: refer to a clinician"


def probabilities(logits: np.ndarray, task: str) -> np.ndarray:
    """Softmax (multi-class) or a sigmoid per label (multi-label) of logits (N, K), float64."""
    z = np.asarray(logits, dtype=np.float64)
    if task == "multi-class":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # the sigmoid without overflow


def _nll(logits: np.ndarray, y: np.ndarray, task: str) -> float:
    if task == "multi-class":
        z = logits - logits.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-log_p[np.arange(len(y)), y].mean())
    # log(1 + e^-|z|) + max(z, 0) - y z: the binary cross-entropy of a logit, stable for large |z|
    return float((np.logaddexp(0.0, -np.abs(logits)) + np.maximum(logits, 0.0) - y * logits).mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray, task: str) -> float:
    """The temperature in [0.05, 20] that minimises the negative log-likelihood of ``logits`` (N, K) for labels
    ``y`` (class indices (N,) or a 0/1 matrix (N, K))."""
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y)
    y = y.reshape(-1).astype(np.int64) if task == "multi-class" else y.astype(np.float64)
    if len(logits) == 0:
        raise MedAssistError("cannot fit a temperature on no cases; the validation split is empty")
    result = minimize_scalar(
        lambda log_t: _nll(logits / np.exp(log_t), y, task), bounds=(np.log(0.05), np.log(20.0)), method="bounded"
    )
    return float(np.exp(result.x))


def confidence_and_error(
    probs: np.ndarray, y: np.ndarray, task: str, threshold: float | Sequence[float] = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Each case's confidence (N,) in [0, 1] and whether its answer is wrong (N,) bool (see the module)."""
    p = np.asarray(probs, dtype=np.float64)
    return case_confidence(p, task, threshold), _wrong(p, np.asarray(y), task, threshold)


def case_confidence(probs: np.ndarray, task: str, threshold: float | Sequence[float] = 0.5) -> np.ndarray:
    """Multi-class: the top probability. Multi-label: the smallest margin of a label from its threshold."""
    p = np.asarray(probs, dtype=np.float64)
    if task == "multi-class":
        return p.max(axis=1)
    t = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (p.shape[1],))
    margin = np.where(p >= t, (p - t) / (1.0 - t), (t - p) / t)  # (N, K) in [0, 1]
    return margin.min(axis=1)


def _wrong(p: np.ndarray, y: np.ndarray, task: str, threshold: float | Sequence[float]) -> np.ndarray:
    if task == "multi-class":
        return p.argmax(axis=1) != y.reshape(-1)
    t = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (p.shape[1],))
    return ((p >= t) != (y > 0.5)).any(axis=1)


def risk_coverage(confidence: np.ndarray, wrong: np.ndarray) -> dict[str, np.ndarray]:
    """The risk-coverage curve: for each distinct confidence c (highest first), the share of cases with confidence
    >= c (coverage) and the error among them (risk)."""
    order = np.argsort(-confidence, kind="stable")
    conf, err = confidence[order], wrong[order].astype(np.float64)
    last = np.r_[np.flatnonzero(np.diff(conf) != 0), len(conf) - 1]  # the last case of each run of equal values
    accepted = last + 1
    return {
        "threshold": conf[last],
        "coverage": accepted / len(conf),
        "risk": np.cumsum(err)[last] / accepted,
        "accepted": accepted,
    }


def choose_abstention(confidence: np.ndarray, wrong: np.ndarray, target_error: float) -> float:
    """The lowest confidence threshold at which the accepted cases' error is at most ``target_error``; above 1
    (every case referred) when even the most confident cases miss the target."""
    if not 0.0 <= target_error < 1.0:
        raise MedAssistError(f"target_error must be a fraction in [0, 1), got {target_error!r}")
    if len(confidence) == 0:
        raise MedAssistError("cannot choose an abstention threshold on no cases; the validation split is empty")
    curve = risk_coverage(np.asarray(confidence, dtype=np.float64), np.asarray(wrong, dtype=bool))
    ok = np.flatnonzero(curve["risk"] <= target_error + 1e-12)
    return float(curve["threshold"][ok[-1]]) if ok.size else 1.0 + 1e-9


def selective_summary(
    confidence: np.ndarray, wrong: np.ndarray, min_confidence: float, *, n_boot: int, seed: int
) -> dict[str, Any]:
    """Coverage and the error of accepted cases at ``min_confidence``, each with a 95% percentile-bootstrap
    interval (cases resampled with replacement; a resample that accepts nothing has no error and is skipped)."""
    accept = np.asarray(confidence) >= min_confidence
    wrong = np.asarray(wrong, dtype=bool)
    rng = np.random.default_rng(seed)
    n = len(accept)
    cov, err = [], []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        a = accept[idx]
        cov.append(a.mean())
        if a.any():
            err.append(wrong[idx][a].mean())

    def ci(values: list[float]) -> list[float | None]:
        return [float(v) for v in np.quantile(values, [0.025, 0.975])] if values else [None, None]

    return {
        "n": int(n),
        "accepted": int(accept.sum()),
        "coverage": float(accept.mean()),
        "coverage_ci95": ci(cov),
        "accepted_error": float(wrong[accept].mean()) if accept.any() else None,  # nothing accepted: no error
        "accepted_error_ci95": ci(err),
        "error_without_abstention": float(wrong.mean()),
    }


def threshold_after_temperature(threshold: float | Sequence[float], temperature: float) -> float | list[float]:
    """Multi-label: the probability threshold that takes the same decisions on temperature-scaled sigmoids
    (p >= t  <=>  z >= logit(t)  <=>  sigmoid(z / T) >= sigmoid(logit(t) / T))."""
    t = np.asarray(threshold, dtype=np.float64)
    out = 1.0 / (1.0 + np.exp(-(np.log(t) - np.log1p(-t)) / float(temperature)))
    return float(out) if out.ndim == 0 else [float(v) for v in out]
