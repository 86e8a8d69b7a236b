"""From a trained model to a decision: test-time flips and a binary decision threshold chosen on validation.

Both are choices made without the test split: the flip is fixed in advance, and the threshold is fitted on the
validation probabilities and then applied unchanged to the test probabilities.
"""

from __future__ import annotations

import numpy as np
import torch

from medassist.errors import MedAssistError

THRESHOLD_RULES = ("argmax", "val_accuracy", "val_youden")


def predict_proba_flip(model: torch.nn.Module, images: np.ndarray | torch.Tensor, *, flip: bool = True) -> np.ndarray:
    """Probabilities (N, K) of ``model`` on ``images`` (N, C, H, W), averaged with those of their horizontal flips."""
    from medassist.train import predict_proba, to_tensor

    p = predict_proba(model, images)
    if not flip:
        return p
    x = images if isinstance(images, torch.Tensor) else to_tensor(images)
    return (p + predict_proba(model, torch.flip(x, dims=[-1]))) / 2  # the flip is the width axis


def _check_binary(y_true: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(y_true).reshape(-1), np.asarray(probs)
    if p.ndim != 2 or p.shape[1] != 2:
        raise MedAssistError(f"a decision threshold needs binary probabilities (N, 2); got shape {p.shape}")
    if len(y) != len(p):
        raise MedAssistError(f"{len(y)} labels but {len(p)} rows of probabilities; they must match")
    return y.astype(np.int64), p[:, 1]


def choose_threshold(y_true: np.ndarray, probs: np.ndarray, rule: str) -> float:
    """The threshold on P(class 1) that ``rule`` picks on these (validation) labels and probabilities.

    ``argmax`` is 0.5. ``val_accuracy`` maximises accuracy, ``val_youden`` maximises sensitivity + specificity - 1.
    Candidates are 0.5 and the midpoints between consecutive distinct probabilities; among equally good thresholds
    the one nearest 0.5 wins, so a flat optimum on a small validation set does not move the decision far.
    """
    if rule not in THRESHOLD_RULES:
        raise MedAssistError(f"unknown threshold rule '{rule}'; choose one of {', '.join(THRESHOLD_RULES)}")
    y, p1 = _check_binary(y_true, probs)
    if rule == "argmax":
        return 0.5
    u = np.unique(p1)
    cands = np.unique(np.concatenate([[0.5], (u[1:] + u[:-1]) / 2]))
    pred = p1[None, :] >= cands[:, None]  # (T, N)
    pos, neg = y == 1, y == 0
    if rule == "val_accuracy":
        score = (pred == pos[None, :]).mean(1)
    else:
        if not pos.any() or not neg.any():
            raise MedAssistError("Youden's J needs both classes in the validation labels")
        score = pred[:, pos].mean(1) + (~pred[:, neg]).mean(1) - 1
    best = np.flatnonzero(np.isclose(score, score.max()))
    return float(cands[best[np.argmin(np.abs(cands[best] - 0.5))]])


def threshold_accuracy(y_true: np.ndarray, probs: np.ndarray, threshold: float) -> float:
    """Accuracy when class 1 is predicted for P(class 1) >= ``threshold``."""
    y, p1 = _check_binary(y_true, probs)
    return float(((p1 >= threshold) == (y == 1)).mean())


def leave_one_out_accuracy(y_true: np.ndarray, probs: np.ndarray, rule: str) -> float:
    """Accuracy of ``rule`` when each case is decided by a threshold chosen on all the other cases.

    The accuracy of a threshold on the very cases it was chosen on is optimistic; this estimate is not, so it is the
    fair validation number to compare a chosen threshold with argmax.
    """
    y, _ = _check_binary(y_true, probs)
    p = np.asarray(probs)
    keep = np.ones(len(y), dtype=bool)
    hits = 0
    for i in range(len(y)):
        keep[i] = False
        t = choose_threshold(y[keep], p[keep], rule)
        keep[i] = True
        hits += int((p[i, 1] >= t) == (y[i] == 1))
    return hits / max(len(y), 1)
