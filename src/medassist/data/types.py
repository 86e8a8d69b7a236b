"""The in-memory form every image reader returns, and the checks every study relies on."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from medassist.errors import DataError

SPLITS = ("train", "val", "test")


@dataclass
class Split:
    """One split of an image data set.

    Attributes:
        images: uint8 array of shape (N, C, H, W), values 0-255.
        labels: int64 array of shape (N,) with class indices (multi-class), or (N, K) of 0/1 (multi-label).
        metadata: optional per-sample table (N rows), e.g. path, sex, age, site.
    """

    images: np.ndarray
    labels: np.ndarray
    metadata: pd.DataFrame | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass
class ImageData:
    """An image classification data set with named splits.

    Attributes:
        name: a short name used in run folders and reports.
        class_names: one name per class index.
        splits: "train", "val" and "test" (each a :class:`Split`).
        task: "multi-class" (binary included) or "multi-label".
    """

    name: str
    class_names: list[str]
    splits: dict[str, Split]
    task: str = "multi-class"
    info: dict = field(default_factory=dict)

    @property
    def n_channels(self) -> int:
        return int(self.splits["train"].images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.splits["train"].images.shape[-1])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def validate_image_data(data: ImageData, *, splits: tuple[str, ...] = SPLITS) -> ImageData:
    """Check that ``data`` can be trained and evaluated on; raise :class:`DataError` naming the problem."""
    channels: dict[str, int] = {}
    for name in splits:
        if name not in data.splits:
            raise DataError(f"{data.name}: the '{name}' split is missing; a study needs {', '.join(splits)}.")
        split = data.splits[name]
        if len(split) == 0:
            raise DataError(f"{data.name}: the '{name}' split has no samples; give it at least one image per class.")
        if split.images.ndim != 4:
            raise DataError(
                f"{data.name}: '{name}' images have shape {split.images.shape}; expected (N, channels, height, width)."
            )
        if split.labels.shape[0] != len(split):
            raise DataError(
                f"{data.name}: '{name}' has {len(split)} images but {split.labels.shape[0]} labels; they must match."
            )
        if np.issubdtype(split.images.dtype, np.floating) and np.isnan(split.images).any():
            raise DataError(f"{data.name}: '{name}' images contain NaN values; fix or drop those images.")
        channels[name] = int(split.images.shape[1])
        if data.task == "multi-class":
            labels = split.labels.reshape(-1)
            bad = labels[(labels < 0) | (labels >= data.num_classes)]
            if bad.size:
                raise DataError(
                    f"{data.name}: '{name}' has label {int(bad[0])}, outside the {data.num_classes} known classes "
                    f"{data.class_names}."
                )
            if name == "train" and np.unique(labels).size < 2:
                only = data.class_names[int(labels[0])]
                raise DataError(
                    f"{data.name}: the 'train' split has only one class ('{only}'); a classifier needs at least two."
                )
    if len(set(channels.values())) > 1:
        detail = ", ".join(f"{k}: {v}" for k, v in channels.items())
        raise DataError(f"{data.name}: splits have different channel counts ({detail}); convert them to one.")
    return data
