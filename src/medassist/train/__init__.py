"""The one training engine."""

from __future__ import annotations

from medassist.train.data import predict_proba, to_tensor
from medassist.train.engine import FitResult, evaluate_split, fit, seed_everything

__all__ = ["FitResult", "evaluate_split", "fit", "predict_proba", "seed_everything", "to_tensor"]
