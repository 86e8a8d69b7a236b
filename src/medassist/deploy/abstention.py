"""An answer for every finding: per-finding (multi-label) and per-class (multi-class) abstention, chosen on
validation so that the answered cases meet two targets at once.

A rule that counts a case wrong when any of its findings is wrong refers almost every report with many findings. Here
each finding is answered or referred on its own:

- **Multi-label** (a report's findings): finding k has a band ``[low_k, high_k)`` around its decision threshold. A
  probability below ``low_k`` answers "absent", one at or above ``high_k`` answers "present", one inside the band is
  referred ("uncertain: pleural effusion"). The band is the narrowest-covering one (the most cases answered) such that
  among the answered validation cases at most ``target_miss`` of the finding's positives are answered "absent" and at
  most ``target_false`` of its negatives are answered "present". Plain error would not do: a rare finding meets any
  error target by always saying "absent" while missing every positive.
- **Multi-class** (an image's class): the answer is the most probable class k, given when its probability is at least
  ``c_k``; the ``c_k`` are lowered class by class (rounds until nothing changes) as far as the same two targets allow,
  read one-vs-rest for every class (a missed case of class k is one answered with another class; a false one is
  a case of another class answered k).
- A finding or class with fewer than ``min_positives`` validation positives cannot show its miss rate: it is not
  assessed and always referred.

All choices read validation only; :func:`selective_report` measures the result on test with 95% bootstrap intervals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medassist.errors import MedAssistError

RULE_PER_LABEL = "per-label"
RULE_PER_CLASS = "per-class"
MAX_CUTS = 600  # candidate cut points per finding (quantiles of the validation probabilities when there are more)


def _check_targets(target_miss: float, target_false: float, min_positives: int) -> None:
    for name, value in (("target_miss", target_miss), ("target_false", target_false)):
        if not 0.0 <= value < 1.0:
            raise MedAssistError(f"{name} must be a fraction in [0, 1), got {value!r}")
    if min_positives < 1:
        raise MedAssistError(f"min_positives must be at least 1, got {min_positives!r}")


def _cuts(p: np.ndarray) -> np.ndarray:
    """Candidate cut points: the distinct probabilities (or MAX_CUTS quantiles of them) and one above them all."""
    values = np.unique(p)
    if len(values) > MAX_CUTS:
        values = np.unique(np.quantile(values, np.linspace(0.0, 1.0, MAX_CUTS)))
    return np.r_[values, np.nextafter(1.0, 2.0)]


def choose_band(
    p: np.ndarray, y: np.ndarray, threshold: float, *, target_miss: float, target_false: float
) -> tuple[float, float]:
    """The band ``(low, high)`` with ``low <= threshold <= high`` that answers the most cases of one finding while
    the answered cases meet both targets (see the module). ``(threshold, threshold)`` answers everything; a band
    that answers nothing is ``(0, just above 1)``."""
    p = np.asarray(p, dtype=np.float64)
    pos = np.asarray(y) > 0.5
    cuts = _cuts(p)
    lows = np.r_[0.0, cuts[cuts <= threshold]]
    highs = np.r_[cuts[cuts >= threshold], np.nextafter(1.0, 2.0)]
    order = np.sort(p[pos]), np.sort(p[~pos])
    # Cases answered "absent" (p < low) and "present" (p >= high), positives and negatives apart.
    pos_low = np.searchsorted(order[0], lows, side="left")[:, None]
    neg_low = np.searchsorted(order[1], lows, side="left")[:, None]
    pos_high = (len(order[0]) - np.searchsorted(order[0], highs, side="left"))[None, :]
    neg_high = (len(order[1]) - np.searchsorted(order[1], highs, side="left"))[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        miss = np.where(pos_low + pos_high > 0, pos_low / (pos_low + pos_high), 0.0)
        false = np.where(neg_low + neg_high > 0, neg_high / (neg_low + neg_high), 0.0)
    answered = pos_low + neg_low + pos_high + neg_high
    ok = (miss <= target_miss + 1e-12) & (false <= target_false + 1e-12)
    score = np.where(ok, answered, -1)
    i, j = np.unravel_index(int(np.argmax(score)), score.shape)  # the first best: the lowest low, then high
    if score[i, j] <= 0:
        return 0.0, float(np.nextafter(1.0, 2.0))
    return float(lows[i]), float(highs[j])


def choose_label_bands(
    probs: np.ndarray,
    y: np.ndarray,
    labels: Sequence[str],
    threshold: float | Sequence[float],
    *,
    target_miss: float,
    target_false: float,
    min_positives: int,
) -> dict[str, Any]:
    """The multi-label rule of a bundle: each label's band, or None (not assessed: too few validation positives)."""
    _check_targets(target_miss, target_false, min_positives)
    probs, y = np.asarray(probs, dtype=np.float64), np.asarray(y)
    if len(probs) == 0:
        raise MedAssistError("cannot choose abstention bands on no cases; the validation split is empty")
    cut = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (len(labels),))
    bands: dict[str, list[float] | None] = {}
    for k, name in enumerate(labels):
        if int((y[:, k] > 0.5).sum()) < min_positives:
            bands[name] = None
            continue
        low, high = choose_band(probs[:, k], y[:, k], float(cut[k]), target_miss=target_miss, target_false=target_false)
        bands[name] = [low, high]
    return _rule(RULE_PER_LABEL, target_miss, target_false, min_positives, bands=bands)


