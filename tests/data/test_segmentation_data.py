"""Segmentation readers on tiny generated images and masks, their error messages, and (marked realdata) DRIVE."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import save_dicom
from medassist.data.image_file import load_image, pixel_spacing, read_pixels
from medassist.data.segmentation import (
    SegSet,
    load_segmentation,
    read_mask,
    read_mask_csv,
    read_mask_folder,
    split_by_size,
)
from medassist.errors import DataError

SIDE = 32


def discs(seed: int, *, side: int = SIDE, classes: int = 1, radius: tuple[int, int] = (3, 8)) -> np.ndarray:
    """A uint8 (side, side) label map with up to three discs of classes 1..``classes``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    out = np.zeros((side, side), np.uint8)
    for k in range(3):
        r = rng.integers(*radius)
        cy, cx = rng.integers(r, side - r, size=2)
        out[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1 + k % classes
    return out


def image_of(label: np.ndarray, seed: int, *, rgb: bool = False) -> np.ndarray:
    """A noisy image in which the labelled discs are bright."""
    noise = np.random.default_rng(seed).integers(0, 60, label.shape)
    gray = np.clip(40 + noise + 60 * label.astype(int), 0, 255).astype(np.uint8)
    return np.stack([gray, gray // 2, 255 - gray], axis=-1) if rgb else gray


def save(path: Path, array: np.ndarray, **kwargs: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def make_folder(root: Path, n: int = 3, *, suffix: str = "_mask", classes: int = 1, fov: bool = False) -> Path:
    """root/images/case{i}.png (RGB) and root/masks/case{i}{suffix}.png (0/255, or 0..classes when classes > 1)."""
    for i in range(n):
        label = discs(i, classes=classes)
        save(root / "images" / f"case{i}.png", image_of(label, i, rgb=True))
        save(root / "masks" / f"case{i}{suffix}.png", label * 255 if classes == 1 else label)
        if fov:
            field = np.zeros_like(label)
            field[2:-2, 2:-2] = 255
            save(root / "fov" / f"case{i}_mask.png", field)
    return root


# ---------------------------------------------------------------------------------------------------------------------
# Masks


def test_read_mask_makes_binary_masks_0_1_and_keeps_class_indices(tmp_path: Path) -> None:
    label = discs(0)
    assert set(np.unique(label)) == {0, 1}
    assert np.array_equal(read_mask(save(tmp_path / "a.png", label * 255)), label)
    assert np.array_equal(read_mask(save(tmp_path / "b.png", label)), label)
    assert np.array_equal(read_mask(save(tmp_path / "c.gif", label * 255)), label)
    rgb = np.repeat((label * 255)[..., None], 3, axis=-1)
    assert np.array_equal(read_mask(save(tmp_path / "d.png", rgb)), label)  # equal channels read as gray
    multi = discs(1, classes=2)
    palette = Image.fromarray(multi, mode="P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
    palette.save(tmp_path / "e.png")
    out = read_mask(tmp_path / "e.png")
    assert out.dtype == np.uint8 and np.array_equal(out, multi)  # palette indices, not colours


def test_a_jpeg_mask_is_refused_with_its_values(tmp_path: Path) -> None:
    path = save(tmp_path / "lossy_mask.jpg", discs(0, side=64) * 255, quality=50)
    with pytest.raises(DataError, match=r"lossy_mask\.jpg.*values are 0, 1, .*distinct values.*not JPEG"):
        read_mask(path)
    colour = np.zeros((8, 8, 3), np.uint8)
    colour[:4, :, 0] = 255
    with pytest.raises(DataError, match=r"colour\.png is a colour mask"):
        read_mask(save(tmp_path / "colour.png", colour))
    with pytest.raises(DataError, match="mask file not found"):
        read_mask(tmp_path / "absent.png")


def test_nearest_neighbour_resize_keeps_only_class_values(tmp_path: Path) -> None:
    multi = discs(2, classes=3, side=40)
    path = save(tmp_path / "m.png", multi)
    for size in ((17, 23), (64, 64)):
        out = read_mask(path, size=size)
        assert out.shape == size and set(np.unique(out)) <= set(np.unique(multi))
    with pytest.raises(DataError, match="height, width"):
        read_mask(path, size=(0, 5))


# ---------------------------------------------------------------------------------------------------------------------
# Folder


def test_folder_round_trip(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", 3)
    data = read_mask_folder(root)
    assert isinstance(data, SegSet) and len(data) == 3
    assert data.images.shape == (3, 3, SIDE, SIDE) and data.images.dtype == np.uint8
    assert data.masks.shape == (3, SIDE, SIDE) and data.masks.dtype == np.uint8
    assert data.names == ["case0", "case1", "case2"]
    for i in range(3):
        assert np.array_equal(data.masks[i], discs(i))  # 0/255 -> 0/1, matched through the _mask suffix
        assert np.array_equal(data.images[i], image_of(discs(i), i, rgb=True).transpose(2, 0, 1))
    assert data.num_classes == 2 and data.fov is None and data.split is None and data.meta is None
    assert data.second is None and data.spacing is None
    assert data.source["kind"] == "folder" and data.source["path"] == str(root)

    small = load_segmentation(str(root), image_size=16, channels=1)
    assert small.images.shape == (3, 1, 16, 16) and small.masks.shape == (3, 16, 16)
    assert set(np.unique(small.masks)) <= {0, 1}
    assert np.array_equal(small.images[1], load_image(root / "images" / "case1.png", size=16, channels=1))


def test_folder_with_fov_and_multi_class_masks(tmp_path: Path) -> None:
    data = read_mask_folder(make_folder(tmp_path / "data", 2, suffix="", classes=3, fov=True))
    assert data.num_classes == 4 and set(np.unique(data.masks)) == {0, 1, 2, 3}
    assert data.fov is not None and data.fov.dtype == bool and data.fov.shape == (2, SIDE, SIDE)
    assert data.fov[:, 2:-2, 2:-2].all() and not data.fov[:, 0].any()

    three = make_folder(tmp_path / "three", 2, suffix="_manual1", classes=1)
    label = np.zeros((SIDE, SIDE), np.uint8)
    label[:5], label[-5:] = 1, 2
    save(three / "masks" / "case1_manual1.png", label)
    data = read_mask_folder(three)
    assert data.num_classes == 3 and set(np.unique(data.masks)) == {0, 1, 2}


def test_unmatched_files_are_listed(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", 2)
    save(root / "images" / "lonely.png", np.zeros((SIDE, SIDE), np.uint8))
    for i in range(12):
        save(root / "masks" / f"stray{i:02d}_mask.png", np.zeros((SIDE, SIDE), np.uint8))
    with pytest.raises(DataError) as info:
        read_mask_folder(root)
    message = str(info.value)
    assert "1 images without a mask" in message and "lonely.png" in message
    assert "12 masks without an image" in message and "stray09_mask.png" in message and "2 more" in message
    assert "stray10_mask.png" not in message

    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images"):
        read_mask_folder(empty)


def test_native_sizes_that_differ_are_refused_with_the_hint(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", 2)
    save(root / "images" / "case1.png", image_of(discs(1, side=40), 1))
    save(root / "masks" / "case1_mask.png", discs(1, side=40) * 255)
    with pytest.raises(DataError, match=r"case1\.png is 40 wide x 40 high but .*case0\.png .*--image-size N"):
        read_mask_folder(root)
    data = read_mask_folder(root, image_size=24)  # resizing brings them together; grayscale joins RGB
    assert data.images.shape == (2, 3, 24, 24) and data.masks.shape == (2, 24, 24)
    assert np.array_equal(data.images[1], load_image(root / "images" / "case1.png", size=24, channels=3))

    save(root / "masks" / "case1_mask.png", discs(1, side=SIDE) * 255)
    with pytest.raises(DataError, match=r"mask .*case1_mask\.png is 32 wide x 32 high but its image .*case1\.png"):
        read_mask_folder(root, image_size=24)


def test_dicom_image_gives_its_pixel_spacing(tmp_path: Path) -> None:
    label = discs(3)
    root = tmp_path / "data"
    save_dicom(root / "images" / "scan.dcm", image_of(label, 3), PixelSpacing=[0.5, 0.25])
    save(root / "masks" / "scan.png", label * 255)
    assert pixel_spacing(root / "images" / "scan.dcm") == (0.5, 0.25)
    assert pixel_spacing(root / "masks" / "scan.png") is None
    assert read_pixels(root / "images" / "scan.dcm").shape == (SIDE, SIDE)

    data = read_mask_folder(root)
    assert data.images.shape == (1, 1, SIDE, SIDE) and data.spacing == [(0.5, 0.25)]
    assert np.array_equal(data.masks[0], label)
    data = read_mask_folder(root, image_size=16)  # half as many pixels: twice the spacing
    assert data.spacing == [(1.0, 0.5)]

    assert np.array_equal(read_mask(save_dicom(tmp_path / "mask.dcm", label * 255)), label)  # stored values, no window
    save_dicom(tmp_path / "odd.dcm", image_of(label, 3), PixelSpacing=[0.5])
    with pytest.raises(DataError, match=r"odd\.dcm has PixelSpacing"):
        pixel_spacing(tmp_path / "odd.dcm")


# ---------------------------------------------------------------------------------------------------------------------
# CSV


def test_csv_with_split_and_metadata(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", 3, fov=True)
    rows = {
        "path": [f"images/case{i}.png" for i in range(3)],
        "mask": [f"masks/case{i}_mask.png" for i in range(3)],
        "split": ["train", "VAL", "test"],
        "site": ["A", "B", "A"],
        "field": ["fov/case0_mask.png", "", "fov/case2_mask.png"],
    }
    pd.DataFrame(rows).to_csv(root / "list.csv", index=False)
    data = read_mask_csv(root / "list.csv", fov_column="field")
    assert data.split == ["train", "val", "test"] and data.names == ["case0", "case1", "case2"]
    assert list(data.meta.columns) == ["site"] and data.meta["site"].tolist() == ["A", "B", "A"]
    assert isinstance(data.meta.index, pd.RangeIndex)
    assert data.fov is not None and data.fov[1].all() and not data.fov[0].all()  # empty cell: the whole image
    assert data.source["kind"] == "csv"

    pd.DataFrame({k: rows[k] for k in ("path", "mask")}).to_csv(root / "nosplit.csv", index=False)
    plain = load_segmentation(str(root / "nosplit.csv"))
    assert plain.split is None and plain.meta is not None and plain.meta.shape == (3, 0)

    bad = dict(rows, split=["train", "training", "test"])
    pd.DataFrame(bad).to_csv(root / "bad.csv", index=False)
    with pytest.raises(DataError, match=r"bad\.csv row 3: split 'training'"):
        read_mask_csv(root / "bad.csv")
    with pytest.raises(DataError, match=r"no mask column 'label'; columns present: 'path', 'mask', 'split', 'site'"):
        read_mask_csv(root / "list.csv", mask_column="label")


def test_load_segmentation_refuses_an_unknown_source(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="give 'drive'"):
        load_segmentation(str(tmp_path / "nothing.txt"))
    with pytest.raises(DataError, match="DRIVE folder .*README"):
        load_segmentation("drive", data_dir=str(tmp_path))


# ---------------------------------------------------------------------------------------------------------------------
# Splitting and subsets


def test_split_by_size_is_seeded_and_stratified() -> None:
    rng = np.random.default_rng(0)
    masks = np.zeros((30, 20, 20), np.uint8)
    for i, area in enumerate(rng.permutation(np.arange(1, 31) * 12)):
        masks[i].reshape(-1)[:area] = 1
    share = (masks != 0).reshape(30, -1).mean(axis=1)
    split = split_by_size(masks, val=0.1, test=0.2, seed=3)
    assert np.array_equal(split, split_by_size(masks, val=0.1, test=0.2, seed=3))
    assert not np.array_equal(split, split_by_size(masks, val=0.1, test=0.2, seed=4))
    assert [(split == s).sum() for s in ("train", "val", "test")] == [21, 3, 6]
    small, large = share < np.quantile(share, 1 / 3), share > np.quantile(share, 2 / 3)
    for s in ("train", "val", "test"):
        assert (small & (split == s)).any() and (large & (split == s)).any(), s
    assert set(split_by_size(masks, val=0.0, test=0.2, seed=0)) == {"train", "test"}
    for val, test in ((-0.1, 0.2), (1.0, 0.0), (0.5, 0.5), (0.6, 0.6)):
        with pytest.raises(DataError, match="fraction"):
            split_by_size(masks, val=val, test=test, seed=0)
    with pytest.raises(DataError, match="too few"):
        split_by_size(masks[:2], val=0.3, test=0.3, seed=0)


def test_subset_indexes_every_per_image_field(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", 3, fov=True)
    data = read_mask_folder(root)
    data.split = ["train", "val", "test"]
    data.meta = pd.DataFrame({"site": ["A", "B", "C"]})
    data.second = np.full_like(data.masks, 255)
    data.second[2] = data.masks[2]
    data.spacing = [None, (1.0, 1.0), None]
    part = data.subset([2, 0])
    assert len(part) == 2 and part.names == ["case2", "case0"] and part.split == ["test", "train"]
    assert np.array_equal(part.images, data.images[[2, 0]]) and np.array_equal(part.masks, data.masks[[2, 0]])
    assert np.array_equal(part.fov, data.fov[[2, 0]]) and np.array_equal(part.second[0], data.masks[2])
    assert part.meta["site"].tolist() == ["C", "A"] and isinstance(part.meta.index, pd.RangeIndex)
    assert part.spacing is None  # neither image has one
    only = data.subset(np.array([False, True, False]))
    assert only.names == ["case1"] and only.second is None and only.spacing == [(1.0, 1.0)]


# ---------------------------------------------------------------------------------------------------------------------
# The real DRIVE


@pytest.mark.realdata
def test_real_drive(real_data_dir: Path) -> None:
    if not (real_data_dir / "drive").is_dir():
        pytest.skip(f"{real_data_dir / 'drive'} is absent; put DRIVE there to run this test")
    data = load_segmentation("drive", data_dir=str(real_data_dir))
    assert len(data) == 40 and data.split.count("train") == 20 and data.split.count("test") == 20
    assert data.images.shape == (40, 3, 584, 565) and data.images.dtype == np.uint8
    assert data.masks.shape == (40, 584, 565) and set(np.unique(data.masks)) == {0, 1}
    assert data.fov is not None and data.fov.shape == (40, 584, 565) and data.num_classes == 2
    train = np.array(data.split) == "train"
    assert data.second is not None and (data.second[train] == 255).all()
    assert set(np.unique(data.second[~train])) == {0, 1}
    share = data.masks[data.fov].mean()
    assert 0.08 < share < 0.16
    # The second grader agrees with the first on about 94.7% of field-of-view pixels (Staal et al. 2004).
    agree = (data.second[~train] == data.masks[~train])[data.fov[~train]].mean()
    assert 0.93 < agree < 0.96


def test_jpeg_masks_read_with_a_threshold_and_the_decided_pixels_counted(tmp_path: Path) -> None:
    """A public set's lossy (JPEG) masks: refused as class indices with the option named, read at --mask-threshold
    as binary masks close to the lossless ones, and the pixels the threshold decided counted."""
    root = tmp_path / "lossy"
    for i in range(3):
        save(root / "images" / f"case{i}.png", image_of(discs(i), i, rgb=True))
        save(root / "masks" / f"case{i}_mask.jpg", discs(i) * 255, quality=60)
    with pytest.raises(DataError, match="--mask-threshold T"):
        read_mask_folder(root)
    data = load_segmentation(str(root), mask_threshold=128)
    assert set(np.unique(data.masks)) == {0, 1} and data.num_classes == 2
    agree = np.mean([np.mean(data.masks[i] == discs(i)) for i in range(3)])
    assert agree > 0.98  # JPEG moved only pixels at the edges
    assert data.source["mask_threshold"] == 128 and data.source["thresholded_pixels"] > 0
