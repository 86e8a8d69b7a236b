"""What a detection bundle returns for one image: boxes in the image's own pixels, their labels and scores, the
count of each class above its threshold (chosen on validation by the study), and an image with the boxes drawn.

The bundle's network gives classification and box maps per pyramid level (ONNX Runtime); MONAI's post-processing
(anchors, box decoding, score threshold, class-wise NMS) turns them into boxes, as it did in the study, from a
detector rebuilt without weights from the bundle's ``detector`` description.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medassist.deploy.bundle_model import run_many

COLOURS = ((230, 25, 75), (0, 130, 200), (60, 180, 75), (245, 130, 48), (145, 30, 180), (70, 240, 240))


@dataclass(frozen=True)
class Detection:
    """The detections of one image.

    Attributes:
        boxes: float (n, 4) x_min, y_min, x_max, y_max in the input image's pixels, highest score first.
        labels: the class name of each box.
        scores: each box's score.
        counts: per class, the boxes whose score reaches the class's threshold (what a count reads).
        thresholds: per class, that threshold.
        latency_ms: time of the model call and its post-processing.
    """

    boxes: np.ndarray = field(repr=False)
    labels: list[str]
    scores: np.ndarray = field(repr=False)
    counts: dict[str, int]
    thresholds: dict[str, float]
    latency_ms: float

    def counted(self) -> list[int]:
        """Indices of the boxes that are counted (score at least their class's threshold)."""
        return [i for i, (lab, s) in enumerate(zip(self.labels, self.scores, strict=True)) if s >= self.thresholds[lab]]

    def as_dict(self) -> dict[str, Any]:
        """The counted boxes as JSON-ready lists, with the counts."""
        keep = self.counted()
        return {
            "boxes": [[round(float(v), 1) for v in self.boxes[i]] for i in keep],
            "labels": [self.labels[i] for i in keep],
            "scores": [round(float(self.scores[i]), 4) for i in keep],
            "counts": self.counts,
            "thresholds": self.thresholds,
            "latency_ms": self.latency_ms,
        }


def _postprocessor(bundle: Any) -> Any:
    """The MONAI detector whose post-processing the bundle's maps go through (built once per bundle, no weights)."""
    cached = getattr(bundle, "_detector", None)
    if cached is None:
        from medassist.models import create_model

        det = bundle.meta["preprocessing"]["detector"]
        cached = create_model(
            det["model"],
            num_classes=len(bundle.labels),
            in_channels=bundle.meta["preprocessing"]["channels"],
            backbone=det["backbone"],
            pretrained=False,
            width=det["width"],
            anchor_sizes=tuple(det["anchor_sizes"]),
        ).eval()
        bundle._detector = cached
    return cached


def detect(bundle: Any, image: np.ndarray) -> Detection:
    """Detect in one uint8 image (C, H, W) with a detection bundle."""
    import torch
    from PIL import Image

    from medassist.train.detection import detections_from_heads

    pre = bundle.meta["preprocessing"]
    c, h, w = image.shape
    s = pre["image_size"] / max(h, w) if pre["image_size"] else 1.0
    x = image
    if s != 1.0:
        size = (max(1, round(w * s)), max(1, round(h * s)))
        pil = Image.fromarray(image[0] if c == 1 else image.transpose(1, 2, 0))
        resized = np.asarray(pil.resize(size, Image.Resampling.BILINEAR))
        x = resized[None] if resized.ndim == 2 else resized.transpose(2, 0, 1)
    m = pre["multiple"]
    ph, pw = -(-x.shape[1] // m) * m, -(-x.shape[2] // m) * m
    feed = np.zeros((1, c, ph, pw), np.float32)
    feed[0, :, : x.shape[1], : x.shape[2]] = x.astype(np.float32) * np.float32(pre["scale"])
    detector = _postprocessor(bundle)
    start = time.perf_counter()
    names = [o.name for o in bundle.session.get_outputs()]
    maps = run_many(bundle.session, names, {bundle.session.get_inputs()[0].name: feed}, f"bundle {bundle.path}")
    half = len(maps) // 2
    head = {
        detector.cls_key: [torch.from_numpy(a) for a in maps[:half]],
        detector.box_reg_key: [torch.from_numpy(a) for a in maps[half:]],
    }
    with torch.no_grad():
        (found,) = detections_from_heads(detector, torch.from_numpy(feed), [x.shape[1:]], head)
    latency = (time.perf_counter() - start) * 1000.0
    labels = [bundle.labels[int(k)] for k in found["labels"]]
    thresholds = dict(
        zip(bundle.labels, [float(t) for t in np.broadcast_to(bundle.threshold, len(bundle.labels))], strict=True)
    )
    counts = {
        name: int(
            sum(1 for lab, sc in zip(labels, found["scores"], strict=True) if lab == name and sc >= thresholds[name])
        )
        for name in bundle.labels
    }
    return Detection(found["boxes"] / s, labels, found["scores"], counts, thresholds, latency)


def boxes_png(image: np.ndarray, result: Detection) -> bytes:
    """The image (C, H, W) with the counted boxes drawn and labelled, as a PNG."""
    from PIL import Image, ImageDraw

    rgb = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image
    pil = Image.fromarray(np.ascontiguousarray(rgb.transpose(1, 2, 0)))
    draw = ImageDraw.Draw(pil)
    order = {name: k for k, name in enumerate(result.thresholds)}
    for i in result.counted():
        colour = COLOURS[order[result.labels[i]] % len(COLOURS)]
        x0, y0, x1, y1 = (float(v) for v in result.boxes[i])
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=2)
        draw.text((x0 + 2, y0 + 1), f"{result.labels[i]} {result.scores[i]:.2f}", fill=colour)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()
