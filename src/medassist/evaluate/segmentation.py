"""Segmentation metrics per image, and their means with 95% bootstrap intervals over images.

Per image, inside its field of view (everywhere when it has none), over the foreground classes (for a multi-class
mask, the mean over the classes present in the truth or the prediction): Dice, IoU, sensitivity and specificity
from pixel counts; the 95th-percentile Hausdorff distance in pixels (MONAI's ``compute_hausdorff_distance``); the
relative error of the predicted foreground area. For binary masks, the pixel AUC of the foreground probability over
every field-of-view pixel of the split (scikit-learn), as DRIVE results are usually given.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

METRICS = ("dice", "iou", "sensitivity", "specificity", "hd95", "area_error")


@torch.no_grad()
def predict_probabilities(model: nn.Module, images: np.ndarray) -> np.ndarray:
    """Softmax probabilities (N, K, H, W) float32 of uint8 images (N, C, H, W), one whole image at a time (padded to
    the network's multiple and cropped back), computed where the model is."""
    from medassist.models.segmentation import pad_to_multiple, unpad
    from medassist.train.data import model_device, to_tensor

    device = model_device(model)
    model.eval()
    out = []
    for i in range(len(images)):
        x, size = pad_to_multiple(to_tensor(images[i : i + 1]).to(device))
        out.append(torch.softmax(unpad(model(x).float(), size), dim=1).cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def _hd95(pred: np.ndarray, truth: np.ndarray) -> float:
    """95th-percentile Hausdorff distance (pixels) between two boolean masks; NaN when either is empty."""
    if not pred.any() or not truth.any():
        return float("nan")
    from monai.metrics import compute_hausdorff_distance

    p = torch.from_numpy(pred[None, None].astype(np.float32))
    t = torch.from_numpy(truth[None, None].astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # MONAI's own deprecation inside the metric
        return float(compute_hausdorff_distance(p, t, percentile=95.0)[0, 0])


def image_metrics(pred: np.ndarray, truth: np.ndarray, fov: np.ndarray | None, num_classes: int) -> dict[str, float]:
    """The metrics of one image: ``pred`` and ``truth`` class indices (H, W); ``fov`` bool (H, W) or None."""
    inside = np.ones(truth.shape, dtype=bool) if fov is None else fov.astype(bool)
    rows = []
    for k in range(1, num_classes):
        p, t = (pred == k) & inside, (truth == k) & inside
        if not p.any() and not t.any():
            continue  # a class absent from both says nothing about this image
        tp, fp, fn = float((p & t).sum()), float((p & ~t).sum()), float((~p & t).sum())
        tn = float((inside & ~p & ~t).sum())
        rows.append(
            {
                "dice": 2 * tp / (2 * tp + fp + fn),
                "iou": tp / (tp + fp + fn),
                "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
                "specificity": tn / (tn + fp) if tn + fp else float("nan"),
                "hd95": _hd95(p, t),
                "area_error": (p.sum() - t.sum()) / t.sum() if t.any() else float("nan"),
            }
        )
    if not rows:  # nothing to find and nothing found: a perfect answer
        return {
            "dice": 1.0,
            "iou": 1.0,
            "sensitivity": float("nan"),
            "specificity": 1.0,
            "hd95": 0.0,
            "area_error": float("nan"),
        }
    return {
        m: float(np.nanmean([r[m] for r in rows])) if any(np.isfinite(r[m]) for r in rows) else float("nan")
        for m in METRICS
    }


def per_image(probs: np.ndarray, masks: np.ndarray, fov: np.ndarray | None, names: list[str]) -> list[dict[str, Any]]:
    """One row of :func:`image_metrics` per image, named."""
    pred = probs.argmax(axis=1)
    k = probs.shape[1]
    return [
        {"image": names[i], **image_metrics(pred[i], masks[i], None if fov is None else fov[i], k)}
        for i in range(len(pred))
    ]


def mean_with_ci(values: np.ndarray, *, n_boot: int, seed: int) -> dict[str, float | None]:
    """Mean of the finite values and its 95% percentile-bootstrap interval (images resampled with replacement)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), (n_boot, len(v)))].mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return {"mean": float(v.mean()), "ci_low": float(lo), "ci_high": float(hi), "n": int(len(v))}


def pixel_auc(probs: np.ndarray, masks: np.ndarray, fov: np.ndarray | None) -> float | None:
    """Binary masks: the AUC of the foreground probability over every field-of-view pixel; None otherwise."""
    if probs.shape[1] != 2:
        return None
    from sklearn.metrics import roc_auc_score

    inside = np.ones(masks.shape, dtype=bool) if fov is None else fov.astype(bool)
    y = masks[inside] > 0
    if y.all() or not y.any():
        return None
    return float(roc_auc_score(y, probs[:, 1][inside]))


def summarize(rows: list[dict[str, Any]], *, n_boot: int, seed: int) -> dict[str, dict[str, float | None]]:
    """Each metric's mean over images with its 95% interval."""
    return {m: mean_with_ci(np.array([r[m] for r in rows]), n_boot=n_boot, seed=seed) for m in METRICS}
