"""Mitigation: fairlearn's ``ThresholdOptimizer`` after training, and group x label balanced sample weights in it.

- Post-processing: per label, a ``ThresholdOptimizer`` (equalized odds or equal opportunity) on the model's scores,
  fitted on the validation split only and applied to the test split. Cases of groups too small to compare, or
  whose group is not stated, keep the model's own decision.
- In training: one retrain of the selected model through the training engine (:func:`medassist.train.fit`) with
  per-case weights that give every (group, label value) cell of the training split the same total weight; the
  weights travel beside the inputs in the batcher and a ``step_fn`` applies them to the loss.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClassifierMixin

from medassist.errors import MedAssistError
from medassist.fairness.audit import Scored

CONSTRAINTS = {"equalized_odds": "equalized_odds", "equal_opportunity": "true_positive_rate_parity"}


class _Score(ClassifierMixin, BaseEstimator):
    """An already trained model seen by fairlearn: its score is the first column of X."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> _Score:
        self.classes_ = np.array([0, 1])
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x)[:, 0]


def threshold_optimize(
    val: Scored,
    test: Scored,
    g_val: pd.Series,
    g_test: pd.Series,
    compared: list[str],
    *,
    constraint: str,
    objective: str,
    seed: int,
) -> tuple[Scored, dict[str, str]]:
    """Test decisions and scores after a per-label ThresholdOptimizer fitted on ``val`` only.

    Returns:
        The post-processed test cases (scores: the probability of a positive decision under the fitted rule) and,
        per label left as it was, the reason.
    """
    from fairlearn.postprocessing import ThresholdOptimizer

    if constraint not in CONSTRAINTS:
        raise MedAssistError(f"unknown constraint '{constraint}'; choose {' or '.join(CONSTRAINTS)}")
    in_val = g_val.isin(compared).to_numpy()
    in_test = g_test.isin(compared).to_numpy()
    d, p = test.d.copy(), test.p.copy()
    skipped: dict[str, str] = {}
    for k, label in enumerate(test.labels):
        yv = val.y[in_val, k].astype(int)
        gv = g_val[in_val].to_numpy(dtype=object)
        short = [g for g in compared if len(np.unique(yv[gv == g])) < 2]
        if short:
            skipped[label] = f"no positive or no negative validation case in {', '.join(short)}"
            continue
        opt = ThresholdOptimizer(
            estimator=_Score().fit(val.p[:, :1], yv),
            constraints=CONSTRAINTS[constraint],
            objective=objective,
            prefit=True,
            predict_method="predict",
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt.fit(val.p[in_val, k : k + 1], yv, sensitive_features=gv)
            x_test, g = test.p[in_test, k : k + 1], g_test[in_test].to_numpy(dtype=object)
            d[in_test, k] = opt.predict(x_test, sensitive_features=g, random_state=seed)
            p[in_test, k] = opt._pmf_predict(x_test, sensitive_features=g)[:, 1]
    return Scored(test.labels, test.y, p, d, test.cluster), skipped


def balanced_weights(y: np.ndarray, groups: pd.Series, multilabel: bool) -> np.ndarray:
    """Weights that give every (group, label value) cell the same total, mean 1.

    Args:
        y: (N, K) 0/1 (multi-label: one weight per case and label) or (N,) class indices (one weight per case).
        groups: each case's group; a case whose group is not stated forms a group of its own.

    Returns:
        (N, K) weights (multi-label) or (N,) weights.
    """
    g = groups.fillna("(not stated)").to_numpy(dtype=object)
    cols = y if multilabel else y.reshape(-1, 1)
    w = np.ones(cols.shape, dtype=np.float64)
    for k in range(cols.shape[1]):
        cells = pd.Series(list(zip(g, cols[:, k], strict=True)))
        counts = cells.map(cells.value_counts())
        w[:, k] = 1.0 / counts.to_numpy(dtype=np.float64)
        w[:, k] /= w[:, k].mean()
    return w if multilabel else w[:, 0]


class WeightedBatcher:
    """A batcher whose inputs end with each case's loss weight (read off by :func:`weighted_step`)."""

    def __init__(self, base: Any, weights: np.ndarray) -> None:
        self.base, self.w = base, torch.as_tensor(weights, dtype=torch.float32)
        self.augmentable = getattr(base, "augmentable", False)

    def __len__(self) -> int:
        return len(self.base)

    def order(self, batch_size: int, generator: torch.Generator | None = None):
        return self.base.order(batch_size, generator=generator)

    def inputs(self, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (*self.base.inputs(idx), self.w[idx])

    def subset(self, idx: np.ndarray) -> WeightedBatcher:
        return WeightedBatcher(self.base.subset(idx), self.w[torch.as_tensor(idx)].numpy())


def weighted_step(task: str, label_smoothing: float = 0.0):
    """A training step whose loss weighs each case (and, multi-label, each label) by the batcher's weights."""
    from medassist.train.data import main_logits

    def step(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...], y: torch.Tensor):
        *x, w = inputs
        logits = main_logits(model(*x))
        if task == "multi-label":
            loss = F.binary_cross_entropy_with_logits(logits, y.float(), reduction="none")  # (B, K)
        else:
            loss = F.cross_entropy(logits, y, reduction="none", label_smoothing=label_smoothing)  # (B,)
        return (loss * w).mean(), logits

    return step
