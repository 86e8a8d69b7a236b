"""What a segmentation bundle returns for one image: the mask at the image's own size, each class's area, and an
overlay of the outline; the model reads the image resized to the shape it was trained at (padded to its multiple)."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medassist.deploy.bundle_model import run_many


@dataclass(frozen=True)
class Segmentation:
    """The segmentation of one image.

    Attributes:
        mask: uint8 (H, W) class indices at the input image's size (0 = background).
        labels: the class names, index order.
        area_pixels: each foreground class's area in the input image's pixels.
        area_mm2: the same in mm², when the image carries a pixel spacing (DICOM), else None.
        latency_ms: time of the model call.
    """

    mask: np.ndarray = field(repr=False)
    labels: list[str]
    area_pixels: dict[str, int]
    latency_ms: float
    area_mm2: dict[str, float] | None = None

    def mask_png(self) -> bytes:
        """The mask as a PNG: class index k stored as k * (255 // (K - 1)), so a binary mask is 0/255."""
        from PIL import Image

        step = 255 // max(1, len(self.labels) - 1)
        buf = io.BytesIO()
        Image.fromarray((self.mask * step).astype(np.uint8)).save(buf, format="PNG")
        return buf.getvalue()


def segment(bundle: Any, image: np.ndarray, *, spacing: tuple[float, float] | None = None) -> Segmentation:
    """Segment one uint8 image (C, H, W) with a segmentation bundle."""
    from PIL import Image

    pre = bundle.meta["preprocessing"]
    c, h, w = image.shape
    th, tw = pre["image_shape"]
    x = image
    if (h, w) != (th, tw):
        pil = Image.fromarray(image[0] if c == 1 else image.transpose(1, 2, 0))
        resized = np.asarray(pil.resize((tw, th), Image.Resampling.BILINEAR))
        x = resized[None] if resized.ndim == 2 else resized.transpose(2, 0, 1)
    scale = np.float32(pre["scale"])
    mean = np.asarray(pre["mean"], dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(pre["std"], dtype=np.float32).reshape(-1, 1, 1)
    feed = ((x.astype(np.float32) * scale - mean) / std)[None]
    m = pre["multiple"]
    ph, pw = (-th) % m, (-tw) % m
    if ph or pw:
        feed = np.pad(feed, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="reflect")
    start = time.perf_counter()
    (logits,) = run_many(
        bundle.session,
        [bundle._output_name],
        {bundle._input_names[0]: feed},
        f"bundle {bundle.path}: {bundle.meta['model_file']}",
    )
    seconds = time.perf_counter() - start
    labels = logits[0, :, :th, :tw].argmax(axis=0).astype(np.uint8)
    if (h, w) != (th, tw):
        labels = np.asarray(Image.fromarray(labels).resize((w, h), Image.Resampling.NEAREST))
    names = list(bundle.labels)
    area = {names[k]: int((labels == k).sum()) for k in range(1, len(names))}
    mm2 = {k: v * spacing[0] * spacing[1] for k, v in area.items()} if spacing else None
    return Segmentation(labels, names, area, seconds * 1000.0, mm2)


def overlay_outline_png(image: np.ndarray, mask: np.ndarray) -> bytes:
    """The image (C, H, W uint8) as RGB with the mask's outline in red, as a PNG."""
    from PIL import Image
    from scipy.ndimage import binary_erosion

    rgb = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image.copy()
    rgb = rgb.transpose(1, 2, 0).copy()
    m = mask > 0
    rgb[m & ~binary_erosion(m)] = (230, 30, 30)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()
