"""A predictions frame (a study's saved predictions, or an outside file read by :mod:`.outside`) as the audit's
binary decisions per label."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from medassist.fairness.audit import Scored
from medassist.fairness.threshold import OperatingPoint


def scored(frame: pd.DataFrame, info: dict[str, Any], point: OperatingPoint | None = None) -> Scored:
    """Each label as a binary decision: at the operating point's thresholds where it has them; otherwise
    multi-label at the run's validation-chosen thresholds (0.5 without), a binary task's positive class at the
    arg-max, and each class of a multi-class task one-vs-rest at the arg-max."""
    names = info["label_names"]
    p = frame[[f"p:{n}" for n in names]].to_numpy(dtype=np.float64)
    cluster = frame[info["cluster_column"]].to_numpy() if info.get("cluster_column") else None
    if info["task"] == "multi-label":
        y = frame[[f"y:{n}" for n in names]].to_numpy(dtype=np.int64)
        t = np.asarray(info.get("thresholds") or [0.5] * len(names), dtype=np.float64)
        out = Scored(list(names), y, p, (p >= t).astype(np.int64), cluster)
    else:
        cls = frame["y"].to_numpy(dtype=np.int64)
        pred = p.argmax(axis=1)
        keep = [1] if len(names) == 2 else list(range(len(names)))
        y = np.stack([(cls == c).astype(np.int64) for c in keep], axis=1)
        d = np.stack([(pred == c).astype(np.int64) for c in keep], axis=1)
        out = Scored([names[c] for c in keep], y, p[:, keep], d, cluster)
    if point is not None and point.thresholds:
        t = np.asarray([point.thresholds[label] for label in out.labels], dtype=np.float64)
        out.d = (out.p >= t).astype(np.int64)
    return out
