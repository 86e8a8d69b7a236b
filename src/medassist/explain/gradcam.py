"""Grad-CAM heatmaps for image classifiers, computed with captum."""

from __future__ import annotations

import numpy as np
import torch
from captum.attr import LayerAttribution, LayerGradCam
from torch import nn

from medassist.errors import DataError, MedAssistError

# Activations that accept ``inplace=True``; ReLU6 is a Hardtanh, so Hardtanh covers it too.
_INPLACE_CAPABLE = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.SiLU,
    nn.ELU,
    nn.Hardswish,
    nn.Hardtanh,
    nn.Hardsigmoid,
    nn.SELU,
    nn.CELU,
    nn.RReLU,
    nn.Mish,
    nn.Threshold,
)


def _display_name(name: str, model: nn.Module) -> str:
    return name or f"(the {type(model).__name__} itself)"


def find_last_conv(model: nn.Module) -> tuple[str, nn.Module]:
    """The last ``nn.Conv2d`` registered in ``model``, the usual Grad-CAM layer.

    "Last" is registration order, which matches the forward order of the usual CNNs.

    Returns:
        ``(name, module)``, with ``name`` the dotted path as in ``model.named_modules()``.
    """
    last: tuple[str, nn.Module] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            last = (name, module)
    if last is None:
        raise MedAssistError(
            f"{type(model).__name__} has no nn.Conv2d layer; pass the layer to explain to grad_cam explicitly."
        )
    return last


def _check_no_inplace_activations(model: nn.Module) -> None:
    found = [
        f"{_display_name(name, model)} ({type(module).__name__})"
        for name, module in model.named_modules()
        if isinstance(module, _INPLACE_CAPABLE) and getattr(module, "inplace", False)
    ]
    if found:
        raise MedAssistError(
            f"{type(model).__name__} has in-place activation(s) at {', '.join(found)}; captum's Grad-CAM hooks are "
            "broken by in-place activations. Construct the model with inplace=False (e.g. nn.ReLU(inplace=False))."
        )


def grad_cam(
    model: nn.Module,
    layer: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor | list[int] | int,
) -> np.ndarray:
    """Grad-CAM heatmaps of ``targets`` at ``layer``, upsampled to the image size.

    The model is run in eval mode (each module's training flag is restored afterwards) and the
    caller's tensors and parameter gradients are left untouched.

    Args:
        model: a classifier returning (N, K) scores; it must not use in-place activations.
        layer: a module of ``model`` with a (N, C, h, w) output, e.g. from :func:`find_last_conv`.
        images: float (N, C, H, W), preprocessed as the model expects.
        targets: class index to explain per image (N,), or one index for all.

    Returns:
        float32 (N, H, W) in [0, 1], min-max normalised per image; a map with no positive evidence is all zero.
    """
    _check_no_inplace_activations(model)
    layer_name = next((name for name, module in model.named_modules() if module is layer), None)
    if layer_name is None:
        raise MedAssistError(
            f"layer {type(layer).__name__} is not a module of {type(model).__name__}; pick one from "
            "model.named_modules(), e.g. find_last_conv(model)[1]."
        )
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise DataError(f"images is {shape}; expected a float tensor of shape (N, C, H, W).")
    n, _, h, w = images.shape
    target = torch.as_tensor(targets, dtype=torch.long).reshape(-1)
    if target.numel() == 1:
        target = target.expand(n)
    if target.shape[0] != n:
        raise DataError(f"targets has {target.shape[0]} entries for {n} images; give one class index per image.")

    device = next((p.device for p in model.parameters()), images.device)
    # A fresh leaf that requires grad keeps the graph alive even when every parameter is frozen.
    x = images.detach().to(device).clone().requires_grad_(True)
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.enable_grad():
            attr = LayerGradCam(model, layer).attribute(x, target=target.to(device), relu_attributions=True)
    finally:
        for module, training in modes.items():
            module.training = training
    if attr.ndim != 4:
        raise MedAssistError(
            f"layer '{_display_name(layer_name, model)}' gives Grad-CAM maps of shape {tuple(attr.shape)}; choose a "
            "convolutional layer with a (N, C, h, w) output, e.g. find_last_conv(model)."
        )
    attr = LayerAttribution.interpolate(attr.detach(), (h, w), interpolate_mode="bilinear")  # (N, 1, H, W)
    cam = attr[:, 0].to(torch.float64).cpu().numpy()  # (N, H, W)
    low = cam.min(axis=(1, 2), keepdims=True)
    span = cam.max(axis=(1, 2), keepdims=True) - low
    # A map that is flat up to rounding (e.g. a 1x1 feature map upsampled) carries no location: keep it zero
    # rather than amplifying float noise to full scale.
    flat = span <= 1e-6 * np.maximum(np.abs(cam).max(axis=(1, 2), keepdims=True), 1e-12)
    cam = np.divide(cam - low, span, out=np.zeros_like(cam), where=~flat)
    return np.clip(cam, 0.0, 1.0).astype(np.float32)
