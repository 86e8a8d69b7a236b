"""Metrics against sklearn.metrics, bootstrap intervals, and calibration."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from sklearn import metrics as skm

from medassist.errors import DataError, MedAssistError
from medassist.evaluate import (
    GREATER_IS_BETTER,
    METRICS,
    bootstrap_ci,
    classification_metrics,
    expected_calibration_error,
    headline_metrics_with_ci,
    reliability_bins,
)
from medassist.evaluate.metrics import accuracy, auc, cross_entropy, macro_f1


def fake_predictions(n: int, k: int, *, seed: int = 0, signal: float = 1.0, decimals: int | None = None):
    """Labels and softmax probabilities that are informative but imperfect; rounding creates tied scores."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += signal
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    if decimals is not None:
        probs = np.round(probs, decimals)
        probs /= probs.sum(axis=1, keepdims=True)
    return y, probs


@pytest.mark.parametrize("k", [2, 3])
def test_classification_metrics_match_sklearn(k):
    y, probs = fake_predictions(300, k, seed=k)
    names = [f"class{i}" for i in range(k)]
    out = classification_metrics(y, probs, class_names=names)
    pred = probs.argmax(axis=1)
    expected_auc = (
        skm.roc_auc_score(y, probs[:, 1]) if k == 2 else skm.roc_auc_score(y, probs, multi_class="ovr", average="macro")
    )
    assert out["n"] == 300
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert out["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert out["auc"] == pytest.approx(expected_auc)
    assert out["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()
    precision, recall, f1, support = skm.precision_recall_fscore_support(y, pred)
    for i, name in enumerate(names):
        assert out["per_class"][name] == pytest.approx(
            {"precision": precision[i], "recall": recall[i], "f1": f1[i], "support": support[i]}
        )
    assert out["ece"] == pytest.approx(expected_calibration_error(y, probs))
    json.dumps(out)  # plain Python values only


def test_metric_functions_match_sklearn():
    y, probs = fake_predictions(200, 3, seed=5)
    assert METRICS["accuracy"](y, probs) == pytest.approx(skm.accuracy_score(y, probs.argmax(1)))
    assert METRICS["macro_f1"](y, probs) == pytest.approx(skm.f1_score(y, probs.argmax(1), average="macro"))
    assert METRICS["auc"](y, probs) == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr"))
    assert METRICS["loss"](y, probs) == pytest.approx(skm.log_loss(y, probs))
    assert set(METRICS) <= set(GREATER_IS_BETTER)
    assert GREATER_IS_BETTER["loss"] is False


def test_auc_is_nan_when_undefined():
    y, probs = fake_predictions(50, 2)
    assert np.isnan(auc(np.zeros(50, dtype=int), probs))
    y3, probs3 = fake_predictions(50, 3)
    assert np.isnan(auc(np.where(y3 == 2, 0, y3), probs3))  # class 2 never occurs: one-vs-rest undefined
    out = classification_metrics(np.ones(50, dtype=int), probs, class_names=["a", "b"])
    assert np.isnan(out["auc"])


def test_input_errors_name_the_problem():
    y, probs = fake_predictions(20, 3)
    with pytest.raises(DataError, match=r"shape \(19,\)"):
        accuracy(y[:19], probs)
    with pytest.raises(DataError, match="y_true\\[3\\] is 7"):
        accuracy(np.r_[y[:3], 7, y[4:]], probs)
    with pytest.raises(DataError, match="softmax"):
        accuracy(y, np.log(probs))  # logits-like input
    with pytest.raises(DataError, match="class_names has 2 names"):
        classification_metrics(y, probs, class_names=["a", "b"])
    with pytest.raises(MedAssistError, match="n_boot=0"):
        bootstrap_ci(y, probs, accuracy, n_boot=0)


def test_column_labels_and_float32_probs_are_accepted():
    y, probs = fake_predictions(100, 2)
    assert accuracy(y[:, None], probs.astype(np.float32)) == pytest.approx(accuracy(y, probs))


@pytest.mark.parametrize("metric", [accuracy, auc, macro_f1, cross_entropy, expected_calibration_error])
@pytest.mark.parametrize("k", [2, 3])
def test_bootstrap_fast_path_equals_calling_the_metric(metric, k):
    # A lambda is not in the fast-path table, so it is called per resample on the very same resamples.
    y, probs = fake_predictions(150, k, seed=k, decimals=2)
    fast = bootstrap_ci(y, probs, metric, n_boot=200, seed=3)
    slow = bootstrap_ci(y, probs, lambda a, b: metric(a, b), n_boot=200, seed=3)
    np.testing.assert_allclose(fast, slow, rtol=1e-10, atol=1e-12)


def test_bootstrap_ci_contains_estimate_and_is_reproducible():
    y, probs = fake_predictions(300, 2, seed=1)
    value, low, high = bootstrap_ci(y, probs, auc, n_boot=500, seed=7)
    assert value == pytest.approx(skm.roc_auc_score(y, probs[:, 1]))
    assert low < value < high
    assert bootstrap_ci(y, probs, auc, n_boot=500, seed=7) == (value, low, high)
    assert bootstrap_ci(y, probs, auc, n_boot=500, seed=8) != (value, low, high)


def test_bootstrap_ci_narrows_with_more_cases():
    small = bootstrap_ci(*fake_predictions(100, 2, seed=2), accuracy, n_boot=500)
    large = bootstrap_ci(*fake_predictions(2000, 2, seed=2), accuracy, n_boot=500)
    assert (large[2] - large[1]) < 0.5 * (small[2] - small[1])


def test_bootstrap_skips_undefined_resamples():
    # One positive in 40 cases: about a third of the resamples miss it and have no AUC.
    y = np.zeros(40, dtype=int)
    y[0] = 1
    probs = np.full((40, 2), 0.5)
    probs[0] = [0.1, 0.9]
    value, low, high = bootstrap_ci(y, probs, auc, n_boot=300)
    assert value == 1.0 and low == 1.0 and high == 1.0
    assert all(np.isnan(bootstrap_ci(np.zeros(40, dtype=int), probs, auc, n_boot=50)))


@pytest.mark.parametrize("metric", [accuracy, auc])
def test_bootstrap_is_fast(metric):
    y, probs = fake_predictions(624, 2, decimals=3)
    start = time.perf_counter()
    bootstrap_ci(y, probs, metric, n_boot=1000)
    assert time.perf_counter() - start < 1.0


def test_headline_metrics_with_ci():
    y, probs = fake_predictions(200, 3)
    out = headline_metrics_with_ci(y, probs, n_boot=200)
    assert set(out) == {"accuracy", "macro_f1", "auc", "ece"}
    for name, entry in out.items():
        assert set(entry) == {"value", "ci_low", "ci_high"}
        assert entry["ci_low"] < entry["ci_high"]
        if name != "ece":  # resampling inflates ECE, so its interval may sit above the full-set value
            assert entry["ci_low"] <= entry["value"] <= entry["ci_high"]
    assert out["accuracy"]["value"] == pytest.approx(skm.accuracy_score(y, probs.argmax(1)))
    json.dumps(out)


def test_ece_is_zero_for_confident_correct_predictions():
    y = np.array([0, 1, 2, 1, 0])
    assert expected_calibration_error(y, np.eye(3)[y]) == 0.0


def test_ece_matches_hand_computation():
    # Top-label confidences 0.95, 0.85, 0.85, 0.65 with the third prediction wrong; 10 bins:
    # (0.9, 1]: acc 1, conf 0.95 -> 1/4 * 0.05; (0.8, 0.9]: acc 0.5, conf 0.85 -> 2/4 * 0.35;
    # (0.6, 0.7]: acc 1, conf 0.65 -> 1/4 * 0.35.  ECE = 0.0125 + 0.175 + 0.0875 = 0.275.
    probs = np.array([[0.95, 0.05], [0.85, 0.15], [0.85, 0.15], [0.35, 0.65]])
    y = np.array([0, 0, 1, 1])
    assert expected_calibration_error(y, probs, n_bins=10) == pytest.approx(0.275)
    bins = reliability_bins(y, probs, n_bins=10)
    assert list(bins.columns) == ["bin_low", "bin_high", "count", "confidence", "accuracy"]
    assert len(bins) == 10 and bins["count"].sum() == 4
    row = bins[bins["count"] == 2].iloc[0]
    assert row["bin_low"] == pytest.approx(0.8)
    assert row["accuracy"] == pytest.approx(0.5) and row["confidence"] == pytest.approx(0.85)
    assert bins.loc[bins["count"] == 0, "accuracy"].isna().all()


def fake_multilabel(n: int, k: int, *, seed: int = 0):
    """0/1 labels (one rare label) and informative sigmoid probabilities rounded to create ties."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, k)) < np.linspace(0.03, 0.5, k)).astype(int)
    p = np.round(1 / (1 + np.exp(-(2.0 * y - 1 + rng.normal(size=(n, k))))), 2)
    return y, p


@pytest.mark.parametrize("name", ["macro_f1", "micro_f1", "macro_auc"])
def test_multilabel_bootstrap_fast_path_equals_calling_the_metric(name):
    from medassist.evaluate import multilabel

    metric = getattr(multilabel, name)
    y, p = fake_multilabel(120, 5, seed=4)
    fast = bootstrap_ci(y, p, metric, n_boot=200, seed=3)
    slow = bootstrap_ci(y, p, lambda a, b: metric(a, b), n_boot=200, seed=3)
    np.testing.assert_allclose(fast, slow, rtol=1e-10, atol=1e-12)
    assert fast[0] == pytest.approx(metric(y, p))


def test_multilabel_bootstrap_is_fast():
    from medassist.evaluate.multilabel import macro_auc

    y, p = fake_multilabel(766, 15)
    start = time.perf_counter()
    bootstrap_ci(y, p, macro_auc, n_boot=1000)
    assert time.perf_counter() - start < 5.0


@pytest.mark.parametrize("multilabel", [False, True])
def test_paired_difference_vectorised_equals_per_resample(multilabel: bool) -> None:
    """The all-at-once paired bootstrap gives the interval that scoring each resample on its own gives."""
    from medassist.evaluate import metrics as mc
    from medassist.evaluate import multilabel as ml

    rng = np.random.default_rng(3)
    if multilabel:
        y = (rng.random((80, 3)) < 0.3).astype(int)
        pa, pb = rng.random((80, 3)), rng.random((80, 3))
        metric = ml.macro_f1
    else:
        y = rng.integers(0, 3, 80)
        pa, pb = rng.dirichlet(np.ones(3), 80), rng.dirichlet(np.ones(3), 80)
        metric = mc.macro_f1
    fast = mc.paired_bootstrap_difference(y, pa, pb, metric, n_boot=200, seed=1)
    slow = mc.paired_bootstrap_difference(y, pa, pb, lambda a, b: metric(a, b), n_boot=200, seed=1)
    np.testing.assert_allclose(fast, slow)
