"""The text study's models that are not trained by the engine, each tuned on the validation split the way its users
tune it:

- the classical baseline: TF-IDF + logistic regression (regularisation strength, class weighting, features);
- the frozen encoder: MiniLM sentence embeddings (computed once, cached) + logistic regression (strength, weighting);
- the ensemble: the weighted average of the tuned TF-IDF's and the Transformer's probabilities (one weight).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from medassist.data.text_types import TextData
from medassist.errors import DataError, MedAssistError
from medassist.run import Run
from medassist.studies.text_setup import TextStudyConfig
from medassist.studies.text_tasks import task_metrics


@dataclass
class Baseline:
    """The tuned TF-IDF model's numbers.

    Attributes:
        row: its comparison row (parameters, timing, train and validation metrics, the chosen settings).
        val_probs: probabilities on the validation split (for thresholds chosen there).
        test_probs: probabilities on the test split.
        grid: one row per setting tried, with its validation score.
        chosen: the settings validation chose (what a deployment needs to rebuild the model).
    """

    row: dict[str, Any]
    val_probs: np.ndarray
    test_probs: np.ndarray
    grid: pd.DataFrame
    chosen: dict[str, Any]


def _grid(cfg: TextStudyConfig) -> list[dict[str, Any]]:
    weights = {"none": None, "balanced": "balanced"}
    bad = [w for w in cfg.tfidf_class_weight if w not in weights]
    if bad or not (cfg.tfidf_C and cfg.tfidf_class_weight and cfg.tfidf_features):
        raise MedAssistError(
            "the TF-IDF grid needs at least one C, one class weighting (none | balanced) and one feature set; "
            f"got C={cfg.tfidf_C}, class_weight={cfg.tfidf_class_weight}, features={cfg.tfidf_features}"
        )
    return [
        {"C": float(c), "class_weight": weights[w], "features": f}
        for f, w, c in itertools.product(cfg.tfidf_features, cfg.tfidf_class_weight, cfg.tfidf_C)
    ]


def tfidf_baseline(run: Run, cfg: TextStudyConfig, data: TextData) -> Baseline:
    """Fit TF-IDF + logistic regression for every setting of the grid on train, keep the one with the best
    validation macro-F1 (ties: the smaller C, the simpler features), time it and evaluate it on val and test.

    The test split plays no part in the choice.
    """
    from medassist.models.tfidf import TfidfLogReg

    metrics = task_metrics(data.task)
    tr, va, te = (data.splits[s] for s in ("train", "val", "test"))
    rows, best, best_score = [], None, -np.inf
    shared: dict[str, tuple[Any, Any, Any, float]] = {}  # features -> (vectorizer, train and val features, seconds)
    for setting in _grid(cfg):
        model = TfidfLogReg(**setting)
        if setting["features"] not in shared:  # the TF-IDF is fitted once per feature set, shared by its settings
            t0 = time.perf_counter()
            vec = model.vectorizer()
            try:
                x_tr = vec.fit_transform(tr.texts)
            except ValueError as err:  # "empty vocabulary": no n-gram reaches min_df
                raise DataError(f"{data.name}: no word occurs in enough training texts for TF-IDF ({err})") from err
            shared[setting["features"]] = (vec, x_tr, vec.transform(va.texts), time.perf_counter() - t0)
        vec, x_tr, x_va, vec_time = shared[setting["features"]]
        t0 = time.perf_counter()
        model.fit(tr.texts, tr.labels, num_classes=data.num_labels, vectorized=(vec, x_tr))
        fit_time = vec_time + time.perf_counter() - t0  # as if fitted alone: TF-IDF and classifier
        p_va = model.predict_proba(va.texts, features=x_va)
        score = metrics.macro_f1(va.labels, p_va)
        rows.append(
            {
                **setting,
                "class_weight": setting["class_weight"] or "none",
                "val_macro_f1": score,
                "val_auc": metrics.macro_auc(va.labels, p_va),
                "fit_time_s": fit_time,
            }
        )
        if score > best_score + 1e-12:  # strictly better: the grid's order breaks ties
            best, best_score, best_fit_time, best_val = model, score, fit_time, p_va
    grid = pd.DataFrame(rows)
    run.write_table("tfidf_grid", grid)
    assert best is not None
    best.save(run.path("models/tfidf.joblib"))
    p_tr = best.predict_proba(tr.texts)
    t0 = time.perf_counter()
    p_te = best.predict_proba(te.texts)
    per_report = (time.perf_counter() - t0) / len(te.texts)
    row = {
        "model": "tfidf_logreg",
        "params": best.n_features_ * data.num_labels,
        "train_time_s": best_fit_time,
        "infer_ms_per_report_b64": 1000 * per_report,
        "infer_ms_batch1": 1000 * text_latency(best.predict_proba, te.texts, batch=1, repeats=30),
        "train_macro_f1": metrics.macro_f1(tr.labels, p_tr),
        "val_macro_f1": best_score,
        "val_auc": metrics.macro_auc(va.labels, best_val),
        "settings": f"C={best.C:g}, class_weight={best.class_weight or 'none'}, features={best.features}",
    }
    chosen = {"C": float(best.C), "class_weight": best.class_weight or "none", "features": best.features}
    return Baseline(row, best_val, p_te, grid, chosen)


def text_latency(predict: Callable[[list[str]], Any], texts: Sequence[str], *, batch: int, repeats: int) -> float:
    """Median seconds per report of ``predict`` on the first ``batch`` texts (:func:`median_seconds`: ``repeats``
    timed calls at most, fewer when each takes long), tokenising or vectorising included: what a service pays per
    request."""
    from medassist.deploy.measure import median_seconds

    chunk = list(texts[:batch])
    return median_seconds(lambda: predict(chunk), repeats=repeats) / len(chunk)


def frozen_encoder_baseline(run: Run, cfg: TextStudyConfig, data: TextData) -> Baseline:
    """MiniLM sentence embeddings (frozen, mean-pooled, normalised; cached per data set) and a logistic regression
    for every C and class weighting of the grid, the best validation macro-F1 kept (ties: the grid's order).

    Its training time is the embedding of the training reports plus the regression's fit; its latency includes
    tokenising and the encoder. The test split plays no part in the choice.
    """
    from medassist.models.logreg import EmbeddingLogReg
    from medassist.text.embed import DIM, embed, load_sentence_encoder, sentence_embeddings
    from medassist.text.hf import hf_encode_batch, load_minilm_tokenizer
    from medassist.train.data import TokenBatcher

    metrics = task_metrics(data.task)
    weights = {"none": None, "balanced": "balanced"}
    tokenizer, encoder = load_minilm_tokenizer(), load_sentence_encoder()
    emb, seconds = {}, {}
    for s in ("train", "val", "test"):
        emb[s], seconds[s] = sentence_embeddings(
            data.splits[s].texts, max_len=cfg.max_len, progress=cfg.progress, models=(tokenizer, encoder)
        )
    tr, va, te = (data.splits[s] for s in ("train", "val", "test"))
    rows, best, best_score = [], None, -np.inf
    for w, c in itertools.product(cfg.tfidf_class_weight, cfg.frozen_C):
        t0 = time.perf_counter()
        model = EmbeddingLogReg(C=float(c), class_weight=weights[w]).fit(
            emb["train"], tr.labels, num_classes=data.num_labels
        )
        fit_time = time.perf_counter() - t0
        p_va = model.predict_proba(emb["val"])
        score = metrics.macro_f1(va.labels, p_va)
        rows.append(
            {"C": float(c), "class_weight": w, "val_macro_f1": score, "val_auc": metrics.macro_auc(va.labels, p_va)}
        )
        if score > best_score + 1e-12:
            best, best_score, best_fit, best_val = model, score, fit_time, p_va
    assert best is not None
    grid = pd.DataFrame(rows)
    run.write_table("frozen_grid", grid)
    best.save(run.path("models/minilm_frozen_lr.joblib"))

    @torch.no_grad()
    def predict(texts: list[str]) -> np.ndarray:
        batcher = TokenBatcher(hf_encode_batch(tokenizer, texts, max_len=cfg.max_len))
        return best.predict_proba(embed(encoder, *batcher.inputs(torch.arange(len(texts)))).numpy())

    encoder_params = sum(p.numel() for p in encoder.encoder.parameters())  # the MiniLM encoder, not its unused head
    row = {
        "model": "minilm_frozen_lr",
        "params": encoder_params + (DIM + 1) * data.num_labels,
        "train_time_s": seconds["train"] + best_fit,
        "infer_ms_per_report_b64": 1000 * text_latency(predict, te.texts, batch=64, repeats=7),
        "infer_ms_batch1": 1000 * text_latency(predict, te.texts, batch=1, repeats=30),
        "train_macro_f1": metrics.macro_f1(tr.labels, best.predict_proba(emb["train"])),
        "val_macro_f1": best_score,
        "val_auc": metrics.macro_auc(va.labels, best_val),
        "settings": f"encoder frozen; C={best.C:g}, class_weight={best.class_weight or 'none'}",
    }
    chosen = {"C": float(best.C), "class_weight": best.class_weight or "none"}
    return Baseline(row, best_val, best.predict_proba(emb["test"]), grid, chosen)


ENSEMBLE_WEIGHTS = tuple(round(0.1 * i, 1) for i in range(11))
"""The TF-IDF weights tried for the ensemble (the Transformer's is one minus it)."""


def ensemble_baseline(
    data: TextData, tfidf: Baseline, transformer: dict[str, Any], p_val: np.ndarray, p_test: np.ndarray
) -> Baseline:
    """The weighted average ``w * TF-IDF + (1 - w) * Transformer`` of the two models' probabilities, ``w`` chosen on
    validation: multi-label by macro-F1 at per-label thresholds chosen on the averaged validation probabilities,
    multi-class by macro-F1 (ties: the smaller ``w``). ``transformer`` is its comparison row."""
    from medassist.evaluate.thresholds import apply_thresholds, choose_thresholds

    metrics = task_metrics(data.task)
    y_val = data.splits["val"].labels
    rows, best_w, best_score = [], 0.0, -np.inf
    for w in ENSEMBLE_WEIGHTS:
        p = w * tfidf.val_probs + (1 - w) * p_val
        if metrics.multilabel:
            score = metrics.macro_f1(y_val, apply_thresholds(p, choose_thresholds(y_val, p)))
        else:
            score = metrics.macro_f1(y_val, p)
        rows.append({"tfidf_weight": w, "val_macro_f1": score, "val_auc": metrics.macro_auc(y_val, p)})
        if score > best_score + 1e-12:
            best_w, best_score = w, score
    p_va = best_w * tfidf.val_probs + (1 - best_w) * p_val
    row = {
        "model": "ensemble",
        "params": tfidf.row["params"] + transformer["params"],
        "train_time_s": tfidf.row["train_time_s"] + transformer["train_time_s"],
        "infer_ms_per_report_b64": tfidf.row["infer_ms_per_report_b64"] + transformer["infer_ms_per_report_b64"],
        "infer_ms_batch1": tfidf.row["infer_ms_batch1"] + transformer["infer_ms_batch1"],
        "train_macro_f1": np.nan,
        "val_macro_f1": metrics.macro_f1(y_val, p_va),
        "val_auc": metrics.macro_auc(y_val, p_va),
        "settings": f"TF-IDF weight {best_w:g}, {transformer['model']} weight {1 - best_w:g}",
    }
    chosen = {"tfidf_weight": float(best_w), "transformer": transformer["run"]}
    return Baseline(row, p_va, best_w * tfidf.test_probs + (1 - best_w) * p_test, pd.DataFrame(rows), chosen)
