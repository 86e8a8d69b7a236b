"""Explanations: Grad-CAM heatmaps for image models, gradient norms for recurrent text models."""

from __future__ import annotations

from medassist.explain.gradcam import find_last_conv, grad_cam
from medassist.explain.gradients import hidden_state_gradient_norms, layer_gradient_norms

__all__ = ["find_last_conv", "grad_cam", "hidden_state_gradient_norms", "layer_gradient_norms"]
