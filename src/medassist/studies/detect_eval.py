"""The detection study's test: the chosen detector on the test images, once, after every choice was made on
validation (the detector, its epoch, and each class's count threshold)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from medassist.run import Run

if TYPE_CHECKING:
    from medassist.data.boxes import BoxSet

COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive")


def plot_examples(
    data: BoxSet, preds: list[dict[str, np.ndarray]], thresholds: list[float], picks: list[int], path: Path
) -> Path:
    """Test images with their true boxes (dashed) and the detections above each class's threshold (solid, with
    label and score)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    cols = min(3, len(picks))
    rows = int(np.ceil(len(picks) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), layout="constrained", squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), picks, strict=False):
        im = data.images[i]
        ax.imshow(im[0] if im.shape[0] == 1 else im.transpose(1, 2, 0), cmap="gray" if im.shape[0] == 1 else None)
        for b, k in zip(data.boxes[i], data.labels[i], strict=True):
            c = COLOURS[int(k) % len(COLOURS)]
            ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, ec=c, ls="--", lw=0.8))
        p = preds[i]
        shown = 0
        for b, k, s in zip(p["boxes"], p["labels"], p["scores"], strict=True):
            if s < thresholds[int(k)]:
                continue
            shown += 1
            c = COLOURS[int(k) % len(COLOURS)]
            ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, ec=c, lw=1.4))
            ax.text(
                b[0],
                b[1],
                f"{data.classes[int(k)]} {s:.2f}",
                color="white",
                fontsize=5,
                va="bottom",
                bbox={"facecolor": c, "alpha": 0.7, "pad": 0.5, "lw": 0},
            )
        ax.set_title(f"{data.names[i]}: {shown} found, {len(data.boxes[i])} true", fontsize=7)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_froc(curve: list[list[float]], rates: dict[str, float | None], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.5), layout="constrained")
    if curve:
        fps, sens = zip(*curve, strict=True)
        ax.plot(fps, sens)
    pts = [(float(r), v) for r, v in rates.items() if v is not None]
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o")
    ax.set(xscale="log", xlabel="false positives per image", ylabel="sensitivity", ylim=(0, 1.02))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _as_json(preds: list[dict[str, np.ndarray]], names: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "image": n,
            "boxes": p["boxes"].round(2).tolist(),
            "labels": p["labels"].tolist(),
            "scores": p["scores"].round(4).tolist(),
        }
        for n, p in zip(names, preds, strict=True)
    ]


def evaluate_test(run: Run, cfg: Any, model: torch.nn.Module, sets: dict[str, BoxSet]) -> dict[str, Any]:
    """COCO mAP and per-class AP with intervals, FROC and count errors on test; thresholds from validation."""
    from medassist.evaluate import detection as m
    from medassist.train.detection import predict_boxes

    val, test = sets["val"], sets["test"]
    classes = test.classes
    val_preds = predict_boxes(model, val.images)
    thresholds = m.choose_count_thresholds(val_preds, val.counts())
    preds = predict_boxes(model, test.images)  # the test set, read once
    ev = m.coco_evaluation(test.boxes, test.labels, preds, classes, [im.shape[-2:] for im in test.images])
    ap = m.bootstrap_ap(ev, classes, n_boot=cfg.n_boot, seed=cfg.train.seed)
    froc = m.froc(ev)
    truth = test.counts()
    counted = m.predicted_counts(preds, thresholds)
    counts = m.count_errors(counted, truth, classes, n_boot=cfg.n_boot, seed=cfg.train.seed)
    run.write_json("predictions/test.json", _as_json(preds, test.names))
    per_class = pd.DataFrame(
        [
            {
                "class": c,
                "boxes": int(truth[:, k].sum()),
                "ap50": ap["per_class"][c]["ap50"]["mean"],
                "ap50_ci_low": ap["per_class"][c]["ap50"]["ci_low"],
                "ap50_ci_high": ap["per_class"][c]["ap50"]["ci_high"],
                "ap": ap["per_class"][c]["ap"]["mean"],
                "count_threshold": thresholds[k],
                "count_mae": counts[c]["mae"]["mean"],
                "count_bias": counts[c]["bias"]["mean"],
                "mean_true_count": counts[c]["mean_true"],
            }
            for k, c in enumerate(classes)
        ]
    )
    run.write_table("test_per_class", per_class)
    run.write_table(
        "test_counts",
        pd.DataFrame(
            {"image": test.names}
            | {f"true_{c}": truth[:, k] for k, c in enumerate(classes)}
            | {f"found_{c}": counted[:, k] for k, c in enumerate(classes)}
        ),
    )
    run.write_table("froc", pd.DataFrame(froc["curve"], columns=["fp_per_image", "sensitivity"]))
    plot_froc(froc["curve"], froc["sensitivity"], run.figure("froc"))
    picks = list(np.linspace(0, len(test) - 1, min(cfg.n_examples, len(test))).round().astype(int))
    plot_examples(test, preds, thresholds, sorted(set(picks)), run.figure("test_examples"))
    return {
        "n": len(test),
        "ap": ap,
        "froc": {k: v for k, v in froc.items() if k != "curve"},
        "count_thresholds": dict(zip(classes, thresholds, strict=True)),
        "counts": counts,
    }
