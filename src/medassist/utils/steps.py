"""Where a run's seconds go: the steps a study announces, each timed until the next one or the run's end.

A study announces each step as it starts (:func:`step`), the line its progress shows; the open run folder
(:class:`medassist.run.Run`) keeps the steps and writes them to its ``timings.json`` when it ends, complete or
failed. ``medassist bench pipeline`` reads those files: seconds per part of ``medassist all`` and per step of each.
A step that nobody needs to see (a part of a measurement) is announced with ``show=False``: timed, not printed.

Runs nest (``medassist all`` holds each part's run): a step belongs to the innermost open run.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm


@dataclass
class Timeline:
    """The steps of one run in the order they started, and when the run started (``time.perf_counter``)."""

    started: float = field(default_factory=time.perf_counter)
    steps: list[tuple[str, float]] = field(default_factory=list)  # (name, start)

    def add(self, name: str) -> None:
        self.steps.append((name, time.perf_counter()))

    def rows(self, end: float | None = None) -> list[dict[str, Any]]:
        """One row per step with its seconds (until the next step, or ``end``); time before the first step is
        "setup"."""
        end = time.perf_counter() if end is None else end
        marks = list(self.steps)
        if not marks or marks[0][1] > self.started:
            marks.insert(0, ("setup", self.started))
        starts = [t for _, t in marks[1:]] + [end]
        return [{"step": name, "seconds": round(stop - t, 3)} for (name, t), stop in zip(marks, starts, strict=True)]


_OPEN: list[Timeline] = []


def open_timeline() -> Timeline:
    """Start timing a run (the innermost from now on)."""
    timeline = Timeline()
    _OPEN.append(timeline)
    return timeline


def close_timeline(timeline: Timeline) -> dict[str, Any]:
    """Stop timing ``timeline``; its steps and total seconds, as ``timings.json`` holds them."""
    end = time.perf_counter()
    if timeline in _OPEN:
        _OPEN.remove(timeline)
    return {"seconds": round(end - timeline.started, 3), "steps": timeline.rows(end)}


def step(scope: str, text: str, show: bool = True) -> None:
    """Announce the step ``text`` of ``scope`` (e.g. "deploy"): printed as ``[scope] text`` when ``show``, and
    timed in the innermost open run."""
    if show:
        tqdm.write(f"[{scope}] {text}", file=sys.stderr)
    if _OPEN:
        _OPEN[-1].add(f"{scope}: {text}")
