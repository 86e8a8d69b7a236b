"""Tests for decoding a folder once into the cache, reading images from disk batch by batch, and bad files."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medassist.bench.data import linked_subset, make_png_folder, step_measure, synthetic_png, train_measure
from medassist.data import image_cache
from medassist.data.image_cache import cache_dir, decode_images
from medassist.data.images import DiskImages, ImageFiles, load_image, read_image_folder
from medassist.errors import DataError
from medassist.train.data import ImageBatcher, predict_proba, to_tensor, with_inputs


def folder_of(root: Path, n: int = 24, side: int = 20) -> Path:
    """Two classes of small PNGs, each image different."""
    rng = np.random.default_rng(0)
    for i in range(n):
        path = root / f"c{i % 2}" / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8)).save(path)
    return root


def cached_files(name: str) -> list[str]:
    return sorted(p.name for p in cache_dir().glob(f"{name}-*"))


def test_decode_once_then_open_the_cache(tmp_path: Path) -> None:
    root = folder_of(tmp_path / "cached")
    first = read_image_folder(root, size=8, progress=False)
    again = read_image_folder(root, size=8, progress=False)
    train = first.splits["train"]
    assert isinstance(train.images, DiskImages) and train.images.shape == (len(train), 1, 8, 8)
    paths = first.splits["train"].metadata["path"]
    expected = np.stack([load_image(p, size=8) for p in paths])
    assert np.array_equal(np.asarray(train.images), expected)
    assert np.array_equal(np.asarray(again.splits["train"].images), expected)
    assert len(cached_files("cached")) == 2  # the .npy and its .json, one pair per data set and size

    in_memory = read_image_folder(root, size=8, progress=False, files=ImageFiles(cache=False))
    assert isinstance(in_memory.splits["train"].images, np.ndarray)
    assert np.array_equal(in_memory.splits["train"].images, expected)


def test_a_changed_file_rebuilds_the_cache_and_replaces_the_old_one(tmp_path: Path) -> None:
    root = folder_of(tmp_path / "changing")
    before = read_image_folder(root, size=8, progress=False)
    names = cached_files("changing")
    changed = Path(before.splits["test"].metadata["path"][0])
    Image.fromarray(np.full((20, 20), 7, dtype=np.uint8)).save(changed)
    os.utime(changed, ns=(1, 10**18))  # a different modification time, whatever the clock's resolution
    after = read_image_folder(root, size=8, progress=False)
    assert cached_files("changing") != names and len(cached_files("changing")) == 2
    assert np.all(after.splits["test"].images[0] == 7)


def test_disk_images_index_like_an_array(tmp_path: Path) -> None:
    root = folder_of(tmp_path / "views", n=30)
    paths = sorted(root.rglob("*.png"))
    decoded = decode_images(paths, size=8, channels=None, name="views", source=str(root), progress=False)
    disk = decoded.images
    assert isinstance(disk, DiskImages)
    full = np.asarray(disk)
    idx = np.array([5, 2, 3, 29, 0])
    assert np.array_equal(disk.read(idx), full[idx])  # the requested order, runs and single rows alike
    view = disk[idx]
    assert isinstance(view, DiskImages) and view.shape == (5, 1, 8, 8)
    assert np.array_equal(view[1:3].read(), full[idx][1:3])
    assert np.array_equal(disk[torch.tensor([4, 1])].read(), full[[4, 1]])
    assert np.array_equal(disk[full[:, 0, 0, 0] > 128].read(), full[full[:, 0, 0, 0] > 128])
    assert np.array_equal(disk[3], full[3]) and disk[3, 0, 2, 5] == full[3, 0, 2, 5]
    assert np.array_equal(pickle.loads(pickle.dumps(view)).read(), full[idx])  # travels to another process


def test_a_cut_short_cache_file_is_refused_and_rebuilt(tmp_path: Path) -> None:
    root = folder_of(tmp_path / "short")
    paths = sorted(root.rglob("*.png"))
    decoded = decode_images(paths, size=8, channels=None, name="short", source=str(root), progress=False)
    assert decoded.cache is not None
    with open(decoded.cache, "r+b") as f:
        f.truncate(decoded.cache.stat().st_size - 10)
    with pytest.raises(DataError, match="cut short"):
        DiskImages(decoded.cache)
    again = decode_images(paths, size=8, channels=None, name="short", source=str(root), progress=False)
    assert not again.from_cache and np.array_equal(np.asarray(again.images), np.asarray(decoded.images))


def test_parallel_decode_matches_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = folder_of(tmp_path / "parallel", n=40)
    paths = sorted(root.rglob("*.png"))
    monkeypatch.setattr(image_cache, "MIN_PARALLEL", 1)
    one = decode_images(paths, size=8, channels=None, name="p", source="a", workers=1, cache=False, progress=False)
    two = decode_images(paths, size=8, channels=None, name="p", source="b", workers=2, progress=False)
    assert one.workers == 1 and two.workers == 2
    assert np.array_equal(np.asarray(two.images), one.images)


def test_workers_start_from_a_fork_server_once_cuda_is_initialised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that has initialised CUDA must not fork: its decoding workers start from a fork server."""
    import torch

    assert image_cache.pool_context().get_start_method() == "fork"
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert image_cache.pool_context().get_start_method() == "forkserver"
    root = folder_of(tmp_path / "served", n=12)
    paths = sorted(root.rglob("*.png"))
    monkeypatch.setattr(image_cache, "MIN_PARALLEL", 1)
    one = decode_images(paths, size=8, channels=None, name="p", source="a", workers=1, cache=False, progress=False)
    two = decode_images(paths, size=8, channels=None, name="p", source="s", workers=2, progress=False)
    assert two.workers == 2 and np.array_equal(np.asarray(two.images), one.images)


