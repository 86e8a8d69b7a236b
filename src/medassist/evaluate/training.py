"""How a model's training ended, in the words every table, legend and written analysis uses.

A model *under-trained* (its time budget cut it while validation was still improving) or *at chance* (it learned
nothing usable) is marked wherever it appears, and no conclusion about capacity, architecture or regularisation rests
on it. The rules live here, apart from the engine, so that the reports (which read files only) share them.
"""

from __future__ import annotations

from typing import Any

UNDER_TRAINED_RULE = (
    "under-trained: a time budget ended training before its planned epochs while the monitored validation metric "
    "was still improving (the best epoch was the last one completed)"
)


def under_trained(*, budget_reached: bool, best_epoch: int, epochs_run: int, planned_epochs: int) -> bool:
    """True when a time budget cut training short while the monitored validation metric was still improving
    (:data:`UNDER_TRAINED_RULE`). Such a model's numbers say how far its budget got, not what the model can do."""
    return bool(budget_reached) and 0 < epochs_run < planned_epochs and best_epoch >= epochs_run


def training_status(under_trained: bool, at_chance: bool) -> str:
    """'under-trained', 'at chance', 'under-trained, at chance' or 'complete' (the label tables and legends use)."""
    parts = [p for p, on in (("under-trained", under_trained), ("at chance", at_chance)) if on]
    return ", ".join(parts) or "complete"


def usable(row: dict[str, Any]) -> bool:
    """Whether a table row (from :meth:`UnitResult.row`) may carry a conclusion: neither under-trained nor at chance."""
    return not (row.get("under_trained") or row.get("at_chance"))


def legend_label(name: str, row: dict[str, Any]) -> str:
    """A figure legend's label for a model, marked when its training was cut or it learned nothing."""
    status = training_status(bool(row.get("under_trained")), bool(row.get("at_chance")))
    return name if status == "complete" else f"{name} ({status})"
