"""Detection metrics: COCO mAP through pycocotools (the COCO reference implementation), FROC through MONAI, and
per-image counts.

- :func:`coco_evaluation` matches detections to boxes once with pycocotools' ``COCOeval`` (area "all", up to 100
  detections an image); :func:`average_precision` reads mAP@0.5, mAP@[.5:.95] and per-class AP from it.
- :func:`bootstrap_ap` resamples images with replacement and re-runs only COCOeval's ``accumulate`` on the
  per-image matches of the resample, so an interval over 1,000 resamples costs seconds; the matching itself is
  never redone or re-implemented.
- :func:`froc` reads pycocotools' matches at IoU 0.5 (a detection is a true positive when it matched a box of its
  class) and gives the sensitivity at each number of false positives per image through
  :func:`monai.metrics.compute_froc_curve_data` and :func:`monai.metrics.compute_froc_score`.
- :func:`count_errors` compares per-image, per-class counts of detections above a score threshold with the
  true counts (what a blood count reads); :func:`choose_count_thresholds` picks each class's threshold on
  validation.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from medassist.evaluate.segmentation import mean_with_ci

FROC_RATES = (0.125, 0.25, 0.5, 1, 2, 4, 8)
Boxes = Sequence[np.ndarray]


def _quiet() -> contextlib.AbstractContextManager:
    return contextlib.redirect_stdout(io.StringIO())  # pycocotools prints every step


def coco_evaluation(
    true_boxes: Boxes,
    true_labels: Boxes,
    predictions: Sequence[dict[str, np.ndarray]],
    classes: Sequence[str],
    sizes: Sequence[tuple[int, int]],
) -> Any:
    """pycocotools' ``COCOeval`` with every image matched (``evaluate`` run, ``accumulate`` not yet).

    Args:
        true_boxes, true_labels: per image, (n, 4) x_min, y_min, x_max, y_max and (n,) class indices.
        predictions: per image, ``boxes``, ``labels``, ``scores`` (:func:`medassist.train.detection.predict_boxes`).
        classes: the class names.
        sizes: per image, (height, width).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, dets = [], [], []
    for i, (b, lab, (h, w)) in enumerate(zip(true_boxes, true_labels, sizes, strict=True)):
        images.append({"id": i, "height": int(h), "width": int(w)})
        for box, k in zip(np.asarray(b).reshape(-1, 4), np.asarray(lab).reshape(-1), strict=True):
            x0, y0, x1, y1 = (float(v) for v in box)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": int(k) + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
    for i, p in enumerate(predictions):
        for box, k, s in zip(p["boxes"], p["labels"], p["scores"], strict=True):
            x0, y0, x1, y1 = (float(v) for v in box)
            dets.append(
                {"image_id": i, "category_id": int(k) + 1, "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(s)}
            )
    cats = [{"id": k + 1, "name": str(c)} for k, c in enumerate(classes)]
    with _quiet():
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": cats}
        gt.createIndex()
        dt = gt.loadRes(dets) if dets else COCO()
        if not dets:
            dt.dataset = {"images": images, "annotations": [], "categories": cats}
            dt.createIndex()
        ev = COCOeval(gt, dt, "bbox")
        ev.params.areaRng, ev.params.areaRngLbl, ev.params.maxDets = [[0, 1e10]], ["all"], [100]
        ev.evaluate()
    return ev


def evaluate_set(data: Any, predictions: Sequence[dict[str, np.ndarray]]) -> tuple[Any, dict[str, Any]]:
    """The matched ``COCOeval`` of ``predictions`` on a :class:`~medassist.data.boxes.BoxSet`, and its
    :func:`average_precision`."""
    ev = coco_evaluation(data.boxes, data.labels, predictions, data.classes, [im.shape[-2:] for im in data.images])
    return ev, average_precision(accumulate(ev), data.classes)


def average_precision(ev: Any, classes: Sequence[str]) -> dict[str, Any]:
    """mAP@0.5, mAP@[.5:.95] and each class's AP (both), from an accumulated ``COCOeval``; None where undefined
    (a class without boxes)."""
    precision = ev.eval["precision"][:, :, :, 0, -1]  # (IoU thresholds, recall points, classes)

    def mean(p: np.ndarray) -> float | None:
        p = p[p > -1]
        return float(p.mean()) if p.size else None

    return {
        "map50": mean(precision[0]),
        "map": mean(precision),
        "per_class": {
            c: {"ap50": mean(precision[0, :, k]), "ap": mean(precision[:, :, k])} for k, c in enumerate(classes)
        },
    }


def accumulate(ev: Any, images: np.ndarray | None = None) -> Any:
    """``ev`` accumulated over ``images`` (indices, repeats allowed; None: every image), on a copy."""
    out = copy.copy(ev)
    if images is not None:
        n_images = len(ev.params.imgIds)
        per = len(ev.params.areaRng) * n_images
        out.evalImgs = [
            ev.evalImgs[k * per + a * n_images + int(i)]
            for k in range(len(ev.params.catIds))
            for a in range(len(ev.params.areaRng))
            for i in images
        ]
        out.params = copy.copy(ev.params)
        out.params.imgIds = list(range(len(images)))
        out._paramsEval = copy.copy(out.params)
    with _quiet():
        out.accumulate()
    return out


def bootstrap_ap(ev: Any, classes: Sequence[str], *, n_boot: int, seed: int) -> dict[str, Any]:
    """mAP@0.5, mAP@[.5:.95] and per-class AP with 95% percentile-bootstrap intervals over images."""
    point = average_precision(accumulate(ev), classes)
    n = len(ev.params.imgIds)
    rng = np.random.default_rng(seed)
    draws = [average_precision(accumulate(ev, rng.integers(0, n, n)), classes) for _ in range(n_boot)]

    def ci(value: float | None, values: list[float | None]) -> dict[str, float | None]:
        v = np.asarray([x for x in values if x is not None], dtype=np.float64)
        lo, hi = (float(q) for q in np.quantile(v, [0.025, 0.975])) if v.size else (None, None)
        return {"mean": value, "ci_low": lo, "ci_high": hi}

    return {
        "map50": ci(point["map50"], [d["map50"] for d in draws]),
        "map": ci(point["map"], [d["map"] for d in draws]),
        "per_class": {
            c: {
                "ap50": ci(point["per_class"][c]["ap50"], [d["per_class"][c]["ap50"] for d in draws]),
                "ap": ci(point["per_class"][c]["ap"], [d["per_class"][c]["ap"] for d in draws]),
            }
            for c in classes
        },
        "n_images": n,
        "n_boot": n_boot,
    }


def froc(ev: Any, *, rates: Sequence[float] = FROC_RATES) -> dict[str, Any]:
    """Sensitivity at each number of false positives per image (IoU 0.5, every class pooled), the curve's
    points, and the mean sensitivity over ``rates``."""
    from monai.metrics import compute_froc_curve_data, compute_froc_score

    tp, fp, targets = [], [], 0
    for e in ev.evalImgs:
        if e is None:
            continue
        matched, ignored = e["dtMatches"][0], e["dtIgnore"][0]
        scores = np.asarray(e["dtScores"])
        tp.extend(scores[(matched > 0) & ~ignored])
        fp.extend(scores[(matched == 0) & ~ignored])
        targets += int((~np.asarray(e["gtIgnore"], dtype=bool)).sum())
    n_images = len(ev.params.imgIds)
    if targets == 0:
        return {"sensitivity": {str(r): None for r in rates}, "mean": None, "curve": []}
    fps, sens = compute_froc_curve_data(np.asarray(fp), np.asarray(tp), targets, n_images)
    at = {str(r): float(compute_froc_score(fps, sens, (r,))) for r in rates}
    step = max(1, len(fps) // 200)
    return {
        "sensitivity": at,
        "mean": float(np.mean(list(at.values()))),
        "curve": [[float(a), float(b)] for a, b in zip(fps[::step], sens[::step], strict=True)],
        "targets": targets,
        "images": n_images,
    }


def predicted_counts(predictions: Sequence[dict[str, np.ndarray]], thresholds: Sequence[float]) -> np.ndarray:
    """(N, K) detections per image and class whose score reaches that class's threshold."""
    k = len(thresholds)
    out = np.zeros((len(predictions), k), dtype=np.int64)
    for i, p in enumerate(predictions):
        for c in range(k):
            out[i, c] = int(((p["labels"] == c) & (p["scores"] >= thresholds[c])).sum())
    return out


def choose_count_thresholds(
    predictions: Sequence[dict[str, np.ndarray]], true_counts: np.ndarray, *, grid: Sequence[float] | None = None
) -> list[float]:
    """Per class, the score threshold whose counts have the smallest mean absolute error (on validation)."""
    grid = np.round(np.arange(0.05, 1.0, 0.05), 2) if grid is None else np.asarray(grid)
    errors = np.stack(
        [np.abs(predicted_counts(predictions, [t] * true_counts.shape[1]) - true_counts).mean(0) for t in grid]
    )
    return [float(grid[int(np.argmin(errors[:, c]))]) for c in range(true_counts.shape[1])]


def count_errors(
    predicted: np.ndarray, truth: np.ndarray, classes: Sequence[str], *, n_boot: int, seed: int
) -> dict[str, Any]:
    """Per class: mean absolute and mean signed count error per image (with 95% intervals) and the mean true
    count."""
    out = {}
    for c, name in enumerate(classes):
        diff = predicted[:, c].astype(np.float64) - truth[:, c]
        out[name] = {
            "mae": mean_with_ci(np.abs(diff), n_boot=n_boot, seed=seed),
            "bias": mean_with_ci(diff, n_boot=n_boot, seed=seed),
            "mean_true": float(truth[:, c].mean()),
            "mean_predicted": float(predicted[:, c].mean()),
        }
    return out


def paired_map_difference(ev_ref: Any, ev_other: Any, classes: Sequence[str], *, n_boot: int, seed: int) -> dict:
    """mAP@0.5 of ``ev_ref`` minus that of ``ev_other`` on the same images, with a 95% interval from resampling the
    images (the same resamples for both: paired)."""
    n = len(ev_ref.params.imgIds)
    rng = np.random.default_rng(seed)
    point = (average_precision(accumulate(ev_ref), classes)["map50"] or 0.0) - (
        average_precision(accumulate(ev_other), classes)["map50"] or 0.0
    )
    diffs = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        a = average_precision(accumulate(ev_ref, idx), classes)["map50"]
        b = average_precision(accumulate(ev_other, idx), classes)["map50"]
        if a is not None and b is not None:
            diffs.append(a - b)
    lo, hi = (float(q) for q in np.quantile(diffs, [0.025, 0.975])) if diffs else (None, None)
    return {"mean": float(point), "ci_low": lo, "ci_high": hi}
