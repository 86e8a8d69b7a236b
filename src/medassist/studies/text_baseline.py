"""The text study's classical baseline, tuned the way its users tune it: TF-IDF + logistic regression with the
regularisation strength, the class weighting and the features chosen on the validation split."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

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
    """

    row: dict[str, Any]
    val_probs: np.ndarray
    test_probs: np.ndarray
    grid: pd.DataFrame


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
        "infer_ms_batch1": np.nan,
        "train_macro_f1": metrics.macro_f1(tr.labels, p_tr),
        "val_macro_f1": best_score,
        "val_auc": metrics.macro_auc(va.labels, best_val),
        "settings": f"C={best.C:g}, class_weight={best.class_weight or 'none'}, features={best.features}",
    }
    return Baseline(row, best_val, p_te, grid)
