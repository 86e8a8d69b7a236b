"""Shared fixtures: the real data directory (skip with a reason where none is set), the CPU for every test not marked
``gpu`` (so that a GPU workstation runs the same suite), and the strict-device check for tests marked
``strictdevice``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "support"))  # helpers shared by the tests (tests/support/)


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


@pytest.fixture(scope="session")
def study_run(real_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image study run (debug profile) on the real PneumoniaMNIST file, shared by the tests that read it."""
    from medassist.cli import main

    out = tmp_path_factory.mktemp("runs")
    argv = ["image", "--profile", "debug", "--data-dir", str(real_data_dir), "--out", str(out), "--progress", "false"]
    assert main(argv) == 0
    (run,) = list(out.iterdir())
    return run


@pytest.fixture(scope="session")
def openi_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A text study run (debug profile) on a slice of the real Open-i reports."""
    from medassist.cli import main

    pytest.importorskip("transformers")
    out = tmp_path_factory.mktemp("text-runs")
    argv = ["text", "--profile", "debug", "--subsample", "150", "--out", str(out), "--progress", "false"]
    assert main(argv) == 0
    (run,) = list(out.iterdir())
    return run


@pytest.fixture(scope="session", autouse=True)
def image_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Decoded image caches go to a temporary folder (and child processes inherit it), never the user's cache."""
    folder = tmp_path_factory.mktemp("image-cache")
    os.environ["MEDASSIST_CACHE_DIR"] = str(folder)
    return folder


@pytest.fixture(autouse=True)
def cpu_unless_marked_gpu(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--device auto`` means the CPU in every test but those marked ``gpu`` (child processes inherit it): on a GPU
    workstation the suite gives the numbers and the green of a CPU machine, and the ``gpu`` tests ask for CUDA."""
    from medassist.train.device import AUTO_ENV

    if request.node.get_closest_marker("gpu") is None:
        monkeypatch.setenv(AUTO_ENV, "cpu")


@pytest.fixture(autouse=True)
def strict_device_when_marked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests marked ``strictdevice`` run under the strict-device check (child processes too)."""
    from medassist.train import strict

    if request.node.get_closest_marker("strictdevice") is not None:
        monkeypatch.setenv(strict.ENV, "1")