def test_every_bad_file_is_named_and_can_be_skipped(tmp_path: Path) -> None:
    root = folder_of(tmp_path / "bad", n=30)
    broken = [root / "c0" / "broken.png", root / "c1" / "empty.png"]
    broken[0].write_bytes(b"not a png at all")
    broken[1].write_bytes(b"")
    with pytest.raises(DataError) as err:
        read_image_folder(root, size=8, progress=False)
    message = str(err.value)
    assert "2 of 32 image files cannot be read" in message and "--skip-bad-files" in message
    assert all(str(p) in message for p in broken)  # every one, not the first only
    data = read_image_folder(root, size=8, progress=False, files=ImageFiles(skip_bad_files=True))
    assert data.info["skipped_bad_files"] == 2
    kept = {p for s in data.splits.values() for p in s.metadata["path"]}
    assert len(kept) == 30 and not kept & {str(p) for p in broken}


def test_an_interrupted_decode_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = folder_of(tmp_path / "interrupted")

    def stop(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(image_cache, "decode_chunk", stop)
    with pytest.raises(KeyboardInterrupt):
        read_image_folder(root, size=8, progress=False)
    assert list(cache_dir().glob("*interrupted*")) == [] and list(cache_dir().glob(".*partial")) == []


def test_batches_from_disk_equal_batches_from_memory(tmp_path: Path) -> None:
    root = folder_of(tmp_path / "batches", n=30)
    data = read_image_folder(root, size=8, progress=False)
    disk = data.splits["train"].images
    memory = np.asarray(disk)
    on_disk, in_memory = ImageBatcher(disk), ImageBatcher(memory)
    assert on_disk.prefetch and not in_memory.prefetch
    order = list(on_disk.order(4, generator=torch.Generator().manual_seed(0)))
    got = [(i, x) for i, (x,) in with_inputs(on_disk, iter(order))]
    assert [i.tolist() for i, _ in got] == [i.tolist() for i in order]  # same batches, same order
    for idx, x in got:
        assert torch.equal(x, to_tensor(memory[idx.numpy()]))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    assert np.allclose(predict_proba(model, disk), predict_proba(model, memory))
    assert torch.equal(on_disk.subset(np.array([2, 0])).batch(torch.tensor([0, 1])), to_tensor(memory[[2, 0]]))


def test_bench_data_pieces(tmp_path: Path) -> None:
    label, pixels = synthetic_png(3, 32, seed=0)
    assert label == 1 and pixels.shape == (32, 32) and pixels.dtype == np.uint8
    full = make_png_folder(tmp_path / "full", 40, 32, seed=0, workers=2)
    assert len(list(full.rglob("*.png"))) == 40
    part = linked_subset(full, tmp_path / "part", 20)
    first = part / "class_0" / "img_000000.png"
    assert (
        len(list(part.rglob("*.png"))) == 20 and first.stat().st_ino == (full / first.relative_to(part)).stat().st_ino
    )
    cfg = {"folder": str(full), "size": 16, "model": "cnn_gap", "batch_size": 8, "train_seconds": 0.5, "seed": 0}
    assert step_measure({**cfg, "repeats": 2})["steps"] == 2
    out = train_measure(cfg)
    assert out["images"] == 40 and out["val_images"] == 4
    assert out["array_gb"] == pytest.approx(40 * 16 * 16 / 1e9)
