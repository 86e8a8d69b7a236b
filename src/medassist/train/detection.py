"""Detection in the one engine: a batcher of images and their boxes, the detector's training step, its losses on
held-out images, and its predictions.

- :class:`BoxBatcher` serves images as floats in [0, 1] padded (right and bottom, so no box moves) to the batch's
  largest image, with their boxes as a padded (B, N, 5) tensor (MONAI's box order, then the class; -1 pads).
  With ``augment`` each image is flipped left-right and up-down at random and scaled by a random factor, its boxes
  moved with it by MONAI's box operations (:func:`monai.apps.detection.transforms.box_ops.flip_boxes`,
  :func:`~monai.apps.detection.transforms.box_ops.zoom_boxes`).
- :class:`DetectionStep` is the engine's ``step_fn``: the detector's focal classification loss plus its box
  regression loss (logged apart as ``train_cls_loss`` and ``train_box_loss``).
- :func:`predict_boxes` runs the detector on whole images, each at its own size; :func:`losses_and_predictions`
  gives validation its loss and its detections from one pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from medassist.errors import DataError
from medassist.models.detection import from_monai, to_monai
from medassist.train.data import batches

if TYPE_CHECKING:
    from medassist.data.boxes import BoxSet


def _as_float(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).float().div_(255.0)


def pad_batch(images: list[torch.Tensor]) -> torch.Tensor:
    """(C, H, W) images of any sizes -> (B, C, H_max, W_max), padded with zeros at the right and bottom."""
    h = max(im.shape[-2] for im in images)
    w = max(im.shape[-1] for im in images)
    return torch.stack([F.pad(im, (0, w - im.shape[-1], 0, h - im.shape[-2])) for im in images])


class BoxBatcher:
    """A :class:`~medassist.data.boxes.BoxSet` for :func:`medassist.train.fit` (see the module)."""

    augmentable = False  # it moves the boxes with the images itself

    def __init__(self, data: BoxSet, *, augment: bool, seed: int, scale: tuple[float, float] = (0.8, 1.2)) -> None:
        if len(data) == 0:
            raise DataError("no images to train the detector on")
        self.data, self.augment, self.seed, self.scale = data, augment, seed, scale
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.data)

    def order(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
        return batches(len(self.data), batch_size, generator=generator)

    def _one(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from monai.apps.detection.transforms.box_ops import flip_boxes, zoom_boxes

        image = _as_float(self.data.images[i])
        boxes = to_monai(torch.from_numpy(self.data.boxes[i]))
        labels = torch.from_numpy(self.data.labels[i])
        if self.augment:
            size = tuple(image.shape[-2:])
            axes = [a for a in (0, 1) if self.rng.random() < 0.5]
            if axes:
                image = image.flip([a + 1 for a in axes])
                boxes = flip_boxes(boxes, size, flip_axes=axes)
            s = float(self.rng.uniform(*self.scale))
            if abs(s - 1.0) > 1e-3:
                new = [max(8, round(n * s)) for n in size]
                image = F.interpolate(image[None], size=new, mode="bilinear", align_corners=False)[0]
                boxes = zoom_boxes(boxes, [n / o for n, o in zip(new, size, strict=True)])
        return image, boxes, labels

    def inputs(self, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        items = [self._one(int(i)) for i in idx]
        n = max(1, max(len(b) for _, b, _ in items))
        targets = torch.full((len(items), n, 5), -1.0)
        for k, (_, b, lab) in enumerate(items):
            targets[k, : len(b), :4] = b
            targets[k, : len(b), 4] = lab.float()
        return pad_batch([im for im, _, _ in items]), targets

    def subset(self, idx: np.ndarray) -> BoxBatcher:
        return BoxBatcher(self.data.subset(idx), augment=self.augment, seed=self.seed, scale=self.scale)


def unpad_targets(targets: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """The padded (B, N, 5) targets as MONAI's list of ``{"boxes", "labels"}``."""
    out = []
    for t in targets:
        keep = t[:, 4] >= 0
        out.append({"boxes": t[keep, :4], "labels": t[keep, 4].long()})
    return out


