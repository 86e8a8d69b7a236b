"""What the folder and CSV readers share: loading many files into one array, a stratified seeded split, and the
:class:`~medassist.data.types.ImageData` they return."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from medassist.data.disk_images import DiskImages
from medassist.data.image_cache import check_bad_files, decode_images
from medassist.data.types import SPLITS, ImageData, Split, validate_image_data
from medassist.errors import DataError


@dataclass
class ImageFiles:
    """Options for reading a folder's or a CSV's image files (see :mod:`medassist.data.image_cache`).

    Attributes:
        cache: decode once into the per-user cache and read batches from it; False decodes into memory each run.
        workers: decoding processes (0: every core).
        skip_bad_files: leave out files that cannot be read (counted in the data set's info) instead of refusing.
    """

    cache: bool = True
    workers: int = 0
    skip_bad_files: bool = False


def load_many(
    paths: Sequence[Path],
    split_index: dict[str, np.ndarray],
    *,
    size: int,
    channels: int | None,
    progress: bool,
    name: str,
    source: str,
    files: ImageFiles | None = None,
    where: Sequence[str] | None = None,
) -> tuple[np.ndarray | DiskImages, dict[str, np.ndarray], dict]:
    """Decode ``paths`` to uint8 (N, C, size, size) rows (a :class:`DiskImages` when cached) and drop bad files.

    Returns the images, ``split_index`` without the skipped files, and what the data set's info records about the
    decode. ``where`` adds e.g. the CSV row to a bad file's reason.

    Raises:
        DataError: bad files while ``files.skip_bad_files`` is false (every one listed). A set mixing grayscale and
            colour files is converted to the channels most files have (``info["mixed_channels"]``) unless
            ``channels`` is given.
    """
    files = files or ImageFiles()
    decoded = decode_images(
        paths,
        size=size,
        channels=channels,
        name=name,
        source=source,
        cache=files.cache,
        workers=files.workers,
        progress=progress,
        where=where,
    )
    keep = check_bad_files(decoded.bad, len(paths), skip=files.skip_bad_files)
    if progress:
        how = "opened from the cache" if decoded.from_cache else f"decoded by {decoded.workers} process(es)"
        tqdm.write(f"{name}: {len(paths)} images {how} in {decoded.seconds:.1f} s", file=sys.stderr)
    info: dict = {}
    if decoded.mixed_channels:
        info["mixed_channels"] = {
            "grayscale": decoded.mixed_channels.get(1, 0),
            "colour": decoded.mixed_channels.get(3, 0),
            "converted_to": int(decoded.images.shape[1]),
        }
    if decoded.bad:
        info["skipped_bad_files"] = len(decoded.bad)
        split_index = {s: idx[np.isin(idx, keep)] for s, idx in split_index.items()}
        check_nonempty_splits(name, split_index, "too many of its files were unreadable and skipped; fix them.")
    return decoded.images, split_index, info


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
    images: np.ndarray | DiskImages,
    labels: np.ndarray,
    metadata: pd.DataFrame,
    split_index: dict[str, np.ndarray],
    info: dict,
) -> ImageData:
    """The multi-class data set whose splits take the rows ``split_index`` names, checked for a study."""
    splits = {
        key: Split(
            images=images[idx] if isinstance(images, DiskImages) else np.ascontiguousarray(images[idx]),
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
