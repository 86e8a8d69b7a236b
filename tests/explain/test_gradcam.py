"""Grad-CAM: shapes and range, localisation on a fixed-weight CNN, and the in-place activation guard."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medassist.errors import DataError, MedAssistError
from medassist.explain import find_last_conv, grad_cam


class TinyCNN(nn.Module):
    """Conv-ReLU-Conv-GAP-Linear, small enough to reason about by hand."""

    def __init__(self, in_channels: int = 1, width: int = 4, num_classes: int = 2, inplace: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=2, padding=1, bias=False)
        self.act = nn.ReLU(inplace=inplace)
        self.conv2 = nn.Conv2d(width, width, 1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.act(self.conv1(x)))  # (N, width, H/2, W/2)
        return self.fc(self.pool(x).flatten(1))  # (N, num_classes)


def brightness_detector() -> TinyCNN:
    """Fixed weights: the class-1 score is the mean brightness, the class-0 score its negative.

    So the class-1 Grad-CAM at conv2 is proportional to the (smoothed, downsampled) image itself, and
    class 0 has no positive evidence anywhere.
    """
    model = TinyCNN(width=1)
    with torch.no_grad():
        model.conv1.weight.fill_(1 / 9)
        model.conv2.weight.fill_(1.0)
        model.fc.weight.copy_(torch.tensor([[-1.0], [1.0]]))
    return model


QUADRANTS = {"top-left": (0, 0), "top-right": (0, 1), "bottom-left": (1, 0), "bottom-right": (1, 1)}


def quadrant_images(size: int = 16) -> torch.Tensor:
    """One image per quadrant: black except a bright square well inside that quadrant."""
    half = size // 2
    images = torch.zeros(len(QUADRANTS), 1, size, size)
    for i, (row, col) in enumerate(QUADRANTS.values()):
        r, c = row * half + 2, col * half + 2
        images[i, 0, r : r + 4, c : c + 4] = 1.0
    return images


def test_grad_cam_shape_and_range():
    torch.manual_seed(0)
    model = TinyCNN(in_channels=3, width=8, num_classes=3)
    images = torch.randn(3, 3, 20, 20)
    cam = grad_cam(model, model.conv2, images, [0, 1, 2])
    assert cam.shape == (3, 20, 20) and cam.dtype == np.float32
    assert cam.min() >= 0.0 and cam.max() <= 1.0
    same = grad_cam(model, model.conv2, images, torch.tensor([0, 1, 2]))
    np.testing.assert_allclose(cam, same)


def test_grad_cam_concentrates_on_the_evidence():
    images = quadrant_images()
    model = brightness_detector()
    cam = grad_cam(model, find_last_conv(model)[1], images, [1] * 4)
    half = images.shape[-1] // 2
    for i, (name, (row, col)) in enumerate(QUADRANTS.items()):
        inside = cam[i, row * half : (row + 1) * half, col * half : (col + 1) * half].sum()
        assert inside / cam[i].sum() > 0.95, name
        peak_row, peak_col = np.unravel_index(cam[i].argmax(), cam[i].shape)
        assert (peak_row // half, peak_col // half) == (row, col), name
        assert cam[i].max() == pytest.approx(1.0)  # normalised per image


def test_grad_cam_without_positive_evidence_is_all_zero():
    model = brightness_detector()
    cam = grad_cam(model, model.conv2, quadrant_images(), [0] * 4)
    assert not cam.any()


def test_grad_cam_leaves_model_and_inputs_as_they_were():
    model = brightness_detector()
    model.train()
    model.conv1.eval()  # a deliberately mixed state must come back exactly
    images = quadrant_images()
    before = images.clone()
    grad_cam(model, model.conv2, images, [1, 1, 1, 1])
    assert model.training and not model.conv1.training and model.conv2.training
    assert all(p.grad is None for p in model.parameters())
    assert not images.requires_grad and torch.equal(images, before)


def test_grad_cam_works_under_no_grad():
    model = brightness_detector()
    with torch.no_grad():
        cam = grad_cam(model, model.conv2, quadrant_images(), 1)
    assert cam.shape == (4, 16, 16) and cam.max() == pytest.approx(1.0)


def test_inplace_relu_is_refused_naming_the_module():
    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(inplace=True))
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))

        def forward(self, x):
            return self.head(self.features(x))

    model = Wrapped()
    with pytest.raises(MedAssistError, match=r"features\.1 \(ReLU\).*inplace=False"):
        grad_cam(model, model.features[0], torch.rand(1, 1, 8, 8), [0])
    tiny = TinyCNN(inplace=True)
    with pytest.raises(MedAssistError, match="act"):
        grad_cam(tiny, tiny.conv2, torch.rand(1, 1, 8, 8), [0])


def test_bad_arguments():
    model = TinyCNN()
    with pytest.raises(DataError, match="targets has 3 entries for 2 images"):
        grad_cam(model, model.conv2, torch.rand(2, 1, 8, 8), [0, 1, 1])
    with pytest.raises(DataError, match="float tensor"):
        grad_cam(model, model.conv2, torch.rand(1, 8, 8), [0])
    with pytest.raises(MedAssistError, match="not a module"):
        grad_cam(model, nn.Conv2d(1, 1, 1), torch.rand(1, 1, 8, 8), [0])


def test_find_last_conv():
    model = TinyCNN()
    assert find_last_conv(model) == ("conv2", model.conv2)
    with pytest.raises(MedAssistError, match="no nn.Conv2d"):
        find_last_conv(nn.Linear(2, 2))
