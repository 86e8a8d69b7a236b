"""Images in memory as normalised tensors, and seeded mini-batches over them (no DataLoader overhead)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from medassist.errors import DataError

MEAN, STD = 0.5, 0.5  # the MedMNIST protocol: pixels/255 normalised to [-1, 1]


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, C, H, W) in 0-255 -> float32 (N, C, H, W) in [-1, 1]."""
    if images.ndim != 4:
        raise DataError(f"images have shape {images.shape}; expected (N, channels, height, width)")
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    return x.sub_(MEAN).div_(STD)


def batches(
    n: int, batch_size: int, *, generator: torch.Generator | None = None, drop_singleton: bool = True
) -> Iterator[torch.Tensor]:
    """Index batches over ``n`` samples, shuffled when a generator is given.

    A final batch of one sample is dropped in training, since BatchNorm cannot normalise a single image.
    """
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        if drop_singleton and generator is not None and len(idx) < 2:
            continue
        yield idx


@torch.no_grad()
def predict_proba(model: torch.nn.Module, images: np.ndarray | torch.Tensor, *, batch_size: int = 512) -> np.ndarray:
    """Class probabilities (N, K) of ``model`` on uint8 images (or an already normalised tensor)."""
    x = images if isinstance(images, torch.Tensor) else to_tensor(images)
    was_training = model.training
    model.eval()
    out = [torch.softmax(model(x[idx]).double(), dim=1) for idx in batches(len(x), batch_size)]
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)
