"""Mitigation: post-processing after training, and group x label balanced sample weights in it.

- Post-processing, per label, fitted on the validation split only and applied to the test split: fairlearn's
  ``ThresholdOptimizer`` for equalized odds and for demographic parity, and per-group thresholds for equal
  sensitivity. Cases of groups too small to compare, or whose group is not stated, keep the model's own decision.
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

# The post-processing mitigations: name -> (fairlearn ThresholdOptimizer constraint, or None for per-group
# thresholds; the disparity it targets, a measure of the mitigation table).
MITIGATIONS = {
    "equalized_odds": ("equalized_odds", "eod"),
    "demographic_parity": ("demographic_parity", "dpd"),
    "equal_sensitivity": (None, "tpr_gap"),
}

MITIGATION_NAMES = {
    "equalized_odds": "ThresholdOptimizer for equalized odds (fitted on validation)",
    "demographic_parity": "ThresholdOptimizer for demographic parity (fitted on validation)",
    "equal_sensitivity": "per-group thresholds for equal sensitivity (fitted on validation)",
    "balanced_retrain": "the retrain with balanced weights",
}
TARGET_NAMES = {
    "eod": "equalized-odds difference",
    "dpd": "demographic-parity difference",
    "tpr_gap": "sensitivity gap",
}


class _Score(ClassifierMixin, BaseEstimator):
    """An already trained model seen by fairlearn: its score is the first column of X."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> _Score:
        self.classes_ = np.array([0, 1])
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x)[:, 0]


Split = tuple[Scored, pd.Series]  # cases and their groups


def post_process(
    name: str,
    val: Scored,
    g_val: pd.Series,
    compared: list[str],
    apply_to: dict[str, Split],
    *,
    objective: str,
    seed: int,
) -> tuple[dict[str, Scored], dict[str, str]]:
    """The mitigation ``name``, fitted per label on the validation cases ``val`` only, applied to each of
    ``apply_to`` (e.g. validation and test). Cases of groups not compared keep the model's own decision.

    - ``equalized_odds`` / ``demographic_parity``: fairlearn's ``ThresholdOptimizer`` with that constraint and
      ``objective``; scores after are the probability of a positive decision under its randomised rule.
    - ``equal_sensitivity``: one threshold per group, the highest at which the group's validation sensitivity
      reaches the sensitivity of the audited decisions on all validation cases.

    Returns:
        The post-processed cases of each split, and per label left as it was, the reason.
    """
    if name not in MITIGATIONS:
        raise MedAssistError(f"unknown mitigation '{name}'; choose from {', '.join(MITIGATIONS)}")
    from fairlearn.postprocessing import ThresholdOptimizer

    constraint = MITIGATIONS[name][0]
    in_val = g_val.isin(compared).to_numpy()
    out = {split: (s.d.copy(), s.p.copy()) for split, (s, _) in apply_to.items()}
    skipped: dict[str, str] = {}
    for k, label in enumerate(val.labels):
        yv = val.y[in_val, k].astype(int)
        gv = g_val[in_val].to_numpy(dtype=object)
        short = [g for g in compared if len(np.unique(yv[gv == g])) < 2]
        if short:
            skipped[label] = f"no positive or no negative validation case in {', '.join(short)}"
            continue
        if constraint is None:
            target = float(val.d[val.y[:, k] == 1, k].mean())
            cuts = {g: _threshold_for_sensitivity(yv[gv == g], val.p[in_val, k][gv == g], target) for g in compared}
            for split, (s, groups) in apply_to.items():
                gs = groups.to_numpy(dtype=object)
                for g, t in cuts.items():
                    rows = gs == g
                    out[split][0][rows, k] = (s.p[rows, k] >= t).astype(s.d.dtype)
            continue
        opt = ThresholdOptimizer(
            estimator=_Score().fit(val.p[:, :1], yv),
            constraints=constraint,
            objective=objective,
            prefit=True,
            predict_method="predict",
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt.fit(val.p[in_val, k : k + 1], yv, sensitive_features=gv)
            for split, (s, groups) in apply_to.items():
                rows = groups.isin(compared).to_numpy()
                x, g = s.p[rows, k : k + 1], groups[rows].to_numpy(dtype=object)
                out[split][0][rows, k] = opt.predict(x, sensitive_features=g, random_state=seed)
                out[split][1][rows, k] = opt._pmf_predict(x, sensitive_features=g)[:, 1]
    result = {
        split: Scored(s.labels, s.y, out[split][1], out[split][0], s.cluster) for split, (s, _) in apply_to.items()
    }
    return result, skipped


def _threshold_for_sensitivity(y: np.ndarray, p: np.ndarray, target: float) -> float:
    """The highest threshold at which the sensitivity of ``p >= threshold`` reaches ``target``."""
    positives = np.sort(p[y == 1])[::-1]
    need = int(np.ceil(target * len(positives) - 1e-9))
    return float(positives[max(need, 1) - 1]) if len(positives) else 1.0


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
