"""The baselines the toolkit grew from: an MLP, a plain CNN with a flatten head, a CNN with BatchNorm and GAP."""

from __future__ import annotations

import math

import torch
from torch import nn

from medassist.models.registry import register_model

WORKING_SIZE = 32
"""Past this side, a model's stem halves the image until it is at most this size, so that a larger input costs
about as much as a 28-pixel one after the stem and no full-resolution feature map travels through the network."""


def halvings(image_size: int) -> int:
    """How many times the stem halves an ``image_size`` input to bring it to at most :data:`WORKING_SIZE`."""
    return max(0, math.ceil(math.log2(image_size / WORKING_SIZE))) if image_size > WORKING_SIZE else 0


def downsampling_stem(in_channels: int, width: int, image_size: int) -> tuple[list[nn.Module], int]:
    """Stride-2 conv-BN-ReLU layers (none up to 32 px) and the channels they leave.

    (B, C, H, W) -> (B, width, H/2^k, W/2^k), k = :func:`halvings`.
    """
    layers: list[nn.Module] = []
    for _ in range(halvings(image_size)):
        layers += [nn.Conv2d(in_channels, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        in_channels = width
    return layers, in_channels


class MLP(nn.Module):
    """A fully connected network on the flattened image (the "ANN" baseline)."""

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int = 1,
        image_size: int = 28,
        hidden: tuple[int, ...] = (512, 256),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        side = math.ceil(image_size / 2 ** halvings(image_size))
        # A larger image is average-pooled to at most 32 px first: (B, C, H, W) -> (B, C, side, side).
        layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(side)] if side != image_size else []
        layers.append(nn.Flatten())
        width = in_channels * side * side
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, K)
        return self.net(x)


class PlainCNN(nn.Module):
    """Two conv-ReLU-maxpool stages and a flatten + fully connected head."""

    def __init__(
        self, *, num_classes: int, in_channels: int = 1, image_size: int = 28, width: int = 32, dropout: float = 0.0
    ) -> None:
        super().__init__()
        stem, cin = downsampling_stem(in_channels, width, image_size)
        self.features = nn.Sequential(
            *stem,
            nn.Conv2d(cin, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side = math.ceil(image_size / 2 ** halvings(image_size)) // 4
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width * side * side, 128),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, 2w, H/4, W/4) -> (B, K)


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class GAPCNN(nn.Module):
    """Three stages of two conv-BN-ReLU layers, global average pooling, and a linear classifier."""

    def __init__(
        self, *, num_classes: int, in_channels: int = 1, width: int = 32, dropout: float = 0.0, image_size: int = 28
    ) -> None:
        super().__init__()
        w = (width, 2 * width, 4 * width)
        stem, cin = downsampling_stem(in_channels, w[0], image_size)
        self.features = nn.Sequential(
            *stem,  # (B, w, H/2^k, W/2^k) past 32 px; nothing at 28
            *_conv_bn(cin, w[0]),
            *_conv_bn(w[0], w[0]),
            nn.MaxPool2d(2),  # (B, w, H/2, W/2)
            *_conv_bn(w[0], w[1]),
            *_conv_bn(w[1], w[1]),
            nn.MaxPool2d(2),  # (B, 2w, H/4, W/4)
            *_conv_bn(w[1], w[2]),
            *_conv_bn(w[2], w[2]),  # (B, 4w, H/4, W/4)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(w[2], num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


@register_model("mlp")
def mlp(*, num_classes: int, in_channels: int = 1, dropout: float = 0.0, image_size: int = 28) -> nn.Module:
    """MLP with hidden layers 512 and 256."""
    return MLP(num_classes=num_classes, in_channels=in_channels, image_size=image_size, dropout=dropout)


@register_model("cnn")
def cnn(*, num_classes: int, in_channels: int = 1, dropout: float = 0.0, image_size: int = 28) -> nn.Module:
    """Plain CNN (32-64 channels) with a flatten head."""
    return PlainCNN(num_classes=num_classes, in_channels=in_channels, image_size=image_size, dropout=dropout)


@register_model("cnn_gap")
def cnn_gap(
    *, num_classes: int, in_channels: int = 1, dropout: float = 0.0, width: int = 32, image_size: int = 28
) -> nn.Module:
    """CNN with BatchNorm and global average pooling (any input size)."""
    return GAPCNN(num_classes=num_classes, in_channels=in_channels, width=width, dropout=dropout, image_size=image_size)
