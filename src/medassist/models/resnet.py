"""ResNet-18 and ResNet-50 (MONAI's networks). At 28-32 px the MedMNIST protocol's stem (3x3, stride 1, no max
pool); at up to 64 px a stride-2 3x3 stem; larger, the ImageNet stem (7x7 stride 2 and a max pool), so that the first
stage never runs at full resolution."""

from __future__ import annotations

from torch import nn

from medassist.models.registry import register_model


def stem(image_size: int) -> dict[str, int | bool]:
    """MONAI ResNet stem settings for an input of ``image_size`` pixels (see the module's docstring)."""
    if image_size <= 32:
        return {"conv1_t_size": 3, "conv1_t_stride": 1, "no_max_pool": True}
    if image_size <= 64:
        return {"conv1_t_size": 3, "conv1_t_stride": 2, "no_max_pool": True}
    return {"conv1_t_size": 7, "conv1_t_stride": 2, "no_max_pool": False}


def _resnet(
    block: str, layers: list[int], *, num_classes: int, in_channels: int, dropout: float, image_size: int
) -> nn.Module:
    from monai.networks.nets import ResNet  # imported when a ResNet is built: MONAI takes seconds to import

    net = ResNet(
        block=block,
        layers=layers,
        block_inplanes=[64, 128, 256, 512],
        spatial_dims=2,
        n_input_channels=in_channels,
        **stem(image_size),
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
    """ResNet-18 (basic blocks 2-2-2-2), its stem fitted to ``image_size``."""
    return _resnet(
        "basic", [2, 2, 2, 2], num_classes=num_classes, in_channels=in_channels, dropout=dropout, image_size=image_size
    )


@register_model("resnet50")
def resnet50(*, num_classes: int, in_channels: int = 1, dropout: float = 0.0, image_size: int = 28) -> nn.Module:
    """ResNet-50 (bottleneck blocks 3-4-6-3), its stem fitted to ``image_size``."""
    return _resnet(
        "bottleneck",
        [3, 4, 6, 3],
        num_classes=num_classes,
        in_channels=in_channels,
        dropout=dropout,
        image_size=image_size,
    )
