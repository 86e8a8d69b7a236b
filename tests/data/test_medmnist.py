"""The MedMNIST reader on tiny synthetic files, its error messages, and (marked realdata) the real files."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import platformdirs
import pytest

from medassist.data import medmnist
from medassist.data.download import md5sum
from medassist.data.medmnist import INFO, available, load_medmnist, medmnist_path
from medassist.data.paths import DATA_DIR_ENV, resolve_data_dir
from medassist.errors import ChecksumError, DataError

TINY_SIZES = {"train": 6, "val": 4, "test": 4}


def write_tiny(
    data_dir: Path, name: str, monkeypatch: pytest.MonkeyPatch, *, use_md5: bool = True, **overrides: np.ndarray
) -> Path:
    """Write a tiny file shaped like ``name`` (channels, classes, task) and shrink its INFO entry to match."""
    info = INFO[name]
    rng = np.random.default_rng(0)
    n_classes = len(info.labels)
    arrays: dict[str, np.ndarray] = {}
    for split, n in TINY_SIZES.items():
        shape = (n, 28, 28) if info.n_channels == 1 else (n, 28, 28, 3)
        arrays[f"{split}_images"] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        if info.task == medmnist.MULTI_LABEL_TASK:
            arrays[f"{split}_labels"] = rng.integers(0, 2, size=(n, n_classes), dtype=np.uint8)
        else:
            arrays[f"{split}_labels"] = (np.arange(n) % n_classes).astype(np.uint8).reshape(n, 1)
    arrays.update(overrides)
    path = data_dir / "medmnist" / f"{name}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:  # a file handle, so np.savez keeps the exact name
        np.savez(fh, **arrays)
    tiny = dataclasses.replace(info, n_samples=dict(TINY_SIZES), md5=md5sum(path) if use_md5 else None)
    monkeypatch.setitem(INFO, name, tiny)
    return path


def test_info_covers_the_2d_sets() -> None:
    assert sorted(INFO) == sorted(
        [
            "pathmnist",
            "chestmnist",
            "dermamnist",
            "octmnist",
            "pneumoniamnist",
            "retinamnist",
            "breastmnist",
            "bloodmnist",
            "tissuemnist",
            "organamnist",
            "organcmnist",
            "organsmnist",
        ]
    )
    tasks = {"binary-class", "multi-class", "multi-label, binary-class", "ordinal-regression"}
    for name, info in INFO.items():
        assert info.name == name and info.task in tasks and info.n_channels in (1, 3)
        assert sorted(info.labels, key=int) == [str(i) for i in range(len(info.labels))]
        assert set(info.n_samples) == {"train", "val", "test"}
        assert info.md5 is None or (len(info.md5) == 32 and int(info.md5, 16) >= 0)
        assert info.filename == f"{name}.npz"
        assert info.url == f"https://zenodo.org/records/10519652/files/{name}.npz?download=1"
    pneumonia = INFO["pneumoniamnist"]
    assert pneumonia.md5 == "28209eda62fecd6e6a2d98b1501bb15f"
    assert pneumonia.n_samples == {"train": 4708, "val": 524, "test": 624}
    assert pneumonia.labels == {"0": "normal", "1": "pneumonia"}
    breast = INFO["breastmnist"]
    assert breast.md5 == "750601b1f35ba3300ea97c75c52ff8f6"
    assert breast.n_samples == {"train": 546, "val": 78, "test": 156}
    assert breast.labels == {"0": "malignant", "1": "normal, benign"}


def test_load_grayscale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_tiny(tmp_path, "pneumoniamnist", monkeypatch)
    data = load_medmnist("pneumoniamnist", data_dir=tmp_path, download=False)
    assert data.name == "pneumoniamnist" and data.task == "multi-class"
    assert data.class_names == ["normal", "pneumonia"]
    for split, n in TINY_SIZES.items():
        assert data.splits[split].images.shape == (n, 1, 28, 28)
        assert data.splits[split].images.dtype == np.uint8
        assert data.splits[split].labels.shape == (n,)
        assert data.splits[split].labels.dtype == np.int64
    with np.load(path) as raw:
        assert np.array_equal(data.splits["val"].images[:, 0], raw["val_images"])
        assert np.array_equal(data.splits["val"].labels, raw["val_labels"][:, 0])
    assert data.info["source"] == "MedMNIST v2"
    assert data.info["task"] == "binary-class"
    assert data.info["md5"] == md5sum(path) and data.info["md5_verified"] is True
    assert data.info["license"] == "CC BY 4.0"
    assert data.info["path"] == str(path)


def test_load_rgb_moves_channels_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_tiny(tmp_path, "bloodmnist", monkeypatch)
    data = load_medmnist("bloodmnist", data_dir=tmp_path, download=False)
    assert data.splits["train"].images.shape == (6, 3, 28, 28)
    assert data.splits["train"].images.flags["C_CONTIGUOUS"]
    with np.load(path) as raw:
        assert np.array_equal(data.splits["train"].images, raw["train_images"].transpose(0, 3, 1, 2))
    assert data.class_names == [INFO["bloodmnist"].labels[str(i)] for i in range(8)]
    assert data.n_channels == 3 and data.image_size == 28 and data.num_classes == 8


def test_load_multi_label(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_tiny(tmp_path, "chestmnist", monkeypatch)
    data = load_medmnist("chestmnist", data_dir=tmp_path, download=False)
    assert data.task == "multi-label" and data.info["task"] == "multi-label, binary-class"
    assert data.splits["test"].labels.shape == (4, 14) and data.splits["test"].labels.dtype == np.int64
    assert data.class_names[0] == "atelectasis" and data.class_names[-1] == "hernia"


def test_missing_file_without_download_names_path(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_medmnist("breastmnist", data_dir=tmp_path, download=False)
    message = str(info.value)
    assert str(tmp_path / "medmnist" / "breastmnist.npz") in message
    assert INFO["breastmnist"].url in message and DATA_DIR_ENV in message


def test_random_bytes_are_not_an_npz(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_tiny(tmp_path, "pneumoniamnist", monkeypatch, use_md5=False)
    path.write_bytes(np.random.default_rng(1).bytes(2000))
    with pytest.raises(DataError) as info:
        load_medmnist("pneumoniamnist", data_dir=tmp_path, download=False)
    assert str(path) in str(info.value) and "re-download" in str(info.value)


def test_truncated_zip_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_tiny(tmp_path, "pneumoniamnist", monkeypatch, use_md5=False)
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(DataError) as info:
        load_medmnist("pneumoniamnist", data_dir=tmp_path, download=False)
    assert str(path) in str(info.value)


def test_missing_key_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_tiny(tmp_path, "pneumoniamnist", monkeypatch, use_md5=False)
    with np.load(path) as raw:
        kept = {k: raw[k] for k in raw.files if k != "train_images"}
    with open(path, "wb") as fh:
        np.savez(fh, **kept)
    with pytest.raises(DataError) as info:
        load_medmnist("pneumoniamnist", data_dir=tmp_path, download=False)
    assert str(path) in str(info.value) and "train_images" in str(info.value)


def test_split_size_mismatch_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_tiny(tmp_path, "pneumoniamnist", monkeypatch, use_md5=False)
    monkeypatch.setitem(
        INFO, "pneumoniamnist", dataclasses.replace(INFO["pneumoniamnist"], n_samples={"train": 7, "val": 4, "test": 4})
    )
    with pytest.raises(DataError) as info:
        load_medmnist("pneumoniamnist", data_dir=tmp_path, download=False)
    assert str(path) in str(info.value) and "7" in str(info.value)


def test_md5_mismatch_raises_checksum_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_tiny(tmp_path, "pneumoniamnist", monkeypatch)
    expected = INFO["pneumoniamnist"].md5
    monkeypatch.setitem(INFO, "pneumoniamnist", dataclasses.replace(INFO["pneumoniamnist"], md5="0" * 32))
    with pytest.raises(ChecksumError) as info:
        load_medmnist("pneumoniamnist", data_dir=tmp_path, download=False)
    message = str(info.value)
    assert str(path) in message and expected in message and "0" * 32 in message
    assert "delete it and run again to re-download" in message.lower()
    # verify=False skips the check and reads the file.
    data = load_medmnist("pneumoniamnist", data_dir=tmp_path, download=False, verify=False)
    assert data.info["md5_verified"] is False


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(DataError) as info:
        load_medmnist("nosuchmnist", download=False)
    message = str(info.value)
    assert "nosuchmnist" in message
    assert all(name in message for name in INFO)


def test_available_and_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert available(tmp_path) == []
    write_tiny(tmp_path, "breastmnist", monkeypatch)
    assert available(tmp_path) == ["breastmnist"]
    assert medmnist_path("breastmnist", tmp_path) == tmp_path / "medmnist" / "breastmnist.npz"


def test_resolve_data_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    assert resolve_data_dir() == Path(platformdirs.user_cache_dir("medassist")).absolute()
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "from_env"))
    assert resolve_data_dir() == tmp_path / "from_env"
    assert resolve_data_dir(tmp_path / "from_arg") == tmp_path / "from_arg"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_data_dir("~/data") == tmp_path / "data"
    monkeypatch.chdir(tmp_path)
    assert resolve_data_dir("rel") == tmp_path / "rel"
    assert resolve_data_dir("rel").is_absolute()


# Facts from /work/shared/data/README.md: split sizes, train class counts and official MD5s.
REAL_FACTS = {
    "pneumoniamnist": ((4708, 524, 624), [1214, 3494], "28209eda62fecd6e6a2d98b1501bb15f"),
    "breastmnist": ((546, 78, 156), [147, 399], "750601b1f35ba3300ea97c75c52ff8f6"),
}


@pytest.mark.realdata
@pytest.mark.parametrize("name", sorted(REAL_FACTS))
def test_real_file(name: str) -> None:
    if not os.environ.get(DATA_DIR_ENV):
        pytest.skip(f"{DATA_DIR_ENV} is not set; point it at a folder holding medmnist/{name}.npz")
    path = medmnist_path(name)
    if not path.is_file():
        pytest.skip(f"{path} is absent; put the official {name}.npz there to run this test")
    sizes, train_counts, md5 = REAL_FACTS[name]
    assert md5sum(path) == md5
    data = load_medmnist(name, download=False, progress=False)
    assert tuple(len(data.splits[s]) for s in ("train", "val", "test")) == sizes
    assert np.bincount(data.splits["train"].labels).tolist() == train_counts
    assert data.splits["train"].images.shape[1:] == (1, 28, 28)
    assert data.splits["train"].images.dtype == np.uint8
    assert data.class_names == INFO[name].class_names
    assert data.info["md5"] == md5 and data.info["md5_verified"] is True
