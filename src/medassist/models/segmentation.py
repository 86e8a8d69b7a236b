"""Segmentation networks from MONAI, by name in the one registry: each maps (B, C, H, W) images to (B, K, H, W)
logits, K = classes including background (2 for a binary mask).

- ``unet``: MONAI's ``UNet`` with residual units, four downsamplings, channels ``width * (1, 2, 4, 8, 16)``
  (``width`` 16 by default; the study's second capacity is ``width`` 32, four times the parameters), batch norm and
  leaky ReLU (slope 0.1). MONAI's default PReLU stays in float when ONNX Runtime quantizes the network (measured on
  a whole DRIVE image: int8 1.2x faster than fp32 with PReLU, 1.4x with leaky ReLU); plain ReLU quantizes as well
  but left the quick profile's short training stuck at predicting background (test Dice 0.015, against 0.74 with
  leaky ReLU).
- ``attention_unet``: MONAI's ``AttentionUnet`` (attention gates on the skip connections), same channels.
- ``segresnet``: MONAI's ``SegResNet`` (residual encoder, light decoder), ``init_filters`` = ``width``.

Height and width must be multiples of 16 (:data:`MULTIPLE`); :func:`pad_to_multiple` pads an image and
:func:`unpad` crops the logits back. MONAI is imported when a network is built.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from medassist.models.registry import register_model

MULTIPLE = 16  # four halvings
SEGMENTATION_MODELS = ("unet", "attention_unet", "segresnet")


def _channels(width: int) -> tuple[int, ...]:
    return tuple(width * m for m in (1, 2, 4, 8, 16))


@register_model("unet")
def unet(*, num_classes: int, in_channels: int = 3, dropout: float = 0.0, width: int = 16) -> nn.Module:
    """MONAI UNet (2D, residual units, instance norm), channels ``width`` x (1, 2, 4, 8, 16)."""
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=num_classes,
        channels=_channels(width),
        strides=(2, 2, 2, 2),
        num_res_units=2,
        dropout=dropout,
        norm="batch",
        act=("LEAKYRELU", {"negative_slope": 0.1}),
    )


@register_model("attention_unet")
def attention_unet(*, num_classes: int, in_channels: int = 3, dropout: float = 0.0, width: int = 16) -> nn.Module:
    """MONAI AttentionUnet (2D), channels ``width`` x (1, 2, 4, 8, 16)."""
    from monai.networks.nets import AttentionUnet

    return AttentionUnet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=num_classes,
        channels=_channels(width),
        strides=(2, 2, 2, 2),
        dropout=dropout,
    )


@register_model("segresnet")
def segresnet(*, num_classes: int, in_channels: int = 3, dropout: float = 0.0, width: int = 16) -> nn.Module:
    """MONAI SegResNet (2D), ``init_filters`` = ``width``."""
    from monai.networks.nets import SegResNet

    return SegResNet(
        spatial_dims=2,
        init_filters=width,
        in_channels=in_channels,
        out_channels=num_classes,
        dropout_prob=dropout or None,
        blocks_down=(1, 2, 2, 2, 4),
        blocks_up=(1, 1, 1, 1),
    )


def pad_to_multiple(x: torch.Tensor, multiple: int = MULTIPLE) -> tuple[torch.Tensor, tuple[int, int]]:
    """``x`` (B, C, H, W) padded at the bottom and right (reflection) to multiples of ``multiple``, and (H, W)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect")
    return x, (h, w)


def unpad(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return logits[..., : size[0], : size[1]]
