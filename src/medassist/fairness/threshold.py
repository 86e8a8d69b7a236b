"""The decision threshold an audit compares at: given by the auditor, or chosen on the validation rows by a rule.

An outside model's threshold is part of the model. Sensitivity, specificity, PPV, equalized odds and demographic
parity all describe the decisions at one threshold, so an audit at a threshold the model is never used at
(0.5 for a model whose positive rate is 11%) describes a model that almost never says yes. The rules, each
applied per label on the validation rows (scikit-learn's ``roc_curve`` gives the candidate thresholds):

- ``youden``: the threshold with the largest sensitivity + specificity - 1;
- ``sensitivity:X``: the highest threshold whose sensitivity is at least X;
- ``specificity:X``: the lowest threshold whose specificity is at least X;
- ``prevalence``: the threshold whose positive rate is closest to the prevalence (the model says yes about as
  often as the outcome occurs); the default for an outside model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_curve

from medassist.errors import MedAssistError

RULES = ("youden", "sensitivity:X", "specificity:X", "prevalence")
DEFAULT_RULE = "prevalence"


@dataclass(frozen=True)
class Rule:
    """A parsed threshold rule: its name and, for sensitivity/specificity, the target level."""

    name: str
    level: float | None = None

    def __str__(self) -> str:
        return self.name if self.level is None else f"{self.name}:{self.level:g}"

    def describe(self) -> str:
        if self.name == "youden":
            return "the largest sensitivity + specificity - 1 (Youden's J) on the validation rows"
        if self.name == "prevalence":
            return "the positive rate closest to the prevalence on the validation rows"
        bound = "highest" if self.name == "sensitivity" else "lowest"
        return f"the {bound} threshold with a {self.name} of at least {self.level:g} on the validation rows"


def parse_rule(text: str) -> Rule:
    """``youden``, ``prevalence``, ``sensitivity:0.9`` or ``specificity:0.9``.

    Raises:
        MedAssistError: an unknown rule or a level outside (0, 1).
    """
    name, _, level = text.strip().lower().partition(":")
    if name in ("youden", "prevalence") and not level:
        return Rule(name)
    if name in ("sensitivity", "specificity") and level:
        try:
            value = float(level)
        except ValueError:
            value = float("nan")
        if 0 < value < 1:
            return Rule(name, value)
        raise MedAssistError(f"threshold rule '{text}': the level must be a number between 0 and 1, e.g. {name}:0.9")
    raise MedAssistError(f"unknown threshold rule '{text}'; choose one of {', '.join(RULES)} (e.g. sensitivity:0.9)")


def choose(y: np.ndarray, p: np.ndarray, rule: Rule) -> float:
    """The threshold of ``rule`` for truth ``y`` (0/1) and scores ``p`` of one label; a case is positive at
    ``p >= threshold``.

    Raises:
        MedAssistError: the validation rows have no positive or no negative case.
    """
    y, p = np.asarray(y, dtype=np.int64), np.asarray(p, dtype=np.float64)
    if y.min(initial=1) == y.max(initial=0):
        raise MedAssistError(
            f"the threshold rule '{rule}' needs positive and negative validation rows; these have "
            f"{int(y.sum())} positive(s) of {len(y)}. Give the threshold with --threshold"
        )
    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    thresholds = np.minimum(thresholds, 1.0)  # roc_curve's first threshold is +inf: nobody positive
    if rule.name == "youden":
        return float(thresholds[int(np.argmax(tpr - fpr))])
    if rule.name == "sensitivity":
        return float(thresholds[int(np.flatnonzero(tpr >= rule.level)[0])])
    if rule.name == "specificity":
        return float(thresholds[int(np.flatnonzero(1 - fpr >= rule.level)[-1])])
    rate = (tpr * y.sum() + fpr * (len(y) - y.sum())) / len(y)  # positive rate at each threshold
    return float(thresholds[int(np.argmin(np.abs(rate - y.mean())))])


@dataclass
class OperatingPoint:
    """The thresholds an audit decides at, and how they were set.

    Attributes:
        source: "given" (``--threshold``), "rule" (chosen on validation), "run" (the audited run's own
            validation-chosen thresholds) or "argmax" (the most probable class; 0.5 for a binary label).
        thresholds: label -> threshold (empty for argmax).
        rule: the rule's text where one was applied.
        statement: one sentence for the report.
    """

    source: str
    thresholds: dict[str, float]
    rule: str = ""
    statement: str = ""

    def to_dict(self) -> dict:
        return {"source": self.source, "rule": self.rule, "thresholds": self.thresholds, "statement": self.statement}


def operating_point(
    labels: list[str],
    y_val: np.ndarray,
    p_val: np.ndarray,
    *,
    given: list[float],
    rule: str,
    default_rule: str,
    run_thresholds: list[float] | None,
    multiclass: bool,
) -> OperatingPoint:
    """The thresholds of an audit: ``given`` (one for every label, or one per label), else ``rule`` (or the
    source's default rule) chosen per label on the validation rows, else the run's own, else the arg-max.

    Args:
        y_val, p_val: (N, K) validation truth and scores of the audited labels.
        multiclass: a task of more than two classes, whose default is the arg-max.
    """
    if given and rule:
        raise MedAssistError("give --threshold or --threshold-rule, not both")
    if given:
        if len(given) not in (1, len(labels)):
            raise MedAssistError(
                f"--threshold: give one threshold, or one per label ({len(labels)}: {', '.join(labels)}); got "
                f"{len(given)}"
            )
        values = [float(t) for t in (given * len(labels) if len(given) == 1 else given)]
        if any(not 0 < t < 1 for t in values):
            raise MedAssistError(f"--threshold must lie between 0 and 1, got {', '.join(f'{t:g}' for t in given)}")
        th = dict(zip(labels, values, strict=True))
        return OperatingPoint("given", th, statement=f"decisions at the given threshold(s): {_listed(th)}")
    text = rule or ("" if multiclass or run_thresholds is not None else default_rule)
    if text:
        parsed = parse_rule(text)
        if len(y_val) == 0:
            raise MedAssistError(
                f"the threshold rule '{parsed}' is chosen on validation rows, and there are none; give the "
                "threshold with --threshold, or mark some rows val"
            )
        th = {label: choose(y_val[:, k], p_val[:, k], parsed) for k, label in enumerate(labels)}
        how = "given as --threshold-rule" if rule else "the default rule for an outside model"
        return OperatingPoint(
            "rule",
            th,
            str(parsed),
            f"decisions at the threshold(s) {_listed(th)}, chosen by the rule '{parsed}' ({how}): {parsed.describe()}",
        )
    if run_thresholds is not None:
        th = dict(zip(labels, map(float, run_thresholds), strict=True))
        return OperatingPoint(
            "run", th, statement=f"decisions at the run's validation-chosen thresholds: {_listed(th)}"
        )
    return OperatingPoint(
        "argmax",
        {},
        statement="decisions by the most probable class (a threshold of 0.5 for a binary label)",
    )


def _listed(th: dict[str, float]) -> str:
    return ", ".join(f"{label} {t:.4g}" for label, t in th.items())
