"""Shared fixtures: the real data directory (skip with a reason where none is set), the CPU for every test not marked
``gpu`` (so that a GPU workstation runs the same suite), and the strict-device check for tests marked
``strictdevice``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "support"))  # helpers shared by the tests (tests/support/)


def _pin_worker_to_its_core() -> None:
    """Under pytest-xdist (the default run: ``-n auto``) each worker keeps to cores of its own, so that two PyTorch
    processes never share the cores' threads: the studies' thread counts follow the affinity mask
    (:func:`medassist.utils.cores.usable_cores`), and child processes inherit it."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or count < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    mine = cores[int(worker[2:]) % len(cores) :: count] or cores
    os.sched_setaffinity(0, mine)
    os.environ["OMP_NUM_THREADS"] = str(len(mine))


_pin_worker_to_its_core()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tests of an ``xdist_group`` first, then the modules that hold a ``long`` test (in order otherwise): under
    ``--no-loadscope-reorder`` the work queue follows this order, so the longest chain (a shared run folder and the
    tests that read it) starts at once, the long modules beside it, and the short ones fill in at the end."""
    long_modules = {item.path for item in items if item.get_closest_marker("long")}
    items.sort(key=lambda item: (item.get_closest_marker("xdist_group") is None, item.path not in long_modules))


def pytest_configure(config: pytest.Config) -> None:
    """``--dist loadgroup`` needs a pytest before 9: pytest 9 derives a test's id from its structured address, so
    pytest-xdist 3.8 cannot add the ``@GROUP`` suffix and splits every ``xdist_group`` across workers (two workers
    then make one shared run, one waiting for the other). Stop and say so rather than run slower."""
    if config.getoption("dist", "no") == "loadgroup" and int(pytest.__version__.split(".")[0]) >= 9:
        raise pytest.UsageError(
            f"pytest {pytest.__version__} breaks pytest-xdist's --dist loadgroup (the groups are split); install the "
            "pytest this project pins: pip install 'pytest>=8,<9'"
        )


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: optional, so that a pytest without xdist loads this file
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """``--dist loadgroup`` (the default run's): the tests marked ``xdist_group(NAME)`` go to one worker together
    (those that read one shared run folder, so that no other worker waits for it), every other test module to one
    worker whole (so that a module's fixtures are made once)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class ModulesAndGroups(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.rfind("@") > nodeid.rfind("]"):
                return nodeid.split("@")[-1]
            return nodeid.split("::", 1)[0]

    return ModulesAndGroups(config, log)


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


def shared_run(tmp_path_factory: pytest.TempPathFactory, name: str, argv: list[str]) -> Path:
    """The run folder ``medassist <argv> --out <folder>`` makes, made once per test session: the pytest-xdist
    workers share it (the first to ask makes it while the others wait), and every test only reads it."""
    import fcntl

    from medassist.cli import main

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the folder above each worker's own: the same for every worker of the session
    out = root / f"shared-{name}"
    with open(root / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "made").is_file():
            if out.exists():  # a worker that failed to make it left it half-written
                import shutil

                shutil.rmtree(out)
            assert main([*argv, "--out", str(out / "runs"), "--progress", "false"]) == 0
            (out / "made").write_text("")
    (run,) = list((out / "runs").iterdir())
    return run


@pytest.fixture(scope="session")
def study_run(real_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image study run (debug profile) on the real PneumoniaMNIST file, shared by the tests that read it."""
    return shared_run(tmp_path_factory, "image", ["image", "--profile", "debug", "--data-dir", str(real_data_dir)])


@pytest.fixture(scope="session")
def openi_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A text study run (debug profile) on a slice of the real Open-i reports: 150 training and validation reports,
    200 of the 766 test reports (what the tests read of it needs no more; the deploy tests run on it too)."""
    pytest.importorskip("transformers")
    argv = ["text", "--profile", "debug", "--subsample", "150", "--test-subsample", "200"]
    return shared_run(tmp_path_factory, "text", argv)


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
