"""Explanations of model predictions: Grad-CAM heatmaps."""

from __future__ import annotations

from medassist.explain.gradcam import find_last_conv, grad_cam

__all__ = ["find_last_conv", "grad_cam"]
