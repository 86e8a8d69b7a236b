"""The default losses of the engine: cross-entropy with class weights and label smoothing (multi-class), binary
cross-entropy with positive weights per label (multi-label), and the head's bias started at the label frequencies."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medassist.config import TrainConfig
from medassist.errors import MedAssistError


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse-frequency class weights, normalised to mean 1 (a class absent from training gets weight 0)."""
    counts = np.bincount(labels.reshape(-1), minlength=num_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / num_classes, 0.0)
    return torch.tensor(w / w[counts > 0].mean(), dtype=torch.float32)


def pos_weights(labels: np.ndarray, cap: float = 100.0) -> torch.Tensor:
    """Multi-label positive weights: negatives / positives per label, capped (a label without positives gets 1)."""
    pos = labels.sum(0).astype(np.float64)
    neg = len(labels) - pos
    return torch.tensor(np.where(pos > 0, np.minimum(neg / np.maximum(pos, 1), cap), 1.0), dtype=torch.float32)


def init_prior_bias(model: nn.Module, labels: np.ndarray) -> None:
    """Set the bias of ``model.head`` to the log-odds of each label in ``labels`` (N, K).

    An untrained head then predicts each label's frequency instead of 0.5, so the first steps are not spent learning
    that most findings are rare (a rare label's bias would need thousands of small Adam steps to get there).
    """
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear) or head.bias is None or head.out_features != labels.shape[1]:
        raise MedAssistError(
            f"prior_bias needs a model whose `head` is a linear layer with {labels.shape[1]} outputs and a bias"
        )
    freq = np.clip(labels.mean(0), 1e-4, 1 - 1e-4)
    with torch.no_grad():
        head.bias.copy_(torch.as_tensor(np.log(freq / (1 - freq)), dtype=head.bias.dtype))


def default_loss(
    task: str, cfg: TrainConfig, labels: np.ndarray, num_classes: int, device: torch.device | None = None
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Cross-entropy (multi-class, optional class weights and label smoothing) or binary cross-entropy per label
    (multi-label, optional positive weights), its weights on ``device``."""
    device = device or torch.device("cpu")
    if task == "multi-label":
        pw = pos_weights(labels).to(device) if cfg.class_weights else None
        return lambda logits, y: F.binary_cross_entropy_with_logits(logits, y.float(), pos_weight=pw)
    weight = class_weights(labels, num_classes).to(device) if cfg.class_weights else None
    return lambda logits, y: F.cross_entropy(logits, y, weight=weight, label_smoothing=cfg.label_smoothing)
