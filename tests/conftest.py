"""Shared fixtures: the real data directory (skip with a reason where none is set)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/helpers.py


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The data directory holding medmnist/pneumoniamnist.npz and breastmnist.npz (MEDASSIST_DATA_DIR)."""
    value = os.environ.get("MEDASSIST_DATA_DIR")
    if not value:
        pytest.skip("MEDASSIST_DATA_DIR is not set: real-data tests need the MedMNIST npz files")
    root = Path(value)
    for name in ("pneumoniamnist", "breastmnist"):
        if not (root / "medmnist" / f"{name}.npz").is_file():
            pytest.skip(f"{root / 'medmnist' / (name + '.npz')} is missing")
    return root
