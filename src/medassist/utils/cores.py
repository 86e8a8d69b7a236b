"""The CPU cores this process may use: those of its affinity mask (taskset, a container's cpuset, a test worker
pinned to one core), not every core of the machine."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """How many cores this process may run on (at least 1)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1
