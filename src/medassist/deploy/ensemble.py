"""The text study's ensemble as a deployable model: the tuned TF-IDF + logistic regression beside the Transformer,
their probabilities averaged with the weight chosen on validation.

The TF-IDF part travels as one ``.npz`` file (read with ``allow_pickle=False``: no code in it): each vectorizer's
settings, terms and IDF weights, which scikit-learn's own ``TfidfVectorizer`` is rebuilt from, and the logistic
regression as a linear layer. The Transformer stays an ONNX model. :class:`TfidfEnsemble` runs both the way a bundle
does, so that the deploy study measures what ships.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from medassist.deploy.export import probs_from_logits
from medassist.errors import DataError, MedAssistError
from medassist.utils.io import atomic_path

TFIDF_FILE = "tfidf.npz"
# The vectorizer settings that change what it computes; anything else (a callable tokenizer) cannot travel.
_SETTINGS = ("analyzer", "ngram_range", "lowercase", "sublinear_tf", "norm", "smooth_idf", "use_idf")
_SETTINGS += ("token_pattern", "strip_accents", "binary")
_EPS = 1e-7


def save_tfidf(model: Any, path: str | os.PathLike[str]) -> Path:
    """Write a fitted :class:`~medassist.models.tfidf.TfidfLogReg` as a TF-IDF file (atomically)."""
    from sklearn.pipeline import FeatureUnion

    vec = model.vectorizer_
    parts = [v for _, v in vec.transformer_list] if isinstance(vec, FeatureUnion) else [vec]
    arrays: dict[str, np.ndarray] = {}
    settings = []
    for i, v in enumerate(parts):
        params = v.get_params()
        if params.get("tokenizer") is not None or params.get("preprocessor") is not None or callable(v.analyzer):
            raise MedAssistError("a TF-IDF with its own tokenizer or preprocessor function cannot be saved as data")
        settings.append({k: params[k] for k in _SETTINGS})
        terms = v.get_feature_names_out()
        arrays[f"terms{i}"] = np.asarray(terms, dtype=str)
        arrays[f"idf{i}"] = v.idf_.astype(np.float64)
    weight, bias = model.weights()
    arrays["coef"] = weight.astype(np.float32)  # (K, V)
    arrays["intercept"] = bias.astype(np.float32)  # (K,)
    task = "multi-label" if model.multilabel_ else "multi-class"
    arrays["settings"] = np.asarray(json.dumps({"task": task, "vectorizers": settings}))
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    return Path(path)


class TfidfPart:
    """A TF-IDF + logistic regression read back from its file: logits and probabilities of raw texts.

    Args:
        data: the file's bytes (a bundle passes the bytes it verified against its manifest).
        where: names the file in errors.
    """

    def __init__(self, data: bytes, where: str) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
            meta = json.loads(str(arrays["settings"]))
            self.task: str = meta["task"]
            self.vectorizers = []
            for i, settings in enumerate(meta["vectorizers"]):
                v = TfidfVectorizer(**{**settings, "ngram_range": tuple(settings["ngram_range"])})
                terms = arrays[f"terms{i}"]
                v.vocabulary_ = {str(t): j for j, t in enumerate(terms)}
                v.idf_ = arrays[f"idf{i}"]
                self.vectorizers.append(v)
            self.coef, self.intercept = arrays["coef"], arrays["intercept"]
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as err:
            raise DataError(f"{where} is not a TF-IDF file written by medassist ({err})") from None
        width = sum(len(v.vocabulary_) for v in self.vectorizers)
        if self.coef.ndim != 2 or self.coef.shape[1] != width or self.intercept.shape != (self.coef.shape[0],):
            raise DataError(
                f"{where}: its weights have shape {self.coef.shape} and {self.intercept.shape} for {width} terms"
            )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TfidfPart:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"TF-IDF file {path} does not exist")
        return cls(path.read_bytes(), str(path))

    @property
    def num_labels(self) -> int:
        return int(self.coef.shape[0])

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """(N, K) logits of the logistic regression on the texts' TF-IDF features."""
        features = sp.hstack([v.transform(texts) for v in self.vectorizers]).tocsr()  # (N, V)
        return np.asarray(features @ self.coef.T, dtype=np.float64) + self.intercept

    def probs(self, texts: Sequence[str]) -> np.ndarray:
        """(N, K) probabilities: sigmoid per label (multi-label), softmax (multi-class)."""
        return probs_from_logits(self.logits(texts), self.task)


def mix(tfidf_probs: np.ndarray, model_logits: np.ndarray, weight: float, task: str) -> np.ndarray:
    """Logits whose probabilities are ``weight * tfidf + (1 - weight) * model``: the log-odds of the average
    (multi-label) or its logarithm (multi-class, whose softmax gives the average back)."""
    p = weight * tfidf_probs + (1.0 - weight) * probs_from_logits(np.asarray(model_logits), task)
    p = np.clip(p, _EPS, 1.0 - _EPS)
    return np.log(p / (1.0 - p)) if task == "multi-label" else np.log(p)


class TfidfEnsemble(nn.Module):
    """The ensemble as the deploy study measures it: ``model`` (a PyTorch module or an ONNX Runtime session) on the
    token ids, the TF-IDF on the texts, mixed by :func:`mix`. Called with ``(input_ids, attention_mask, texts)``
    (a :class:`WithTexts` batcher's inputs); returns the mixed logits (B, K)."""

    def __init__(self, model: Any, tfidf: TfidfPart, weight: float) -> None:
        super().__init__()
        if not 0.0 <= weight <= 1.0:
            raise MedAssistError(f"the ensemble's TF-IDF weight must be in [0, 1]; got {weight}")
        self.model, self.tfidf, self.weight, self.task = model, tfidf, float(weight), tfidf.task

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        if isinstance(self.model, nn.Module):
            self.model.eval()
            z = self.model(input_ids, attention_mask).float().numpy()
        else:
            z = self.model(input_ids.long(), attention_mask.long())
        return torch.from_numpy(mix(self.tfidf.probs(list(texts)), z, self.weight, self.task).astype(np.float32))


class WithTexts:
    """A token batcher whose inputs also carry the raw texts of the batch (what the TF-IDF of an ensemble reads)."""

    def __init__(self, batcher: Any, texts: Sequence[str]) -> None:
        if len(batcher) != len(texts):
            raise MedAssistError(f"{len(texts)} texts for {len(batcher)} tokenised reports")
        self.batcher, self.texts = batcher, list(texts)

    def __len__(self) -> int:
        return len(self.batcher)

    def __getattr__(self, name: str) -> Any:  # order, lengths, ...: the token batcher's
        if name in ("batcher", "texts"):
            raise AttributeError(name)
        return getattr(self.batcher, name)

    def inputs(self, idx: torch.Tensor) -> tuple[Any, ...]:
        return (*self.batcher.inputs(idx), [self.texts[int(i)] for i in idx])
