"""The classical baseline for reports: TF-IDF of word 1-2 grams (and optionally character 2-5 grams) and logistic
regression (not a torch model)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion

from medassist.errors import DataError, MedAssistError
from medassist.models.logreg import LogisticHead
from medassist.text.vocab import check_texts

FEATURES = ("word", "word+char")


class TfidfLogReg(LogisticHead):
    """TF-IDF (word 1-2 grams, sublinear tf; optionally also character 2-5 grams within words) + logistic
    regression, multi-label or multi-class.

    Multi-label (labels (N, K) of 0/1): one binary liblinear model per label (one-vs-rest); a label that is
    constant in training gets a constant probability column, listed in ``constant_labels_``.
    Multi-class (labels (N,) of class indices): one multinomial model (lbfgs, which converges on sparse TF-IDF
    features where saga needs thousands of iterations).

    Args:
        C: inverse regularisation strength.
        class_weight: None, or "balanced" to weight each class by the inverse of its frequency.
        features: "word" (word 1-2 grams) or "word+char" (word 1-2 grams beside character 2-5 grams, which catch
            spelling variants and word stems).
        min_df: ignore n-grams found in fewer training texts.
        max_features: keep the most frequent n-grams only.
        max_iter: solver iterations.
    """

    def __init__(
        self,
        *,
        C: float = 4.0,
        class_weight: str | None = None,
        features: str = "word",
        min_df: int = 2,
        max_features: int = 50000,
        max_iter: int = 1000,
    ) -> None:
        self.C = C
        if features not in FEATURES:
            raise MedAssistError(f"unknown TF-IDF features '{features}'; choose {' or '.join(FEATURES)}")
        if class_weight not in (None, "balanced"):
            raise MedAssistError(f"unknown class_weight '{class_weight}'; choose None or 'balanced'")
        self.class_weight = class_weight
        self.features = features
        self.min_df = min_df
        self.max_features = max_features
        self.max_iter = max_iter

    def vectorizer(self) -> TfidfVectorizer | FeatureUnion:
        """A new, unfitted vectorizer of this model's features (fit it once to share it between settings)."""
        word = TfidfVectorizer(
            ngram_range=(1, 2), sublinear_tf=True, min_df=self.min_df, max_features=self.max_features
        )
        if self.features == "word":
            return word
        char = TfidfVectorizer(
            analyzer="char_wb",
            ngram_range=(2, 5),
            sublinear_tf=True,
            min_df=self.min_df,
            max_features=self.max_features,
        )
        return FeatureUnion([("word", word), ("char", char)])

    def fit(
        self,
        texts: Sequence[str],
        labels: np.ndarray,
        *,
        num_classes: int | None = None,
        vectorized: tuple[TfidfVectorizer | FeatureUnion, Any] | None = None,
    ) -> TfidfLogReg:
        """Fit on ``texts`` and ``labels`` ((N, K) 0/1 for multi-label, (N,) class indices for multi-class).

        Args:
            texts: the training reports.
            labels: one row per text.
            num_classes: multi-class only: K, so that classes absent from training still get a (zero) column.
            vectorized: (a vectorizer already fitted on ``texts``, its (N, V) features of them): skips fitting the
                TF-IDF again when several settings of the classifier share the same features.
        """
        texts = check_texts(texts)
        labels = np.asarray(labels)
        if labels.ndim not in (1, 2) or len(labels) != len(texts):
            raise DataError(f"labels must have shape (N,) or (N, K) with N = {len(texts)} texts, got {labels.shape}")
        if vectorized is not None:
            self.vectorizer_, features = vectorized
        else:
            self.vectorizer_ = self.vectorizer()
            try:
                features = self.vectorizer_.fit_transform(texts)  # (N, V) sparse
            except ValueError as err:  # "empty vocabulary": no n-gram reaches min_df
                raise DataError(f"no word occurs in {self.min_df} or more of the {len(texts)} training texts") from err
        self.fit_head(features, labels, num_classes=num_classes)
        return self

    @property
    def n_features_(self) -> int:
        """Number of TF-IDF features (n-grams) the model weighs."""
        return len(self.vectorizer_.get_feature_names_out())

    def predict_proba(self, texts: Sequence[str], *, features: Any = None) -> np.ndarray:
        """Probabilities (N, K): per label for multi-label, per class (rows sum to 1) for multi-class.

        Args:
            texts: the reports.
            features: their TF-IDF features from this model's vectorizer, if already computed (``texts`` is then
                not read again).
        """
        if not hasattr(self, "clf_"):
            raise MedAssistError("TfidfLogReg is not fitted; call fit first")
        if features is None:
            features = self.vectorizer_.transform(check_texts(texts))  # (N, V) sparse
        return self.head_proba(features)
