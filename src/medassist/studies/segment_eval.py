"""The segmentation study's test evaluation: per-image metrics with 95% intervals over images, the pixel AUC with its
interval, the second grader's agreement with the first where the data has one, and outline overlays."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from medassist.evaluate.segmentation import METRICS, per_image, pixel_auc, predict_probabilities, summarize
from medassist.run import Run

AUC_BINS = 2000  # per-image histograms of the foreground probability: the bootstrap's AUC costs no pixel sort


def _auc_from_histograms(pos: np.ndarray, neg: np.ndarray) -> float:
    """AUC of scores binned into histograms (ties within a bin count one half)."""
    below = np.cumsum(neg) - neg  # negatives in lower bins
    total = pos.sum() * neg.sum()
    return float((pos * (below + 0.5 * neg)).sum() / total) if total else float("nan")


def pixel_auc_ci(
    probs: np.ndarray, masks: np.ndarray, fov: np.ndarray | None, *, n_boot: int, seed: int
) -> dict[str, float | None]:
    """The pixel AUC over the split, and a 95% interval from resampling images (histograms of AUC_BINS bins)."""
    exact = pixel_auc(probs, masks, fov)
    if exact is None:
        return {"auc": None, "ci_low": None, "ci_high": None}
    edges = np.linspace(0.0, 1.0, AUC_BINS + 1)
    pos, neg = [], []
    for i in range(len(probs)):
        inside = np.ones(masks[i].shape, bool) if fov is None else fov[i].astype(bool)
        p, y = probs[i, 1][inside], masks[i][inside] > 0
        pos.append(np.histogram(p[y], edges)[0])
        neg.append(np.histogram(p[~y], edges)[0])
    pos_a, neg_a = np.array(pos, dtype=np.float64), np.array(neg, dtype=np.float64)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(probs), len(probs))
        draws.append(_auc_from_histograms(pos_a[idx].sum(0), neg_a[idx].sum(0)))
    lo, hi = np.nanquantile(draws, [0.025, 0.975])
    return {"auc": exact, "ci_low": float(lo), "ci_high": float(hi)}


def _second_grader(test: Any, cfg: Any, run: Run) -> dict[str, Any] | None:
    """The second grader's masks scored against the first's, as a human reference."""
    if test.second is None:
        return None
    have = [i for i in range(len(test)) if not (test.second[i] == 255).all()]
    if not have:
        return None
    k = test.num_classes
    onehot = np.eye(k, dtype=np.float32)[test.second[have]].transpose(0, 3, 1, 2)  # as if "probabilities"
    fov = None if test.fov is None else test.fov[have]
    rows = per_image(onehot, test.masks[have], fov, [test.names[i] for i in have])
    run.write_table("second_grader", pd.DataFrame(rows))
    return {"n": len(have), **summarize(rows, n_boot=cfg.n_boot, seed=cfg.train.seed)}


def _outline(mask: np.ndarray) -> np.ndarray:
    from scipy.ndimage import binary_erosion

    m = mask > 0
    return m & ~binary_erosion(m, iterations=1)


def plot_overlays(images: np.ndarray, truth: np.ndarray, pred: np.ndarray, names: list[str], path: Any) -> Any:
    """Each image with the true outline (green) and the predicted one (red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    cols = min(3, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        img = images[i].transpose(1, 2, 0)
        rgb = np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img.copy()
        rgb[_outline(truth[i])] = (0, 200, 0)
        rgb[_outline(pred[i])] = (230, 30, 30)
        axes.flat[i].imshow(rgb)
        axes.flat[i].set_title(names[i], fontsize=9)
    fig.suptitle("true outline green, predicted red", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@torch.no_grad()
def evaluate_test(run: Run, cfg: Any, model: torch.nn.Module, test: Any) -> dict[str, Any]:
    """Every test number of the chosen network (tables ``test_per_image``; figure ``test_overlays``)."""
    probs = predict_probabilities(model, test.images)
    rows = per_image(probs, test.masks, test.fov, test.names)
    run.write_table("test_per_image", pd.DataFrame(rows))
    with open(run.path("predictions/test_probs.npy"), "wb") as fh:
        np.save(fh, probs[:, 1:].astype(np.float16))  # foreground probabilities, for later comparisons
    summary = {
        "n": len(test),
        "metrics": summarize(rows, n_boot=cfg.n_boot, seed=cfg.train.seed),
        "pixel_auc": pixel_auc_ci(probs, test.masks, test.fov, n_boot=cfg.n_boot, seed=cfg.train.seed),
        "second_grader": _second_grader(test, cfg, run),
    }
    pick = np.random.default_rng(cfg.train.seed).choice(len(test), min(cfg.n_examples, len(test)), replace=False)
    pick = np.sort(pick)
    plot_overlays(
        test.images[pick],
        test.masks[pick],
        probs[pick].argmax(1),
        [test.names[i] for i in pick],
        run.figure("test_overlays"),
    )
    summary["examples"] = [test.names[i] for i in pick]
    summary["metric_names"] = list(METRICS)
    return summary
