"""Tests for the text models that the engine does not train: the frozen MiniLM encoder with a logistic regression,
and the validation-weighted ensemble of TF-IDF and the Transformer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medassist.data.text_types import TextData, TextSplit
from medassist.models.logreg import EmbeddingLogReg
from medassist.studies.text_baseline import Baseline, ensemble_baseline


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("classes", [2, 4])
def test_the_head_weights_give_its_probabilities_multi_class(classes: int) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(80, 6)), np.arange(80) % classes
    model = EmbeddingLogReg(C=1.0).fit(x, y, num_classes=classes + 1)  # one class never seen in training
    w, b = model.weights()
    assert w.shape == (classes + 1, 6)
    assert np.allclose(_softmax(x @ w.T + b), model.predict_proba(x), atol=1e-6)


def test_the_head_weights_give_its_probabilities_multi_label() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 5))
    y = np.stack([(x[:, 0] > 0), (x[:, 1] > 0.5), np.ones(60, dtype=bool)], axis=1).astype(int)  # a constant label
    model = EmbeddingLogReg(C=4.0, class_weight="balanced").fit(x, y)
    w, b = model.weights()
    p = 1 / (1 + np.exp(-(x @ w.T + b)))
    assert model.constant_labels_ == [2]
    assert np.allclose(p, model.predict_proba(x), atol=1e-5)


def test_sentence_embeddings_are_normalised_cached_and_order_free() -> None:
    pytest.importorskip("transformers")
    from medassist.text.embed import DIM, sentence_embeddings

    texts = ["No acute cardiopulmonary abnormality.", "Small left pleural effusion. Heart size normal.", "Clear."]
    emb, seconds = sentence_embeddings(texts, max_len=32, cache=True)
    assert emb.shape == (3, DIM) and seconds > 0
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    again, cached_seconds = sentence_embeddings(texts, max_len=32, cache=True)
    assert np.array_equal(again, emb) and cached_seconds == seconds  # read back, with the time it took to compute
    alone, _ = sentence_embeddings(texts[1:2], max_len=32, cache=False)
    assert np.allclose(alone[0], emb[1], atol=1e-5)  # padding in a batch changes nothing


def _data(y_val: np.ndarray) -> TextData:
    k = y_val.shape[1]
    split = TextSplit(texts=["x"] * len(y_val), labels=y_val, metadata=pd.DataFrame(index=range(len(y_val))))
    return TextData(
        name="t", label_names=[f"l{i}" for i in range(k)], splits={"val": split}, task="multi-label", info={}
    )


def test_the_ensemble_weight_is_chosen_on_validation() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((200, 3)) < 0.4).astype(int)
    good, noise = np.clip(y * 0.8 + 0.1, 0, 1), rng.random((200, 3))
    row = {"params": 10, "train_time_s": 1.0, "infer_ms_per_report_b64": 0.1, "infer_ms_batch1": 0.5}
    tfidf = Baseline({**row, "model": "tfidf_logreg"}, good, good, pd.DataFrame(), {})
    trans = {**row, "model": "minilm", "run": "minilm-base"}
    chosen = ensemble_baseline(_data(y), tfidf, trans, noise, noise)
    grid = chosen.grid
    assert list(grid["tfidf_weight"]) == [round(0.1 * i, 1) for i in range(11)]
    best_w = float(grid.loc[grid["val_macro_f1"].idxmax(), "tfidf_weight"])  # first of the best: the smaller weight
    assert best_w >= 0.5 and chosen.row["settings"] == f"TF-IDF weight {best_w:g}, minilm weight {1 - best_w:g}"
    assert np.allclose(chosen.test_probs, best_w * good + (1 - best_w) * noise)
    assert chosen.chosen == {"tfidf_weight": best_w, "transformer": "minilm-base"}  # what deploy rebuilds it from
    flipped = ensemble_baseline(_data(y), Baseline(tfidf.row, noise, noise, pd.DataFrame(), {}), trans, good, good)
    flipped_w = float(flipped.grid.loc[flipped.grid["val_macro_f1"].idxmax(), "tfidf_weight"])
    assert flipped_w <= 0.5 and flipped.row["settings"].startswith(f"TF-IDF weight {flipped_w:g},")
    assert flipped.row["params"] == 20 and flipped.row["infer_ms_batch1"] == 1.0  # both models' costs


@pytest.mark.xdist_group("openi")  # one worker makes the shared Open-i run and reads it
def test_the_text_study_compares_the_new_models(openi_run: Path) -> None:
    m = json.loads((openi_run / "metrics.json").read_text())
    rows = {r["model"]: r for r in m["comparison"]}
    assert {"tfidf_logreg", "minilm_frozen_lr", "ensemble"} <= set(rows)
    for name in ("minilm_frozen_lr", "ensemble"):
        r = rows[name]
        assert r["infer_ms_batch1"] > 0 and r["train_time_s"] > 0 and "vs_tfidf_macro_f1_t" in r
    assert m["minilm_frozen_lr_grid"] and len(m["ensemble_grid"]) == 11
    report = (openi_run / "report.md").read_text()
    assert "encoder frozen" in report and "TF-IDF weight" in report
