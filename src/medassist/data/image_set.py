"""What the folder and CSV readers share: loading many files into one array, a stratified seeded split, and the
:class:`~medassist.data.types.ImageData` they return."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from medassist.data.image_file import load_image
from medassist.data.types import SPLITS, ImageData, Split, validate_image_data
from medassist.errors import DataError


def load_many(
    paths: Sequence[Path],
    *,
    size: int,
    channels: int | None,
    progress: bool,
    desc: str,
    where: Sequence[str] | None = None,
) -> np.ndarray:
    """Load ``paths`` into one uint8 (N, C, size, size) array; ``where`` adds e.g. the CSV row to errors."""
    images: np.ndarray | None = None
    first_with: dict[int, Path] = {}
    for i, path in enumerate(tqdm(paths, desc=desc, unit="img", disable=not progress)):
        try:
            image = load_image(path, size=size, channels=channels)
        except DataError as e:
            if where is None:
                raise
            raise DataError(f"{e} ({where[i]})") from e
        n_channels = image.shape[0]
        if n_channels not in first_with:
            first_with[n_channels] = path
        if images is None:
            images = np.empty((len(paths), *image.shape), dtype=np.uint8)
        elif n_channels != images.shape[1]:
            first = first_with[images.shape[1]]
            raise DataError(
                f"images have different channel counts: {first} has {images.shape[1]} and {path} has {n_channels}; "
                "pass channels=1 (grayscale) or channels=3 (RGB) to convert every image to one."
            )
        images[i] = image
    assert images is not None  # Callers never pass an empty list.
    return images


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for label, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise DataError(f"{label} must be at least 0 and below 1, got {value!r}.")
    if val_fraction + test_fraction >= 1.0:
        raise DataError(
            f"val_fraction ({val_fraction}) + test_fraction ({test_fraction}) must be below 1 to leave training images."
        )


def random_split(
    labels: np.ndarray, *, val_fraction: float, test_fraction: float, seed: int, source: str
) -> dict[str, np.ndarray]:
    """Stratified, seeded indices for train/val/test; a zero fraction gives an empty split."""
    # Imported here: scikit-learn is slow to import and only needed when no split is given.
    from sklearn.model_selection import train_test_split

    _check_fractions(val_fraction, test_fraction)
    index = np.arange(labels.shape[0])
    empty = np.array([], dtype=np.int64)
    try:
        if test_fraction > 0:
            rest, test = train_test_split(index, test_size=test_fraction, random_state=seed, stratify=labels)
        else:
            rest, test = index, empty
        if val_fraction > 0:
            # The val share of what is left, so val_fraction stays a fraction of all images.
            share = val_fraction / (1.0 - test_fraction)
            train, val = train_test_split(rest, test_size=share, random_state=seed, stratify=labels[rest])
        else:
            train, val = rest, empty
    except ValueError as e:
        counts = ", ".join(str(c) for c in np.bincount(labels))
        raise DataError(
            f"{source}: cannot split {labels.shape[0]} images (per class: {counts}) into train/val/test with "
            f"val_fraction={val_fraction} and test_fraction={test_fraction} while keeping every class in each "
            f"split ({e}). Add images to the small classes, change the fractions, or give the splits yourself."
        ) from e
    # Sorted so each split keeps the files' order, which makes metadata easy to follow.
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def build_image_data(
    *,
    name: str,
    class_names: list[str],
    images: np.ndarray,
    labels: np.ndarray,
    metadata: pd.DataFrame,
    split_index: dict[str, np.ndarray],
    info: dict,
) -> ImageData:
    """The multi-class data set whose splits take the rows ``split_index`` names, checked for a study."""
    splits = {
        key: Split(
            images=np.ascontiguousarray(images[idx]),
            labels=labels[idx].astype(np.int64),
            metadata=metadata.iloc[idx].reset_index(drop=True),
        )
        for key, idx in split_index.items()
    }
    data = ImageData(name=name, class_names=class_names, splits=splits, task="multi-class", info=info)
    return validate_image_data(data)


def check_nonempty_splits(name: str, split_index: dict[str, np.ndarray], hint: str) -> None:
    """Name an empty split before loading any image, so the user does not wait for a certain failure.

    ``hint`` may contain ``{split}``, replaced by the split's name.
    """
    for key in SPLITS:
        if split_index[key].size == 0:
            raise DataError(f"{name}: the '{key}' split has no samples; {hint.replace('{split}', key)}")
