"""Per-finding and per-class abstention: chosen on validation to meet a miss and a false-flag target, applied by the
bundle, measured with intervals, and checked in bundle.json."""

from __future__ import annotations

import numpy as np
import pytest

from medassist.deploy.abstention import (
    check_rule,
    choose_band,
    choose_class_thresholds,
    choose_label_bands,
    decide,
    selective_report,
)
from medassist.deploy.prediction import to_predictions
from medassist.errors import MedAssistError

LABELS = ["effusion", "edema", "rare"]


def findings(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities that separate positives from negatives well, except in a middle band; 'rare' has 4
    positives."""
    rng = np.random.default_rng(seed)
    y = np.zeros((n, 3), dtype=np.int64)
    y[:, 0] = rng.random(n) < 0.3
    y[:, 1] = rng.random(n) < 0.2
    y[rng.choice(n, 4, replace=False), 2] = 1
    p = np.clip(0.5 + (y - 0.5) * rng.uniform(0.0, 0.9, (n, 3)) + rng.normal(0, 0.08, (n, 3)), 0.001, 0.999)
    return p, y


def rates(p: np.ndarray, y: np.ndarray, low: float, high: float) -> tuple[float, float, float]:
    answered = (p < low) | (p >= high)
    pos, neg = answered & (y == 1), answered & (y == 0)
    miss = (p[pos] < low).mean() if pos.any() else 0.0  # no positive answered: none missed
    false = (p[neg] >= high).mean() if neg.any() else 0.0
    return answered.mean(), miss, false


def test_band_meets_both_targets_and_answers_most() -> None:
    p, y = findings()
    low, high = choose_band(p[:, 0], y[:, 0], 0.5, target_miss=0.05, target_false=0.05)
    coverage, miss, false = rates(p[:, 0], y[:, 0], low, high)
    assert low <= 0.5 <= high and miss <= 0.05 and false <= 0.05
    assert 0.5 < coverage < 1.0  # some cases are referred, most answered
    # No wider answer set meets the targets: widening either side by one case breaks one of them.
    below = np.sort(p[:, 0][(p[:, 0] >= low) & (p[:, 0] < 0.5)])
    if len(below):
        assert rates(p[:, 0], y[:, 0], np.nextafter(below[0], 1), high)[1] > 0.05


def test_always_absent_does_not_pass_for_a_rare_finding() -> None:
    """Plain error would let a rare finding answer 'absent' everywhere; the miss target does not."""
    rng = np.random.default_rng(1)
    y = (rng.random(500) < 0.04).astype(int)
    p = rng.random(500) * 0.4  # an uninformative model: every case below the threshold
    low, high = choose_band(p, y, 0.5, target_miss=0.05, target_false=0.05)
    coverage, miss, _ = rates(p, y, low, high)
    assert miss <= 0.05 and coverage < 0.5  # plain 5% error would have answered all 500 "absent"


def test_label_bands_refer_findings_with_too_few_positives() -> None:
    p, y = findings()
    rule = choose_label_bands(p, y, LABELS, [0.5, 0.5, 0.5], target_miss=0.05, target_false=0.05, min_positives=10)
    assert rule["rule"] == "per-label" and rule["bands"]["rare"] is None and rule["bands"]["effusion"] is not None
    answered = decide(p, "multi-label", LABELS, rule)
    assert not answered[:, 2].any() and answered[:, 0].mean() > 0.5
    assert check_rule(rule, LABELS, "multi-label") is None
    with pytest.raises(MedAssistError, match="target_miss"):
        choose_label_bands(p, y, LABELS, 0.5, target_miss=1.5, target_false=0.05, min_positives=10)


def test_report_counts_coverage_errors_and_complete_cases() -> None:
    p = np.array([[0.9, 0.1], [0.1, 0.5], [0.6, 0.95], [0.05, 0.02]])
    y = np.array([[1, 0], [1, 0], [0, 1], [0, 0]])
    rule = {
        "rule": "per-label",
        "target_miss": 0.05,
        "target_false": 0.05,
        "min_positives": 1,
        "bands": {"a": [0.2, 0.8], "b": [0.3, 0.7]},
    }
    out = selective_report(p, y, "multi-label", ["a", "b"], 0.5, rule, n_boot=200, seed=0)
    a, b = out["findings"]
    # a: answered cases 0 (0.9 present, right), 1 (0.1 absent, a miss), 3 (absent, right); 2 (0.6) referred.
    assert a["coverage"] == 0.75 and a["miss"] == 0.5 and a["false"] == 0.0
    # b: 0.5 is inside [0.3, 0.7): case 1 referred; the others answered right.
    assert b["coverage"] == 0.75 and b["miss"] == 0.0 and b["false"] == 0.0
    assert out["complete"] == 0.5  # cases 0 and 3 have both findings answered
    lo, hi = out["complete_ci95"]
    assert 0.0 <= lo <= 0.5 <= hi <= 1.0


def test_class_thresholds_meet_targets_per_class() -> None:
    rng = np.random.default_rng(2)
    n = 900
    y = rng.integers(0, 3, n)
    logits = rng.normal(0, 1, (n, 3))
    logits[np.arange(n), y] += rng.uniform(0, 4, n)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    rule = choose_class_thresholds(probs, y, ["a", "b", "c"], target_miss=0.05, target_false=0.05, min_positives=10)
    accept = decide(probs, "multi-class", ["a", "b", "c"], rule)
    pred = probs.argmax(1)
    assert 0.2 < accept.mean() < 1.0
    for k in range(3):
        mine, others = accept & (y == k), accept & (y != k)
        assert (pred[mine] != k).mean() <= 0.05 and (pred[others] == k).mean() <= 0.05
    assert check_rule(rule, ["a", "b", "c"], "multi-class") is None


def test_predictions_name_the_uncertain_findings() -> None:
    rule = {
        "rule": "per-label",
        "target_miss": 0.05,
        "target_false": 0.05,
        "min_positives": 10,
        "bands": {"effusion": [0.2, 0.8], "edema": [0.3, 0.7], "rare": None},
    }
    logit = lambda q: np.log(q / (1 - q))  # noqa: E731
    logits = logit(np.array([[0.9, 0.1, 0.5], [0.5, 0.05, 0.5]]))
    a, b = to_predictions(logits, task="multi-label", labels=LABELS, threshold=0.5, latency_ms=1.0, rule=rule)
    assert a.referred == ["rare"] and a.abstained and a.reason == "uncertain: rare; refer to a clinician"
    assert b.referred == ["effusion", "rare"] and "effusion, rare" in b.reason


@pytest.mark.parametrize(
    "rule, problem",
    [
        ({"rule": "per-class", "bands": {}}, "per-label"),
        ({"rule": "per-label", "bands": {"effusion": [0.2, 0.8]}}, "one entry per label"),
        ({"rule": "per-label", "bands": {"effusion": [0.9, 0.1], "edema": None, "rare": None}}, "low, high"),
    ],
)
def test_malformed_rules_are_named(rule, problem) -> None:
    assert problem in check_rule(rule, LABELS, "multi-label")