class DetectionStep(nn.Module):
    """The engine's step for a MONAI detector: its classification plus box-regression loss. Returns
    (loss, None, logs): there is no per-image logit."""

    def forward(self, model: nn.Module, inputs: tuple[torch.Tensor, ...], _y: torch.Tensor) -> tuple[Any, ...]:
        images, targets = inputs
        losses = model(images, unpad_targets(targets))
        cls, box = losses[model.cls_key], losses[model.box_reg_key]
        return cls + box, None, {"cls_loss": cls.detach(), "box_loss": box.detach()}


def _batches(n: int, batch_size: int) -> Iterator[list[int]]:
    for start in range(0, n, batch_size):
        yield list(range(start, min(n, start + batch_size)))


def _as_predictions(model: nn.Module, found: list[dict[str, torch.Tensor]]) -> list[dict[str, np.ndarray]]:
    out = []
    for d in found:
        scores = d[model.pred_score_key].float().cpu()
        order = torch.argsort(scores, descending=True)
        out.append(
            {
                "boxes": from_monai(d[model.target_box_key].float().cpu()[order]).numpy(),
                "labels": d[model.target_label_key].long().cpu()[order].numpy(),
                "scores": scores[order].numpy(),
            }
        )
    return out


def detections_from_heads(
    model: nn.Module, images: torch.Tensor, sizes: list[Any], head: dict[str, list[torch.Tensor]]
) -> list[dict[str, np.ndarray]]:
    """MONAI's post-processing of the network's head outputs (``head``: per level, the classification and box
    maps of the padded ``images``; ``sizes``: each image's size before padding): anchors, box decoding, score
    threshold, class-wise non-maximum suppression. The step a deployed network's outputs (ONNX Runtime) go
    through, as the PyTorch detector's do."""
    flat, anchors = _flatten(model, images, head)
    return _as_predictions(model, model.postprocess_detections(flat, anchors, sizes, head["locs"]))


def _flatten(model: nn.Module, images: torch.Tensor, head: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    model.generate_anchors(images, head)
    head["locs"] = [x.shape[2:].numel() for x in head[model.cls_key]]
    flat = {key: model._reshape_maps(head[key]) for key in (model.cls_key, model.box_reg_key)}
    return flat, model.anchors


def losses_and_predictions(
    model: nn.Module, data: BoxSet, *, batch_size: int = 8
) -> tuple[float, list[dict[str, np.ndarray]]]:
    """One pass of the network over held-out images for both its training loss (every layer in evaluation mode)
    and its detections (:func:`predict_boxes`'s form).

    MONAI's ``RetinaNetDetector.forward`` returns either; this runs its steps once (pad, network, anchors,
    reshape) and then both its ``compute_loss`` and its ``postprocess_detections``, so validation costs one
    forward pass instead of two.
    """
    from monai.apps.detection.utils.detector_utils import preprocess_images
    from monai.apps.detection.utils.predict_utils import ensure_dict_value_to_list_

    device = next(model.parameters()).device
    model.eval()
    total, out = 0.0, []
    with torch.no_grad():
        for idx in _batches(len(data), batch_size):
            images, sizes = preprocess_images(
                [_as_float(data.images[i]).to(device) for i in idx], model.spatial_dims, model.size_divisible
            )
            targets = [
                {
                    "boxes": to_monai(torch.from_numpy(data.boxes[i])).to(device),
                    "labels": torch.from_numpy(data.labels[i]).to(device),
                }
                for i in idx
            ]
            head = model.network(images)
            ensure_dict_value_to_list_(head)
            flat, anchors = _flatten(model, images, head)
            losses = model.compute_loss(flat, targets, anchors, head["locs"])
            total += float(losses[model.cls_key] + losses[model.box_reg_key]) * len(idx)
            out += _as_predictions(model, model.postprocess_detections(flat, anchors, sizes, head["locs"]))
    return total / max(len(data), 1), out


def predict_boxes(model: nn.Module, images: list[np.ndarray], *, batch_size: int = 8) -> list[dict[str, np.ndarray]]:
    """Detections on whole images, each at its own size: per image ``boxes`` (n, 4) x_min, y_min, x_max, y_max in
    its pixels, ``labels`` (n,) and ``scores`` (n,), highest score first."""
    device = next(model.parameters()).device
    model.eval()
    out: list[dict[str, np.ndarray]] = []
    with torch.inference_mode():
        for idx in _batches(len(images), batch_size):
            out += _as_predictions(model, model([_as_float(images[i]).to(device) for i in idx]))
    return out
