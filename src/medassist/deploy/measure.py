"""Speed and size measured the same way for every variant: warm-up, repeats, medians, one process.

Timings on a shared CPU are noisy, so variants are timed in rounds (every variant once per round, in turn) and
summarised by the median and the 95th percentile; comparisons are made as ratios within one run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

Infer = Callable[[], object]


def file_mb(*paths: str | Path) -> float:
    """Size on disk of ``paths`` together, in MB (10^6 bytes)."""
    return sum(Path(p).stat().st_size for p in paths) / 1e6


def time_rounds(
    fns: dict[str, Infer], *, warmup: int = 10, rounds: int = 5, per_round: int = 20
) -> dict[str, np.ndarray]:
    """Seconds per call of each function, interleaved: ``rounds`` times, each function ``per_round`` calls in turn.

    Interleaving spreads any slow spell of the machine over every variant instead of landing on one.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return {k: np.asarray(v) for k, v in times.items()}


def summarise_times(seconds: np.ndarray) -> dict[str, float]:
    """Median and 95th percentile in milliseconds."""
    return {"median_ms": float(np.median(seconds) * 1e3), "p95_ms": float(np.percentile(seconds, 95) * 1e3)}


def median_seconds(fn: Infer, *, repeats: int, warmup: int = 2, budget_s: float = 2.0, min_repeats: int = 3) -> float:
    """The median seconds of ``fn()`` over at most ``repeats`` timed calls after ``warmup`` untimed ones.

    Timing stops early once ``min_repeats`` calls are timed and together took ``budget_s``: a call of a second is as
    well known after three repeats as after seven, while calls of a millisecond still get every repeat.
    """
    for _ in range(warmup):
        fn()
    times: list[float] = []
    while len(times) < repeats:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= min_repeats and sum(times) >= budget_s:
            break
    return float(np.median(times))
