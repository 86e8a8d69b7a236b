"""The one training engine."""

from __future__ import annotations

from medassist.train.data import ImageBatcher, TokenBatcher, predict_proba, to_tensor
from medassist.train.engine import FitResult, Labelled, fit, seed_everything

__all__ = [
    "FitResult",
    "ImageBatcher",
    "Labelled",
    "TokenBatcher",
    "fit",
    "predict_proba",
    "seed_everything",
    "to_tensor",
]
