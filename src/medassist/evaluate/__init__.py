"""Evaluation: metrics with bootstrap confidence intervals, calibration, and figures."""

from __future__ import annotations

from medassist.evaluate.calibration import expected_calibration_error, reliability_bins
from medassist.evaluate.metrics import (
    CHANCE_RULE,
    GREATER_IS_BETTER,
    METRICS,
    accuracy,
    at_chance,
    auc,
    bootstrap_ci,
    classification_metrics,
    cross_entropy,
    headline_metrics_with_ci,
    macro_f1,
    paired_bootstrap_difference,
)
from medassist.evaluate.multilabel import MULTILABEL_METRICS, per_label_auc

# The plot functions load on first use: importing plots switches matplotlib to the Agg backend, which
# code that only wants metrics (or a notebook with its own backend) should not pay for.
_PLOTS = (
    "plot_bar",
    "plot_gradient_norms",
    "plot_hidden_gradients",
    "plot_confusion_matrix",
    "plot_learning_curves",
    "plot_prediction_grid",
    "plot_reliability",
    "plot_roc",
    "plot_size_curve",
    "plot_tradeoff",
)

__all__ = [
    "CHANCE_RULE",
    "GREATER_IS_BETTER",
    "METRICS",
    "MULTILABEL_METRICS",
    "metrics_for",
    "per_label_auc",
    "accuracy",
    "at_chance",
    "auc",
    "bootstrap_ci",
    "classification_metrics",
    "cross_entropy",
    "expected_calibration_error",
    "headline_metrics_with_ci",
    "macro_f1",
    "paired_bootstrap_difference",
    "plot_bar",
    "plot_confusion_matrix",
    "plot_learning_curves",
    "plot_prediction_grid",
    "plot_reliability",
    "plot_roc",
    "plot_size_curve",
    "plot_tradeoff",
    "reliability_bins",
]


def __getattr__(name: str) -> object:
    if name in _PLOTS:
        from medassist.evaluate import plots

        return getattr(plots, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def metrics_for(task: str) -> dict:
    """The selection metrics of a task: ``METRICS`` (multi-class) or ``MULTILABEL_METRICS`` (multi-label)."""
    return MULTILABEL_METRICS if task == "multi-label" else METRICS
