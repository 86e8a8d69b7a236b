"""What differs between multi-label findings and one class per report: the metrics, the loss and the decisions.

Multi-label (0/1 labels (N, K), a sigmoid per label): macro-F1, micro-F1 and macro-AUC, with per-label decision
thresholds chosen on validation. Multi-class (class indices (N,), a softmax): accuracy, macro-F1 and macro
one-vs-rest AUC, deciding by the most probable class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medassist.evaluate import metrics as mc
from medassist.evaluate import multilabel as ml

Metric = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class TaskMetrics:
    """The metrics and loss of one task.

    Attributes:
        task: "multi-label" or "multi-class".
        ci: the test metrics reported with 95% bootstrap intervals, by column name (``test_<name>``).
        macro_f1, macro_auc: the two metrics every model is compared on.
        thresholded: multi-label only: the metrics recomputed at the validation-chosen thresholds.
    """

    task: str
    ci: dict[str, Metric]
    macro_f1: Metric
    macro_auc: Metric
    thresholded: tuple[str, ...] = ()

    @property
    def multilabel(self) -> bool:
        return self.task == "multi-label"

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training loss of the task on (B, K) logits."""
        if self.multilabel:
            return F.binary_cross_entropy_with_logits(logits, y.float())
        return F.cross_entropy(logits, y.long().reshape(-1))

    def labels(self, y: np.ndarray) -> np.ndarray:
        """Labels as the metrics take them: (N, K) 0/1, or (N,) class indices."""
        return np.asarray(y) if self.multilabel else np.asarray(y).reshape(-1)


MULTILABEL = TaskMetrics(
    "multi-label",
    ci={"macro_f1": ml.macro_f1, "micro_f1": ml.micro_f1, "macro_auc": ml.macro_auc},
    macro_f1=ml.macro_f1,
    macro_auc=ml.macro_auc,
    thresholded=("macro_f1", "micro_f1"),
)
MULTICLASS = TaskMetrics(
    "multi-class",
    ci={"accuracy": mc.accuracy, "macro_f1": mc.macro_f1, "macro_auc": mc.auc},
    macro_f1=mc.macro_f1,
    macro_auc=mc.auc,
)


def task_metrics(task: str) -> TaskMetrics:
    """The :class:`TaskMetrics` of ``task``."""
    return MULTILABEL if task == "multi-label" else MULTICLASS
