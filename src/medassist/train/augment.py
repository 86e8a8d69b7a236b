"""Batched random augmentation on CPU tensors: one affine warp per image (flip, rotation, shift, scale) and a
brightness/contrast change, drawn from an explicit generator so that runs are reproducible."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from medassist.config import AugmentConfig


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Return an augmented copy of the normalised batch ``x`` of shape (B, C, H, W)."""
    B = x.shape[0]

    def uniform(limit: float) -> torch.Tensor:  # (B,) in [-limit, limit]
        return (torch.rand(B, generator=generator) * 2 - 1) * limit

    angle = uniform(cfg.rotation) * math.pi / 180
    scale = 1 + uniform(cfg.scale)
    flip = torch.where(torch.rand(B, generator=generator) < cfg.flip, -1.0, 1.0)
    tx, ty = uniform(cfg.shift) * 2, uniform(cfg.shift) * 2  # affine_grid coordinates span [-1, 1]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1
    )  # (B, 2, 3): maps output to input coordinates
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # Background of the normalised images is -1 (black); pad with the border rather than 0 (mid-grey).
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    contrast = (1 + uniform(cfg.contrast)).view(B, 1, 1, 1)
    brightness = uniform(cfg.brightness).view(B, 1, 1, 1)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return ((out - mean) * contrast + mean + brightness).clamp(-1, 1)
