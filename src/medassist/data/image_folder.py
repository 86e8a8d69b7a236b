"""Read the user's own images from a folder of class subfolders, with or without train/val/test folders."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from medassist.data.image_file import IMAGE_EXTENSIONS, check_size_channels
from medassist.data.image_set import (
    ImageFiles,
    build_image_data,
    check_nonempty_splits,
    load_many,
    random_split,
)
from medassist.data.types import SPLITS, ImageData
from medassist.errors import DataError

# Folders that tools create next to real data; they are never classes.
_IGNORED_DIRS = ("__MACOSX",)


def _subdirs(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in _IGNORED_DIRS
    )


def _image_files(folder: Path) -> list[Path]:
    """Image files anywhere under ``folder`` (nested folders, e.g. per patient, belong to the same class)."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def read_image_folder(
    root: str | os.PathLike[str],
    *,
    size: int = 28,
    channels: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    name: str | None = None,
    progress: bool = True,
    files: ImageFiles | None = None,
) -> ImageData:
    """Read images from ``root/<class>/...`` or ``root/{train,val,test}/<class>/...``.

    Class names are the sorted class folder names. Files ending in .png, .jpg, .jpeg, .dcm or .dicom (any case) are
    read, also from nested folders; other files are ignored. Without train/val/test folders the images are split at
    random, stratified by class and seeded.

    Args:
        root: the data folder.
        size: output height and width in pixels.
        channels: see :func:`~medassist.data.image_file.load_image`.
        val_fraction: share of all images for "val" when splitting at random.
        test_fraction: share of all images for "test" when splitting at random.
        seed: seed of the random split.
        name: data set name; the folder name by default.
        progress: show a progress bar while reading.
        files: the decode's cache, workers and bad-file rule (:class:`~medassist.data.image_set.ImageFiles`).

    Returns:
        The data set, with a "path" column in each split's metadata.

    Raises:
        DataError: a missing folder, no images, a bad file, mixed channel counts, or splits unfit for a study.
    """
    check_size_channels(size, channels)
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"folder not found: {root}")
    name = name or root.resolve().name
    top = _subdirs(root)
    split_dirs = [p for p in top if p.name in SPLITS]

    if split_dirs:
        others = [p.name for p in top if p.name not in SPLITS]
        if others:
            raise DataError(
                f"{root} has split folders ({', '.join(p.name for p in split_dirs)}) and also {others}; "
                "with given splits every class folder must sit inside train/, val/ and test/."
            )
        missing = [s for s in SPLITS if not (root / s).is_dir()]
        if missing:
            raise DataError(
                f"{root} has no {', '.join(s + '/' for s in missing)} folder; with given splits it needs train/, "
                "val/ and test/, each with one subfolder per class (or use one subfolder per class and no split "
                "folders to split at random)."
            )
        class_names = sorted({d.name for s in SPLITS for d in _subdirs(root / s)})
        if not class_names:
            raise DataError(f"{root}: train/, val/ and test/ have no class subfolders; add one subfolder per class.")
        paths: list[Path] = []
        labels_list: list[int] = []
        split_of: list[str] = []
        for s in SPLITS:
            for d in _subdirs(root / s):
                found = _image_files(d)
                paths += found
                labels_list += [class_names.index(d.name)] * len(found)
                split_of += [s] * len(found)
        split_arr = np.array(split_of, dtype=object)
        split_index = {s: np.flatnonzero(split_arr == s) for s in SPLITS}
        check_nonempty_splits(name, split_index, f"add images under {root}/{{split}}/<class>/.")
        labels = np.array(labels_list, dtype=np.int64)
    else:
        if not top:
            raise DataError(f"{root} has no class subfolders; put the images of each class in its own subfolder.")
        class_names = [d.name for d in top]
        paths, labels_list = [], []
        for i, d in enumerate(top):
            found = _image_files(d)
            if not found:
                raise DataError(
                    f"class folder {d} has no images ({', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder."
                )
            paths += found
            labels_list += [i] * len(found)
        labels = np.array(labels_list, dtype=np.int64)
        split_index = random_split(
            labels, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, source=str(root)
        )
        check_nonempty_splits(name, split_index, "raise val_fraction/test_fraction or add images.")

    images, split_index, decode = load_many(
        paths, split_index, size=size, channels=channels, progress=progress, name=name, source=str(root), files=files
    )
    metadata = pd.DataFrame({"path": [str(p) for p in paths]})
    info = {"source": str(root), "layout": "folder-splits" if split_dirs else "folder", "seed": seed, **decode}
    return build_image_data(
        name=name,
        class_names=class_names,
        images=images,
        labels=labels,
        metadata=metadata,
        split_index=split_index,
        info=info,
    )
