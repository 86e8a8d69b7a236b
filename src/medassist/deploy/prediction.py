"""What a bundle returns for one input: the label(s), each label's probability and the latency, made from the
model's logits by a softmax (multi-class) or a sigmoid per label (multi-label)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Prediction:
    """The prediction for one input.

    Attributes:
        label: multi-class: the most probable label. Multi-label: every label whose probability is at least the
            bundle's threshold, in the bundle's label order; possibly empty.
        probabilities: each label's probability, in the bundle's label order.
        latency_ms: wall time of the ONNX Runtime run(s) of the call that made this prediction; every prediction of
            one batch call shares the batch's time.
        confidence: multi-class: the top probability; multi-label: the smallest margin of a label from its threshold
            (see :mod:`medassist.deploy.calibrate`).
        abstained: the bundle's abstention rule refers this case (or some of its findings) to a clinician.
        reason: why it abstained (empty when it did not).
        referred: the labels left unanswered: multi-label, each finding whose probability is inside its band (or
            that validation could not assess); multi-class, the predicted class when the case is referred. Empty when
            the bundle's rule is the older case-level one (``abstained`` then refers the whole case).
        cam: image bundles asked for it: the class-activation map of the predicted class (h, w) in [0, 1].
    """

    label: str | list[str]
    probabilities: dict[str, float]
    latency_ms: float
    confidence: float = 1.0
    abstained: bool = False
    reason: str = ""
    referred: list[str] = field(default_factory=list)
    cam: np.ndarray | None = field(default=None, repr=False, compare=False)

    def unanswered(self) -> list[str]:
        """The labels left to a clinician: those referred by name, or every label when the older case-level rule
        abstained (it refers the whole case); in the bundle's label order."""
        if self.referred:
            return [k for k in self.probabilities if k in self.referred]
        return list(self.probabilities) if self.abstained else []

    def ranked(self) -> list[tuple[str, float]]:
        """(label, probability) pairs, most probable first (ties keep the bundle's label order)."""
        return sorted(self.probabilities.items(), key=lambda item: -item[1])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; probabilities most probable first."""
        label = list(self.label) if isinstance(self.label, list) else self.label
        return {
            "label": label,
            "probabilities": dict(self.ranked()),
            "latency_ms": self.latency_ms,
            "confidence": self.confidence,
            "abstained": self.abstained,
            "reason": self.reason,
            "referred": list(self.referred),
        }


def to_predictions(
    logits: np.ndarray,
    *,
    task: str,
    labels: Sequence[str],
    threshold: float | Sequence[float],
    latency_ms: float,
    temperature: float = 1.0,
    min_confidence: float | None = None,
    rule: dict[str, Any] | None = None,
) -> list[Prediction]:
    """One prediction per row of ``logits`` (N, K), K = ``len(labels)``; every one carries ``latency_ms``.

    Multi-class: the most probable label of a softmax. Multi-label: a sigmoid per label, and every label whose
    probability is at least ``threshold`` (one for all labels, or one per label). The logits are divided by
    ``temperature`` first. Abstention: with ``rule`` (per finding or per class, see
    :mod:`medassist.deploy.abstention`) the findings it leaves unanswered are referred by name; else a prediction
    whose confidence is below ``min_confidence`` abstains as a whole.
    """
    from medassist.deploy.abstention import decide
    from medassist.deploy.calibrate import ABSTAIN_REASON, case_confidence

    logits = np.asarray(logits, dtype=np.float64) / float(temperature)
    cut = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (len(labels),))
    if task == "multi-class":
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = z / z.sum(axis=1, keepdims=True)
    else:
        probs = 0.5 * (1.0 + np.tanh(0.5 * logits))  # the sigmoid, without overflow for large |logits|
    confidence = case_confidence(probs, task, cut)
    answered = decide(probs, task, labels, rule) if rule is not None else None
    out = []
    for i, (row, conf) in enumerate(zip(probs, confidence, strict=True)):
        probabilities = {name: float(p) for name, p in zip(labels, row, strict=True)}
        if task == "multi-class":
            label: str | list[str] = labels[int(np.argmax(row))]
        else:
            label = [name for name, p, t in zip(labels, row, cut, strict=True) if p >= t]
        referred: list[str] = []
        if answered is None:
            abstain = min_confidence is not None and bool(conf < min_confidence)
            reason = ABSTAIN_REASON if abstain else ""
        else:
            if task == "multi-label":
                referred = [name for name, ok in zip(labels, answered[i], strict=True) if not ok]
            elif not answered[i]:
                referred = [str(label)]
            abstain = bool(referred)
            reason = f"uncertain: {', '.join(referred)}; refer to a clinician" if referred else ""
        out.append(
            Prediction(
                label=label,
                probabilities=probabilities,
                latency_ms=latency_ms,
                confidence=float(conf),
                abstained=abstain,
                reason=reason,
                referred=referred,
            )
        )
    return out
