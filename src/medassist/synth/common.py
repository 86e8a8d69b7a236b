"""What every generator shares: the size check, pixel conversion and the synthetic-data marking."""

from __future__ import annotations

import numpy as np
import torch

from medassist.errors import DataError

SYNTHETIC_SUFFIX = "_synthetic"
PROVENANCE = "SYNTHETIC.md"


def check_image_size(size: int, *, what: str = "the generators") -> None:
    """Refuse an image side the networks cannot take: they halve it twice, so it must be a multiple of 4, >= 8."""
    if size < 8 or size % 4:
        raise DataError(
            f"image size {size} cannot be taken by {what}: they halve the image twice, so its side must be a "
            f"multiple of 4 and at least 8 (e.g. 28 or 64); set --image-size to one"
        )


def check_classes(labels: np.ndarray, num_classes: int, *, name: str) -> None:
    """A class-conditional generator needs at least two classes, each present in training."""
    present = np.unique(labels.reshape(-1))
    if num_classes < 2 or present.size < 2:
        raise DataError(
            f"{name}: the training split has {present.size} class(es); a class-conditional generator needs at "
            f"least two classes with training images (give a data set with two or more labels)"
        )


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Images in [-1, 1] (N, C, H, W) -> uint8 0-255, the form every reader returns."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def balanced_labels(n: int, num_classes: int, *, proportions: np.ndarray | None = None) -> torch.Tensor:
    """``n`` class labels, in the given proportions (default: the same number per class), in class order."""
    p = np.full(num_classes, 1.0 / num_classes) if proportions is None else np.asarray(proportions, dtype=float)
    counts = np.floor(p / p.sum() * n).astype(int)
    counts[: n - counts.sum()] += 1
    return torch.from_numpy(np.repeat(np.arange(num_classes), counts).astype(np.int64))
