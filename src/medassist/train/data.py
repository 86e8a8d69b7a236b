"""What the engine trains on: in-memory batchers with seeded mini-batches (no DataLoader overhead).

- :class:`ImageBatcher`: uint8 images (in memory or on disk), normalised batch by batch.
- :class:`TokenBatcher`: ragged token ids; batches are bucketed by length and padded per batch (dynamic
  padding), so a batch of short reports does not pay for the longest one.

Both give ``order(batch_size, generator)`` (index batches; shuffled when a generator is given) and
``inputs(idx)`` (the model's positional arguments for those samples).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np
import torch

from medassist.errors import DataError

MEAN, STD = 0.5, 0.5  # the MedMNIST protocol: pixels/255 normalised to [-1, 1]
TASKS = ("multi-class", "multi-label")


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


class Batcher(Protocol):
    """The engine's view of a data split."""

    def __len__(self) -> int: ...

    def order(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[torch.Tensor]: ...

    def inputs(self, idx: torch.Tensor) -> tuple[torch.Tensor, ...]: ...

    def subset(self, idx: np.ndarray) -> Batcher: ...


class ImageBatcher:
    """Images for image models: uint8 N x C x H x W (an array, or :class:`~medassist.data.disk_images.DiskImages`
    that stay on disk), normalised batch by batch; or an already normalised float tensor.

    ``prefetch`` is true for images on disk: the engine then reads the next batch in the background while the
    current one trains.
    """

    augmentable = True

    def __init__(self, images: Any) -> None:
        if not isinstance(images, torch.Tensor) and len(images.shape) != 4:
            raise DataError(f"images have shape {images.shape}; expected (N, channels, height, width)")
        self.x = images
        self.prefetch = not isinstance(images, (np.ndarray, torch.Tensor))

    def __len__(self) -> int:
        return len(self.x)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape)

    def order(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
        return batches(len(self.x), batch_size, generator=generator)

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        """The normalised float images (B, C, H, W) of ``idx``, in its order."""
        if isinstance(self.x, torch.Tensor):
            return self.x[idx]
        rows = idx.numpy() if isinstance(idx, torch.Tensor) else np.asarray(idx)
        pixels = self.x.read(rows) if hasattr(self.x, "read") else self.x[rows]
        return to_tensor(pixels)

    def inputs(self, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (self.batch(idx),)

    def subset(self, idx: np.ndarray) -> ImageBatcher:
        if isinstance(self.x, torch.Tensor):
            return ImageBatcher(self.x[torch.as_tensor(idx)])
        return ImageBatcher(self.x[np.asarray(idx)])


class TokenBatcher:
    """Token id sequences for text models: ``model(input_ids (B, T), attention_mask (B, T))``, padded with 0.

    Training batches are drawn from length buckets: the shuffled samples are cut into pools of ``pool`` batches,
    each pool is sorted by length and cut into batches, and the batches are shuffled.
    """

    augmentable = False
    EVAL_BATCH = 64

    def __init__(self, ids: Sequence[Sequence[int]], *, pad_id: int = 0, pool: int = 50) -> None:
        if any(len(s) == 0 for s in ids):
            first = next(i for i, s in enumerate(ids) if len(s) == 0)
            raise DataError(f"sequence {first} has no tokens; drop or fill empty texts before training")
        self.ids = [torch.as_tensor(s, dtype=torch.long) for s in ids]
        self.lengths = torch.tensor([len(s) for s in ids])
        self.pad_id, self.pool = pad_id, pool

    def __len__(self) -> int:
        return len(self.ids)

    def order(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
        n = len(self.ids)
        if generator is None:  # evaluation: sorted by length, the fewest padded tokens
            batch_size = min(batch_size, self.EVAL_BATCH)  # large batches would pad many reports to the longest
            idx = torch.argsort(self.lengths, stable=True)
            yield from (idx[i : i + batch_size] for i in range(0, n, batch_size))
            return
        perm = torch.randperm(n, generator=generator)
        out: list[torch.Tensor] = []
        step = batch_size * self.pool
        for start in range(0, n, step):
            chunk = perm[start : start + step]
            chunk = chunk[torch.argsort(self.lengths[chunk], stable=True)]
            out += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        for j in torch.randperm(len(out), generator=generator).tolist():
            if len(out[j]) >= 2:
                yield out[j]

    def subset(self, idx: np.ndarray) -> TokenBatcher:
        return TokenBatcher([self.ids[i].tolist() for i in idx], pad_id=self.pad_id, pool=self.pool)

    def inputs(self, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        seqs = [self.ids[i] for i in idx.tolist()]
        ids = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=self.pad_id)  # (B, T)
        mask = torch.arange(ids.shape[1])[None, :] < self.lengths[idx][:, None]  # (B, T) True for real tokens
        return ids, mask


def with_inputs(
    batcher: Batcher, order: Iterable[torch.Tensor], *, pin: bool = False
) -> Iterator[tuple[torch.Tensor, tuple[torch.Tensor, ...]]]:
    """``(idx, batcher.inputs(idx))`` for each index batch of ``order``.

    For a batcher whose ``prefetch`` is true (images on disk) the next batch is read by a background thread while
    the caller works on the current one, and ``pin`` puts it in pinned memory there (for a CUDA copy that does not
    block). The order, and so every random draw, is the same either way.
    """
    if not getattr(batcher, "prefetch", False):
        for idx in order:
            yield idx, batcher.inputs(idx)
        return

    def read(idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        inputs = batcher.inputs(idx)
        return tuple(x.pin_memory() for x in inputs) if pin else inputs

    indices = iter(order)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="medassist-prefetch") as pool:
        upcoming = next(indices, None)
        pending = pool.submit(read, upcoming) if upcoming is not None else None
        while pending is not None:
            idx, inputs = upcoming, pending.result()
            upcoming = next(indices, None)
            pending = pool.submit(read, upcoming) if upcoming is not None else None
            yield idx, inputs


def as_batcher(data: Any) -> Batcher:
    """Images (an array, a tensor, images on disk) become an :class:`ImageBatcher`; a batcher is returned as it is."""
    return data if hasattr(data, "order") else ImageBatcher(data)


def main_logits(out: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The primary logits of a model output (a multi-task model returns a tuple, its main head first)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter (or buffer); the CPU for a model with neither."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def probabilities(logits: torch.Tensor, task: str) -> torch.Tensor:
    """Softmax over classes (multi-class) or a sigmoid per label (multi-label), in float64."""
    logits = logits.double()
    return torch.sigmoid(logits) if task == "multi-label" else torch.softmax(logits, dim=1)


PREDICT_PIXELS = 512 * 32 * 32
"""Image pixels (per channel) that one prediction batch holds: 512 images of 32x32."""


def predict_batch_size(model: torch.nn.Module, batcher: Batcher) -> int:
    """Images per prediction batch: :data:`PREDICT_PIXELS` over the pixels the model works at (its own
    ``input_size`` when it resizes its input, else the images'), between 8 and 512; 512 for token batchers."""
    if not isinstance(batcher, ImageBatcher):
        return 512
    side = max(batcher.shape[-1], int(getattr(model, "input_size", 0) or 0))
    return int(min(512, max(8, PREDICT_PIXELS // (side * side))))


@torch.no_grad()
def predict_proba(
    model: torch.nn.Module,
    data: np.ndarray | torch.Tensor | Batcher,
    *,
    task: str = "multi-class",
    batch_size: int = 0,
) -> np.ndarray:
    """Probabilities (N, K) of ``model`` on images (uint8 array or normalised tensor) or a batcher, in input order.

    ``batch_size`` 0 sizes the batch to the images: 512 at 28-32 px, fewer as the pixels the model works at grow
    (an EfficientNet that upsamples to 224 px predicts 8 at a time), so that prediction never needs more memory
    than training. The batches go to the model's device and run under the current accelerator's autocast
    (:mod:`medassist.train.device`); the probabilities come back to the CPU.
    """
    from medassist.train.device import current

    accel = current()
    batcher = as_batcher(data)
    batch_size = batch_size or predict_batch_size(model, batcher)
    was_training = model.training
    model.eval()
    parts, order = [], []
    device = model_device(model)
    if device != accel.device:  # a model kept elsewhere (a CPU teacher in a GPU run) predicts where it is
        accel = type(accel)(device, accel.precision if device.type == accel.device.type else "32")
    for idx, host in with_inputs(batcher, batcher.order(batch_size), pin=accel.is_cuda):
        inputs = tuple(accel.put(x) for x in host)
        with accel.autocast():
            logits = main_logits(model(*inputs))
        parts.append(probabilities(logits.float(), task).cpu())
        order.append(idx)
    model.train(was_training)
    if not parts:
        return np.zeros((0, 0), dtype=np.float64)
    probs = torch.empty((len(batcher), parts[0].shape[1]), dtype=torch.float64)
    probs[torch.cat(order)] = torch.cat(parts)
    return probs.numpy()
