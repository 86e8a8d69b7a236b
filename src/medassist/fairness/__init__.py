"""Subgroup audits, disparities, mitigation and the ethics report (``medassist fairness``)."""

from __future__ import annotations

from medassist.fairness.audit import METRICS, GroupAudit, Scored, audit_grouping, metric_frame, weighted_metrics
from medassist.fairness.disparities import chance_summary, disparities, holm
from medassist.fairness.groups import Grouping, age_band_names, age_bands, default_groups, make_groupings
from medassist.fairness.mitigate import MITIGATIONS, balanced_weights, post_process

__all__ = [
    "METRICS",
    "MITIGATIONS",
    "GroupAudit",
    "Grouping",
    "Scored",
    "age_band_names",
    "age_bands",
    "audit_grouping",
    "balanced_weights",
    "chance_summary",
    "default_groups",
    "disparities",
    "holm",
    "make_groupings",
    "metric_frame",
    "post_process",
    "weighted_metrics",
]
