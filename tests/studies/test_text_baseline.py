"""The tuned TF-IDF baseline and the decision thresholds: every choice on validation, none on test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medassist.data.text_types import TextData, TextSplit
from medassist.errors import DataError, MedAssistError
from medassist.evaluate.multilabel import label_accuracy, macro_f1
from medassist.evaluate.thresholds import apply_thresholds, choose_thresholds
from medassist.models.tfidf import TfidfLogReg
from medassist.run import Run
from medassist.studies.text_baseline import tfidf_baseline
from medassist.studies.text_setup import TextStudyConfig


def _split(n: int, *, inverted: bool, seed: int) -> TextSplit:
    """Reports whose keyword decides the label; ``inverted`` flips what the keyword means."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    texts = [f"report {i} {'effusion seen' if label else 'lungs clear'} filler words" for i, label in enumerate(y)]
    labels = (1 - y) if inverted else y
    return TextSplit(texts, labels[:, None].astype(np.int64))


def test_baseline_is_chosen_on_validation_even_where_test_disagrees(tmp_path: Path) -> None:
    """Planted disagreement: on test the keyword means the opposite, so the near-constant model (tiny C) is right
    more often there; validation agrees with training, and the choice must follow validation."""
    splits = {"train": _split(80, inverted=False, seed=0), "val": _split(40, inverted=False, seed=1)}
    splits["test"] = _split(40, inverted=True, seed=2)
    data = TextData("planted", ["effusion"], splits)
    cfg = TextStudyConfig(tfidf_C=[1e-4, 100.0], tfidf_class_weight=["none"], tfidf_features=["word"])
    with Run.create(tmp_path, "t", {}) as run:
        base = tfidf_baseline(run, cfg, data)
    assert base.row["settings"].startswith("C=100,")
    grid = base.grid.set_index("C")
    assert grid.loc[100.0, "val_macro_f1"] > grid.loc[1e-4, "val_macro_f1"]
    assert not any(c.startswith("test") for c in base.grid.columns)  # the grid never saw test
    # The planted disagreement is real: on test, the rejected setting scores higher than the chosen one.
    tiny = TfidfLogReg(C=1e-4).fit(splits["train"].texts, splits["train"].labels)
    y_test = splits["test"].labels
    rejected = label_accuracy(y_test, tiny.predict_proba(splits["test"].texts))
    assert rejected > label_accuracy(y_test, base.test_probs) + 0.2


def test_baseline_grid_refuses_an_unknown_weighting(tmp_path: Path) -> None:
    data = TextData("x", ["a"], {s: _split(20, inverted=False, seed=i) for i, s in enumerate(("train", "val", "test"))})
    with Run.create(tmp_path, "t", {}) as run, pytest.raises(MedAssistError, match="class weighting"):
        tfidf_baseline(run, TextStudyConfig(tfidf_class_weight=["inverse"]), data)


@pytest.mark.parametrize("features", ["word", "word+char"])
def test_tfidf_features(features: str) -> None:
    split = _split(60, inverted=False, seed=0)
    model = TfidfLogReg(features=features, class_weight="balanced").fit(split.texts, split.labels)
    p = model.predict_proba(split.texts)
    assert macro_f1(split.labels, p) == 1.0
    assert model.n_features_ > 0
    with pytest.raises(MedAssistError, match="unknown TF-IDF features"):
        TfidfLogReg(features="bytes")


def test_thresholds_are_chosen_on_validation() -> None:
    """Validation positives sit at 0.3, test positives at 0.7: the threshold follows validation."""
    y_val = np.array([[1], [1], [0], [0], [0]])
    p_val = np.array([[0.3], [0.32], [0.1], [0.2], [0.05]])
    t = choose_thresholds(y_val, p_val)
    assert t[0] == pytest.approx(0.3)
    assert macro_f1(y_val, apply_thresholds(p_val, t)) == 1.0
    assert macro_f1(y_val, p_val) == 0.0  # at 0.5 nothing is found


@pytest.mark.parametrize(
    "y,p,expected",
    [
        ([[0], [0], [0]], [[0.9], [0.2], [0.4]], 0.5),  # no positive: nothing to choose from
        ([[1], [1], [1]], [[0.9], [0.2], [0.4]], 0.5),  # no negative
        ([[1], [0], [1], [0]], [[0.8], [0.6], [0.9], [0.1]], 0.8),  # ties on F1: the highest threshold
    ],
)
def test_threshold_edge_cases(y: list, p: list, expected: float) -> None:
    assert choose_thresholds(np.array(y), np.array(p))[0] == pytest.approx(expected)


def test_thresholds_check_shapes() -> None:
    with pytest.raises(DataError, match="same shape"):
        choose_thresholds(np.zeros((3, 2)), np.zeros((3, 1)))
    with pytest.raises(DataError, match="one per label"):
        apply_thresholds(np.zeros((3, 2)), np.array([0.5]))


@pytest.mark.xdist_group("openi")  # one worker makes the shared Open-i run and reads it
def test_study_thresholds_come_from_validation_probabilities(openi_run: Path) -> None:
    """Each compared run's thresholds are the ones chosen on its saved validation probabilities."""
    from medassist.config import from_dict, load_yaml
    from medassist.studies.text_setup import load_text_data

    m = json.loads((openi_run / "metrics.json").read_text())
    cfg = from_dict(TextStudyConfig, load_yaml(openi_run / "config.yaml"))
    y_val = load_text_data(cfg).splits["val"].labels
    for name, t in m["thresholds"].items():
        unit = openi_run / "units" / name / "val_probs.npy"  # models not trained by the engine: under models/
        p_val = np.load(unit if unit.is_file() else openi_run / "models" / f"{name}.val_probs.npy")
        np.testing.assert_allclose(t, choose_thresholds(y_val, p_val))
    assert m["tfidf_grid"] and "C=" in next(r for r in m["comparison"] if r["model"] == "tfidf_logreg")["settings"]
