"""The Grad-CAM overlay an image answer carries: the shipped model's class-activation map blended over the image."""

from __future__ import annotations

import base64
import io

import numpy as np

OVERLAY_SIZE = 112  # 4x a 28-pixel input; the page shows it at twice that (PNG encoding dominates its cost)


def _heat_colours(v: np.ndarray) -> np.ndarray:
    """A blue-to-red colour map (like matplotlib's jet) of values in [0, 1]: (..., 3) float in [0, 1]."""
    r = np.clip(1.5 - np.abs(4.0 * v - 3.0), 0.0, 1.0)
    g = np.clip(1.5 - np.abs(4.0 * v - 2.0), 0.0, 1.0)
    b = np.clip(1.5 - np.abs(4.0 * v - 1.0), 0.0, 1.0)
    return np.stack([r, g, b], axis=-1)


def overlay_png(image: np.ndarray, cam: np.ndarray, size: int = OVERLAY_SIZE) -> str:
    """A data: URL of the heatmap ``cam`` (h, w) in [0, 1] blended over ``image`` (C, S, S) uint8, as PNG."""
    from PIL import Image

    gray = image.mean(axis=0).astype(np.uint8) if image.shape[0] > 1 else image[0]
    base = np.asarray(Image.fromarray(gray).resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    heat = np.asarray(Image.fromarray(cam.astype(np.float32), mode="F").resize((size, size), Image.Resampling.BILINEAR))
    heat = np.clip(heat, 0.0, 1.0)
    alpha = (0.6 * heat)[..., None]  # the image shows through where the model found no evidence
    rgb = (1.0 - alpha) * base[..., None] + alpha * _heat_colours(heat)  # (size, size, 3)
    buf = io.BytesIO()
    Image.fromarray((rgb * 255).round().astype(np.uint8), mode="RGB").save(buf, format="PNG", compress_level=1)
    return png_data_url(buf.getvalue())


def png_data_url(png: bytes) -> str:
    """A PNG as a data: URL, as the service's answers carry images."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