def _rule(kind: str, target_miss: float, target_false: float, min_positives: int, **values: Any) -> dict[str, Any]:
    return {
        "rule": kind,
        "target_miss": float(target_miss),
        "target_false": float(target_false),
        "min_positives": int(min_positives),
        **values,
    }


def _class_rates(pred: np.ndarray, y: np.ndarray, accept: np.ndarray, k: int) -> tuple[float, float]:
    """Class k one-vs-rest among accepted cases: the share of its cases answered otherwise, and the share of the
    other cases answered k."""
    mine, others = accept & (y == k), accept & (y != k)
    miss = float((pred[mine] != k).mean()) if mine.any() else 0.0
    false = float((pred[others] == k).mean()) if others.any() else 0.0
    return miss, false


def choose_class_thresholds(
    probs: np.ndarray,
    y: np.ndarray,
    labels: Sequence[str],
    *,
    target_miss: float,
    target_false: float,
    min_positives: int,
) -> dict[str, Any]:
    """The multi-class rule of a bundle: each class's lowest top probability that is answered, or None (not
    assessed, so a case predicted as that class is always referred). See the module for the search."""
    _check_targets(target_miss, target_false, min_positives)
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y).reshape(-1).astype(np.int64)
    if len(probs) == 0:
        raise MedAssistError("cannot choose abstention thresholds on no cases; the validation split is empty")
    pred, top = probs.argmax(axis=1), probs.max(axis=1)
    never = float(np.nextafter(1.0, 2.0))
    assessed = [k for k in range(len(labels)) if int((y == k).sum()) >= min_positives]
    cmin = np.full(len(labels), never)

    def feasible(c: np.ndarray) -> bool:
        accept = top >= c[pred]
        return all(
            m <= target_miss + 1e-12 and f <= target_false + 1e-12
            for m, f in (_class_rates(pred, y, accept, k) for k in assessed)
        )

    changed = True
    while changed:
        changed = False
        for k in assessed:
            for c in _cuts(top[pred == k])[:-1]:  # the lowest feasible value first
                if c >= cmin[k]:
                    break
                trial = cmin.copy()
                trial[k] = c
                if feasible(trial):
                    cmin, changed = trial, True
                    break
    values = {name: (float(cmin[k]) if k in assessed else None) for k, name in enumerate(labels)}
    return _rule(RULE_PER_CLASS, target_miss, target_false, min_positives, min_confidence=values)


def decide(probs: np.ndarray, task: str, labels: Sequence[str], rule: dict[str, Any]) -> np.ndarray:
    """Which answers the rule gives: multi-label (N, K) bool, each finding answered or referred; multi-class (N,)
    bool, each case answered or referred."""
    probs = np.asarray(probs, dtype=np.float64)
    if rule["rule"] == RULE_PER_LABEL:
        out = np.zeros(probs.shape, dtype=bool)
        for k, name in enumerate(labels):
            band = rule["bands"].get(name)
            if band is not None:
                out[:, k] = (probs[:, k] < band[0]) | (probs[:, k] >= band[1])
        return out
    c = np.array([np.inf if v is None else v for v in (rule["min_confidence"][name] for name in labels)])
    pred = probs.argmax(axis=1)
    return probs.max(axis=1) >= c[pred]


