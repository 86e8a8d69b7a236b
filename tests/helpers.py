"""Tiny synthetic data shared by the unit tests."""

from __future__ import annotations

import numpy as np

from medassist.data.types import ImageData, Split


def blobs(n: int, *, size: int = 12, channels: int = 1, seed: int = 0) -> Split:
    """Two classes that a small model separates quickly: class 1 has a bright square in the top-left corner."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.integers(0, 80, (n, channels, size, size)).astype(np.uint8)
    x[y == 1, :, : size // 2, : size // 2] += 150
    return Split(x, y.astype(np.int64))


def tiny_data(*, n: int = 96, size: int = 12, channels: int = 1) -> ImageData:
    return ImageData(
        name="tiny",
        class_names=["negative", "positive"],
        splits={
            "train": blobs(n, size=size, channels=channels, seed=1),
            "val": blobs(n // 2, size=size, channels=channels, seed=2),
            "test": blobs(n // 2, size=size, channels=channels, seed=3),
        },
    )
