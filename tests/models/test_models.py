"""Every registered model: forward shape, backward, every trainable parameter gets a gradient."""

from __future__ import annotations

import pytest
import torch

from medassist.errors import MedAssistError
from medassist.models import count_parameters, create_model, image_models

CASES = [(1, 28, 2), (3, 28, 5)]


@pytest.mark.parametrize("name", image_models())
@pytest.mark.parametrize("in_channels,size,num_classes", CASES)
def test_forward_backward(name: str, in_channels: int, size: int, num_classes: int) -> None:
    torch.manual_seed(0)
    kwargs = {"input_size": 32} if name == "efficientnet_lite0" else {}
    model = create_model(name, num_classes=num_classes, in_channels=in_channels, dropout=0.1, **kwargs)
    x = torch.randn(3, in_channels, size, size)
    out = model(x)
    assert out.shape == (3, num_classes)
    out.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"


@pytest.mark.parametrize("name", image_models())
def test_no_inplace_activations(name: str) -> None:
    """Grad-CAM (captum) breaks on in-place activations, so no registered model may have one."""
    model = create_model(name, num_classes=2, in_channels=1)
    bad = [n for n, m in model.named_modules() if getattr(m, "inplace", False)]
    assert not bad


def test_efficientnet_frozen_trains_only_the_classifier() -> None:
    model = create_model("efficientnet_lite0", num_classes=2, in_channels=1, mode="frozen")
    trainable = count_parameters(model, trainable_only=True)
    assert trainable == 1280 * 2 + 2
    model.train()
    assert not model.net._bn0.training  # frozen BatchNorm statistics stay ImageNet's


def test_efficientnet_pretrained_differs_from_scratch() -> None:
    a = create_model("efficientnet_lite0", num_classes=2, mode="finetune")
    torch.manual_seed(0)
    b = create_model("efficientnet_lite0", num_classes=2, mode="scratch")
    wa, wb = a.net._conv_stem.weight, b.net._conv_stem.weight
    assert not torch.allclose(wa, wb)
    assert wa.abs().mean() > 0.05  # real ImageNet filters, not a fresh init scale


def test_unknown_model_lists_known() -> None:
    with pytest.raises(MedAssistError, match="unknown model 'vgg'.*resnet18"):
        create_model("vgg", num_classes=2)
