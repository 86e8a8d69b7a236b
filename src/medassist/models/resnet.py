"""ResNet-18 and ResNet-50 for 28x28 inputs (MONAI's networks, MedMNIST protocol: 3x3 stem, no early downsampling)."""

from __future__ import annotations

from monai.networks.nets import ResNet
from torch import nn

from medassist.models.registry import register_model


def _resnet(block: str, layers: list[int], *, num_classes: int, in_channels: int, dropout: float) -> nn.Module:
    net = ResNet(
        block=block,
        layers=layers,
        block_inplanes=[64, 128, 256, 512],
        spatial_dims=2,
        n_input_channels=in_channels,
        conv1_t_size=3,
        conv1_t_stride=1,
        no_max_pool=True,
        num_classes=num_classes,
        act=("relu", {"inplace": False}),  # Grad-CAM hooks need out-of-place activations
    )
    for m in net.modules():  # MONAI's blocks build their own in-place ReLUs; Grad-CAM needs out-of-place ones
        if getattr(m, "inplace", False):
            m.inplace = False
    if dropout > 0:
        net.fc = nn.Sequential(nn.Dropout(dropout), net.fc)
    return net


@register_model("resnet18")
def resnet18(*, num_classes: int, in_channels: int = 1, dropout: float = 0.0, image_size: int = 28) -> nn.Module:
    """ResNet-18 (basic blocks 2-2-2-2) adapted to 28x28."""
    return _resnet("basic", [2, 2, 2, 2], num_classes=num_classes, in_channels=in_channels, dropout=dropout)


@register_model("resnet50")
def resnet50(*, num_classes: int, in_channels: int = 1, dropout: float = 0.0, image_size: int = 28) -> nn.Module:
    """ResNet-50 (bottleneck blocks 3-4-6-3) adapted to 28x28."""
    return _resnet("bottleneck", [3, 4, 6, 3], num_classes=num_classes, in_channels=in_channels, dropout=dropout)
