"""Logistic regression on fixed features, multi-label or multi-class: the classifier of the TF-IDF baseline and of
the frozen-encoder model (:class:`EmbeddingLogReg`, on MiniLM sentence embeddings)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from medassist.errors import DataError, MedAssistError
from medassist.utils.io import atomic_path


class LogisticHead:
    """The classifier: ``C``, ``class_weight`` and ``max_iter`` are set by the subclass.

    Multi-label (labels (N, K) of 0/1): one binary liblinear model per label (one-vs-rest); a label that is
    constant in training gets a constant probability column, listed in ``constant_labels_``.
    Multi-class (labels (N,) of class indices): one multinomial model (lbfgs).
    """

    C: float
    class_weight: str | None
    max_iter: int

    def fit_head(self, features: Any, labels: np.ndarray, *, num_classes: int | None = None) -> None:
        """Fit on (N, D) ``features`` and ``labels``; ``num_classes`` (multi-class) keeps classes absent from
        training as zero columns."""
        labels = np.asarray(labels)
        self.multilabel_ = labels.ndim == 2
        if self.multilabel_:
            if not np.isin(labels, (0, 1)).all():
                raise DataError("multi-label labels must be 0 or 1")
            y = labels.astype(np.int64)
            self.constant_labels_ = [int(k) for k in np.flatnonzero(y.min(0) == y.max(0))]
            base = LogisticRegression(
                C=self.C, class_weight=self.class_weight, solver="liblinear", max_iter=self.max_iter
            )
            self.clf_ = OneVsRestClassifier(base)
            with warnings.catch_warnings():
                # OneVsRest predicts a constant for such a label and says so; constant_labels_ records it.
                warnings.filterwarnings("ignore", message="Label .* is present in all training examples")
                self.clf_.fit(features, y)
            self.num_classes_ = y.shape[1]
        else:
            y = labels.astype(np.int64)
            if len(np.unique(y)) < 2:
                raise DataError(f"multi-class training needs at least two classes, found only {np.unique(y)}")
            self.constant_labels_ = []
            self.clf_ = LogisticRegression(
                C=self.C, class_weight=self.class_weight, solver="lbfgs", max_iter=self.max_iter
            )
            self.clf_.fit(features, y)
            self.num_classes_ = max(num_classes or 0, int(y.max()) + 1)

    def head_proba(self, features: Any) -> np.ndarray:
        """Probabilities (N, K): per label for multi-label, per class (rows sum to 1) for multi-class."""
        proba = self.clf_.predict_proba(features)  # (N, K), or (N, classes seen) for multi-class
        if self.multilabel_:
            # One label column is fitted as a binary problem: keep the positive class's column only.
            return proba[:, 1:] if self.num_classes_ == 1 and proba.shape[1] == 2 else proba
        out = np.zeros((proba.shape[0], self.num_classes_))
        out[:, self.clf_.classes_] = proba
        return out

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fitted model with joblib (atomically) and return the path."""
        with atomic_path(path) as tmp:
            joblib.dump(self, tmp)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Any:
        """Read a model written by :meth:`save` (a pickle: load only files you trust, such as a run's own)."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"model file {path} does not exist")
        try:
            model = joblib.load(path)
        except Exception as err:  # a truncated or foreign pickle can raise almost anything
            raise DataError(f"model file {path} is not readable ({err}); fit and save the model again") from err
        if not isinstance(model, cls):
            raise DataError(f"{path} holds a {type(model).__name__}, not a {cls.__name__}")
        return model

    def weights(self) -> tuple[np.ndarray, np.ndarray]:
        """The linear layer: (K, D) weights and (K,) biases of the logits (multi-label: one binary model per label;
        a constant label's model has no weights and gets a bias at its constant's log-odds)."""
        if not self.multilabel_:
            w, b = np.zeros((self.num_classes_, self.clf_.coef_.shape[1])), np.full(self.num_classes_, -30.0)
            w[self.clf_.classes_], b[self.clf_.classes_] = self.clf_.coef_, self.clf_.intercept_
            if len(self.clf_.classes_) == 2:  # sklearn keeps one row for two classes: logits (0, z) in softmax
                z_w, z_b = self.clf_.coef_[0], self.clf_.intercept_[0]
                w[self.clf_.classes_[0]], b[self.clf_.classes_[0]] = 0.0, 0.0
                w[self.clf_.classes_[1]], b[self.clf_.classes_[1]] = z_w, z_b
            return w, b
        rows, bias = [], []
        for est in self.clf_.estimators_:
            if hasattr(est, "coef_"):
                rows.append(est.coef_[0])
                bias.append(est.intercept_[0])
            else:  # sklearn's constant predictor for a label constant in training
                p = float(np.clip(est.y_[0] if hasattr(est, "y_") else 0.5, 1e-6, 1 - 1e-6))
                rows.append(np.zeros(self.clf_.n_features_in_))
                bias.append(np.log(p / (1 - p)))
        return np.stack(rows), np.array(bias)


class EmbeddingLogReg(LogisticHead):
    """Logistic regression on fixed dense features (MiniLM sentence embeddings, :mod:`medassist.text.embed`).

    Args:
        C: inverse regularisation strength.
        class_weight: None, or "balanced".
        max_iter: solver iterations.
    """

    def __init__(self, *, C: float = 1.0, class_weight: str | None = None, max_iter: int = 2000) -> None:
        if class_weight not in (None, "balanced"):
            raise MedAssistError(f"unknown class_weight '{class_weight}'; choose None or 'balanced'")
        self.C, self.class_weight, self.max_iter = C, class_weight, max_iter

    def fit(self, features: np.ndarray, labels: np.ndarray, *, num_classes: int | None = None) -> EmbeddingLogReg:
        features = np.asarray(features)
        if features.ndim != 2 or len(features) != len(labels):
            raise DataError(f"features must be (N, D) for N = {len(labels)} labels, got {features.shape}")
        self.fit_head(features, labels, num_classes=num_classes)
        return self

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        if not hasattr(self, "clf_"):
            raise MedAssistError("EmbeddingLogReg is not fitted; call fit first")
        return self.head_proba(np.asarray(features))
