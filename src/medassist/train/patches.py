"""What the engine trains a segmentation network on: random patches of images and their masks, cropped and augmented
together by MONAI dictionary transforms.

:class:`PatchBatcher` is a batcher of the engine (``order`` / ``inputs`` / ``subset``): an "epoch" is
``patches_per_epoch`` patches, drawn from the images in turn; ``inputs(idx)`` returns ``(images, masks)`` for a
segmentation step (:func:`segmentation_step`), which takes the model's logits and the Dice + cross-entropy loss. The
patches come from a generator of the batcher's own (seeded), so a run is reproducible.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from medassist.errors import DataError
from medassist.train.data import batches, to_tensor


def patch_transforms(patch: int, augment: bool) -> Any:
    """MONAI dictionary transforms over ``{"image": (C, H, W), "label": (1, H, W)}``: a random crop of ``patch``
    pixels (inside the image), then, with ``augment``, flips, 90-degree rotations, a small rotation and contrast."""
    from monai import transforms as T  # noqa: N812

    steps = [T.RandSpatialCropd(keys=["image", "label"], roi_size=(patch, patch), random_size=False)]
    if augment:
        steps += [
            T.RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=0),
            T.RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=1),
            T.RandRotate90d(keys=["image", "label"], prob=0.5, max_k=3),
            T.RandRotated(keys=["image", "label"], range_x=0.26, prob=0.3, mode=("bilinear", "nearest")),
            T.RandAdjustContrastd(keys=["image"], prob=0.3, gamma=(0.7, 1.5)),
        ]
    return T.Compose(steps)


class PatchBatcher:
    """Images (uint8 N x C x H x W) and class-index masks (N x H x W) served as random patches."""

    augmentable = False  # it augments image and mask together itself

    def __init__(
        self,
        images: np.ndarray | torch.Tensor,
        masks: np.ndarray | torch.Tensor,
        *,
        patch: int,
        patches_per_epoch: int,
        augment: bool,
        seed: int,
    ) -> None:
        self.x = images if isinstance(images, torch.Tensor) else to_tensor(images)
        self.y = torch.as_tensor(np.asarray(masks), dtype=torch.long)
        if len(self.x) == 0:
            raise DataError("no training images to draw patches from")
        if self.x.shape[-2:] != self.y.shape[-2:] or len(self.x) != len(self.y):
            raise DataError(f"images {tuple(self.x.shape)} and masks {tuple(self.y.shape)} do not match")
        if patch > min(self.x.shape[-2:]):
            raise DataError(f"patch {patch} is larger than the images ({tuple(self.x.shape[-2:])}); give a smaller one")
        self.patch, self.n, self.augment, self.seed = patch, patches_per_epoch, augment, seed
        self.transforms = patch_transforms(patch, augment)
        self.transforms.set_random_state(seed=seed)

    def __len__(self) -> int:
        return self.n

    def order(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
        return batches(self.n, batch_size, generator=generator)

    def inputs(self, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        xs, ys = [], []
        for i in idx.tolist():
            k = i % len(self.x)  # every image in turn, so each gets its share of the patches
            out = self.transforms({"image": self.x[k], "label": self.y[k][None]})
            xs.append(torch.as_tensor(out["image"]))
            ys.append(torch.as_tensor(out["label"])[0].long())
        return torch.stack(xs), torch.stack(ys)

    def subset(self, idx: np.ndarray) -> PatchBatcher:
        return PatchBatcher(
            self.x[torch.as_tensor(idx)],
            self.y[torch.as_tensor(idx)],
            patch=self.patch,
            patches_per_epoch=self.n,
            augment=self.augment,
            seed=self.seed,
        )


class SegmentationStep(nn.Module):
    """The engine's step for segmentation: logits of the image patches, MONAI's Dice + cross-entropy against the
    masks (softmax over the classes, one-hot targets). Returns (loss, None): there is no per-image label."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        from monai.losses import DiceCELoss

        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)
        self.num_classes = num_classes

    def forward(self, model: nn.Module, inputs: tuple[torch.Tensor, ...], _y: torch.Tensor) -> tuple[Any, ...]:
        images, masks = inputs
        logits = model(images)
        return self.loss(logits, masks[:, None]), None