def _interval(values: list[float]) -> list[float | None]:
    return [float(v) for v in np.quantile(values, [0.025, 0.975])] if values else [None, None]


def _rates(answer: np.ndarray, said: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Coverage, and the accepted miss and false-flag rates of one finding (answered, said present, truly
    present: three (N,) bool arrays)."""
    pos, neg = answer & truth, answer & ~truth
    return {
        "coverage": float(answer.mean()) if len(answer) else None,
        "miss": float((~said[pos]).mean()) if pos.any() else None,
        "false": float(said[neg].mean()) if neg.any() else None,
    }


def selective_report(
    probs: np.ndarray,
    y: np.ndarray,
    task: str,
    labels: Sequence[str],
    threshold: float | Sequence[float],
    rule: dict[str, Any],
    *,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """The rule on one split: per finding (or class) the coverage and the accepted miss and false-flag rates, and
    the share of cases with every finding answered, each with a 95% percentile-bootstrap interval (cases
    resampled with replacement)."""
    probs = np.asarray(probs, dtype=np.float64)
    n = len(probs)
    if task == "multi-label":
        answer = decide(probs, task, labels, rule)
        cut = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (len(labels),))
        said, truth = probs >= cut, np.asarray(y) > 0.5
        complete = answer.all(axis=1)
    else:
        accept = decide(probs, task, labels, rule)
        pred, yy = probs.argmax(axis=1), np.asarray(y).reshape(-1)
        k_range = range(len(labels))
        answer = np.stack([accept] * len(labels), axis=1)
        said = np.stack([pred == k for k in k_range], axis=1)
        truth = np.stack([yy == k for k in k_range], axis=1)
        complete = accept
    rng = np.random.default_rng(seed)
    boots = [rng.integers(0, n, n) for _ in range(n_boot)]
    rows = []
    for k, name in enumerate(labels):
        point = _rates(answer[:, k], said[:, k], truth[:, k])
        draws = [_rates(answer[i, k], said[i, k], truth[i, k]) for i in boots]
        row: dict[str, Any] = {"label": name, "n_positive": int(truth[:, k].sum()), "assessed": _assessed(rule, name)}
        for key in ("coverage", "miss", "false"):
            row[key] = point[key]
            row[f"{key}_ci95"] = _interval([d[key] for d in draws if d[key] is not None])
        rows.append(row)
    return {
        "n": int(n),
        "complete": float(complete.mean()) if n else None,
        "complete_ci95": _interval([float(complete[i].mean()) for i in boots]),
        "findings": rows,
    }


def _assessed(rule: dict[str, Any], name: str) -> bool:
    values = rule["bands"] if rule["rule"] == RULE_PER_LABEL else rule["min_confidence"]
    return values.get(name) is not None


def check_rule(rule: Any, labels: Sequence[str], task: str) -> str | None:
    """What is wrong with a bundle's per-finding rule, or None when it is well formed."""
    if not isinstance(rule, dict):
        return "is not a dict"
    want = RULE_PER_LABEL if task == "multi-label" else RULE_PER_CLASS
    if rule.get("rule") != want:
        return f"has rule {rule.get('rule')!r}; a {task} bundle uses {want!r}"
    key = "bands" if want == RULE_PER_LABEL else "min_confidence"
    values = rule.get(key)
    if not isinstance(values, dict) or sorted(values) != sorted(labels):
        return f"needs {key} with one entry per label ({', '.join(labels)})"
    for name, v in values.items():
        if v is None:
            continue
        ok = (
            isinstance(v, list) and len(v) == 2 and all(isinstance(x, int | float) for x in v) and v[0] <= v[1]
            if want == RULE_PER_LABEL
            else isinstance(v, int | float) and not isinstance(v, bool)
        )
        if not ok:
            return f"has {key}[{name!r}] = {v!r}; give " + ("[low, high]" if want == RULE_PER_LABEL else "a number")
    return None
