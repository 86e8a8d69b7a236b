"""Figures for run folders: learning curves, confusion matrix, ROC, reliability, prediction grids, bars.

Every function writes one PNG (parent folders created, written atomically), closes its figure and
returns the path, so a long study never accumulates open figures.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed, and none exists on a server

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn import metrics as skm  # noqa: E402

from medassist.errors import DataError, MedAssistError  # noqa: E402
from medassist.evaluate.calibration import check_inputs, expected_calibration_error, reliability_bins  # noqa: E402
from medassist.utils.io import atomic_path  # noqa: E402

PathLike = str | os.PathLike[str]
DPI = 120


def _save(fig: plt.Figure, path: PathLike) -> Path:
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)  # the temporary name has no .png suffix to infer it from
    finally:
        plt.close(fig)
    return Path(path)


def _colors(n: int) -> list:
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _require_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{what} has no column(s) {missing}; its columns are {list(df.columns)}.")


def _check_class_names(class_names: Sequence[str], k: int) -> list[str]:
    names = [str(name) for name in class_names]
    if len(names) != k:
        raise DataError(f"class_names has {len(names)} names {names} but there are {k} classes; give one per class.")
    return names


def plot_learning_curves(
    histories: dict[str, pd.DataFrame], path: PathLike, *, metrics: Sequence[str] = ("loss", "accuracy")
) -> Path:
    """Training (solid) and validation (dashed) curves per epoch, one colour per run, one panel per metric.

    Args:
        histories: run name -> history table with an ``epoch`` column and ``train_<metric>`` /
            ``val_<metric>`` columns; missing columns are skipped.
        path: where to write the PNG.
        metrics: metric names to plot, e.g. ("loss", "accuracy", "auc").

    Returns:
        ``path``.
    """
    if not histories:
        raise MedAssistError("histories is empty; pass {run name: history table} with at least one run.")
    present = [
        m for m in metrics if any(f"train_{m}" in h.columns or f"val_{m}" in h.columns for h in histories.values())
    ]
    if not present:
        columns = sorted({c for h in histories.values() for c in h.columns})
        raise DataError(
            f"no history has a train_<metric> or val_<metric> column for metrics {list(metrics)}; columns: {columns}."
        )
    fig, axes = plt.subplots(1, len(present), figsize=(5 * len(present), 4), squeeze=False, layout="constrained")
    colors = _colors(len(histories))
    for ax, metric in zip(axes[0], present, strict=True):
        for color, (name, history) in zip(colors, histories.items(), strict=True):
            epoch = history["epoch"] if "epoch" in history.columns else np.arange(1, len(history) + 1)
            for split, style in (("train", "-"), ("val", "--")):
                column = f"{split}_{metric}"
                if column in history.columns and history[column].notna().any():
                    ax.plot(
                        epoch,
                        history[column],
                        linestyle=style,
                        color=color,
                        label=f"{name} ({split})",
                        marker="o",
                        ms=3,
                    )  # markers: a run stopped after one epoch is still visible
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return _save(fig, path)


def plot_size_curve(df: pd.DataFrame, path: PathLike, *, metric: str = "accuracy") -> Path:
    """A metric against the number of training cases, for training (solid) and validation (dashed).

    Args:
        df: one row per training-set size, with columns n_train and train_<metric> and/or val_<metric>.
        path: where to write the PNG.
        metric: which metric to plot.

    Returns:
        ``path``.
    """
    _require_columns(df, ["n_train"], "the size-curve table")
    columns = [c for c in (f"train_{metric}", f"val_{metric}") if c in df.columns]
    if not columns:
        raise DataError(
            f"the size-curve table has neither train_{metric} nor val_{metric}; its columns are {list(df.columns)}."
        )
    df = df.sort_values("n_train")
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    for column in columns:
        style = "-" if column.startswith("train_") else "--"
        ax.plot(df["n_train"], df[column], linestyle=style, marker="o", label=column.split("_", 1)[0])
    if df["n_train"].min() > 0 and df["n_train"].max() / df["n_train"].min() >= 10:
        ax.set_xscale("log")  # sizes usually grow geometrically; a linear axis crushes the small ones
    ax.set_xlabel("training cases")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs training-set size")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_confusion_matrix(
    cm: np.ndarray | list[list[int]], class_names: Sequence[str], path: PathLike, *, normalize: bool = False
) -> Path:
    """Confusion matrix (rows: true class, columns: predicted class) with counts in each cell.

    Args:
        cm: (K, K) counts.
        class_names: one name per class.
        path: where to write the PNG.
        normalize: colour by the fraction of each true class (row) and show it beside the count.

    Returns:
        ``path``.
    """
    counts = np.asarray(cm)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise DataError(f"cm has shape {counts.shape}; expected a square (K, K) confusion matrix.")
    names = _check_class_names(class_names, counts.shape[0])
    k = counts.shape[0]
    if normalize:
        rows = counts.sum(axis=1, keepdims=True)
        values = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    else:
        values = counts.astype(np.float64)
    size = max(4.0, 0.7 * k + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1, size), layout="constrained")
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else max(values.max(), 1))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    threshold = (1 if normalize else max(values.max(), 1)) / 2
    for i in range(k):
        for j in range(k):
            text = f"{values[i, j]:.2f}\n({counts[i, j]})" if normalize else f"{counts[i, j]}"
            color = "white" if values[i, j] > threshold else "black"
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize=9)
    ax.set_xticks(range(k), names, rotation=45 if max(map(len, names)) > 6 else 0, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix" + (" (row-normalised)" if normalize else ""))
    return _save(fig, path)


def plot_roc(y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str], path: PathLike) -> Path:
    """ROC curve: one curve for a binary task, one-vs-rest curves per class otherwise; AUC in the legend.

    Args:
        y_true: class indices (N,).
        probs: class probabilities (N, K).
        class_names: one name per class.
        path: where to write the PNG.

    Returns:
        ``path``.
    """
    y, p = check_inputs(y_true, probs)
    k = p.shape[1]
    names = _check_class_names(class_names, k)
    curves = [(1, names[1])] if k == 2 else list(enumerate(names))
    fig, ax = plt.subplots(figsize=(5.5, 5), layout="constrained")
    drawn = 0
    for (c, name), color in zip(curves, _colors(len(curves)), strict=True):
        positive = y == c
        if positive.all() or not positive.any():
            continue  # a curve needs both positives and negatives
        fpr, tpr, _ = skm.roc_curve(positive, p[:, c])
        ax.plot(fpr, tpr, color=color, label=f"{name} (AUC = {skm.auc(fpr, tpr):.3f})")
        drawn += 1
    if drawn == 0:
        plt.close(fig)
        present = [names[c] for c in np.unique(y)]
        raise DataError(f"y_true holds only the class(es) {present}; a ROC curve needs positives and negatives.")
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"ROC ({names[1]} vs {names[0]})" if k == 2 else "ROC (one-vs-rest)")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def plot_reliability(y_true: np.ndarray, probs: np.ndarray, path: PathLike, *, n_bins: int = 15) -> Path:
    """Reliability diagram of the top-label confidence, with ECE in the title and a confidence histogram below.

    Args:
        y_true: class indices (N,).
        probs: class probabilities (N, K).
        path: where to write the PNG.
        n_bins: number of equal-width confidence bins.

    Returns:
        ``path``.
    """
    bins = reliability_bins(y_true, probs, n_bins=n_bins)
    ece = expected_calibration_error(y_true, probs, n_bins=n_bins)
    width = 1.0 / n_bins
    filled = bins[bins["count"] > 0]
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}, layout="constrained"
    )
    top.bar(filled["bin_low"], filled["accuracy"], width=width, align="edge", edgecolor="black", label="accuracy")
    # The gap bars show by how much confidence over- (above) or under-states (below) accuracy in each bin.
    top.bar(
        filled["bin_low"],
        filled["confidence"] - filled["accuracy"],
        bottom=filled["accuracy"],
        width=width,
        align="edge",
        color="red",
        alpha=0.3,
        hatch="//",
        label="gap to confidence",
    )
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(f"reliability (ECE = {ece:.3f})")
    top.legend(loc="upper left", fontsize="small")
    bottom.bar(bins["bin_low"], bins["count"], width=width, align="edge", color="grey", edgecolor="black")
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("count")
    return _save(fig, path)


def plot_prediction_grid(
    images: np.ndarray,
    y_true: Sequence[int],
    y_pred: Sequence[int],
    confidence: Sequence[float],
    class_names: Sequence[str],
    path: PathLike,
    *,
    overlays: np.ndarray | None = None,
    ncols: int = 5,
) -> Path:
    """A grid of images titled with true and predicted class (green if right, red if wrong).

    Args:
        images: uint8 (N, C, H, W) with C = 1 or 3.
        y_true: true class per image.
        y_pred: predicted class per image.
        confidence: probability of the predicted class per image.
        class_names: one name per class.
        path: where to write the PNG.
        overlays: optional (N, H, W) heatmaps in [0, 1] (e.g. Grad-CAM), drawn over the grayscale image.
        ncols: panels per row.

    Returns:
        ``path``.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise DataError(f"images have shape {images.shape}; expected (N, C, H, W) with C = 1 or 3.")
    if images.dtype != np.uint8:
        raise DataError(f"images have dtype {images.dtype}; pass the raw uint8 images (0-255), not normalised ones.")
    n, _, h, w = images.shape
    if n == 0:
        raise DataError("images is empty; pass at least one image.")
    y_true, y_pred, confidence = np.asarray(y_true), np.asarray(y_pred), np.asarray(confidence, dtype=np.float64)
    for name, values in (("y_true", y_true), ("y_pred", y_pred), ("confidence", confidence)):
        if values.shape != (n,):
            raise DataError(f"{name} has shape {values.shape}; expected ({n},), one value per image.")
    if overlays is not None:
        overlays = np.asarray(overlays, dtype=np.float64)
        if overlays.shape != (n, h, w):
            raise DataError(f"overlays have shape {overlays.shape}; expected ({n}, {h}, {w}) to match the images.")
    if ncols < 1:
        raise MedAssistError(f"ncols={ncols}; expected at least 1 panel per row.")
    names = [str(name) for name in class_names]
    for name, values in (("y_true", y_true), ("y_pred", y_pred)):
        bad = values[(values < 0) | (values >= len(names))]
        if bad.size:
            raise DataError(f"{name} contains class {bad[0]}, outside the {len(names)} class_names {names}.")
    cols = min(ncols, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.8 * cols, 2.9 * rows), squeeze=False, layout="constrained")
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i >= n:
            continue
        image = images[i]
        if overlays is not None:
            ax.imshow(image.mean(axis=0), cmap="gray", vmin=0, vmax=255)
            ax.imshow(overlays[i], cmap="jet", alpha=0.45, vmin=0, vmax=1)
        elif image.shape[0] == 1:
            ax.imshow(image[0], cmap="gray", vmin=0, vmax=255)
        else:
            ax.imshow(image.transpose(1, 2, 0))  # (H, W, 3)
        right = y_true[i] == y_pred[i]
        title = f"true: {names[y_true[i]]} / pred: {names[y_pred[i]]} (p={confidence[i]:.2f})"
        ax.set_title(title, color="green" if right else "red", fontsize=7)
    return _save(fig, path)


def plot_bar(
    df: pd.DataFrame,
    x: str,
    y: str,
    path: PathLike,
    *,
    yerr_low: str | None = None,
    yerr_high: str | None = None,
    title: str = "",
) -> Path:
    """Bars comparing runs or settings, with optional confidence-interval error bars.

    Args:
        df: one row per bar.
        x: column with the bar labels.
        y: column with the bar heights.
        path: where to write the PNG.
        yerr_low: column with the lower bound of each interval (an absolute value, e.g. ``ci_low``).
        yerr_high: column with the upper bound of each interval.
        title: figure title.

    Returns:
        ``path``.
    """
    if (yerr_low is None) != (yerr_high is None):
        raise MedAssistError(
            f"yerr_low={yerr_low!r} and yerr_high={yerr_high!r}; give both interval columns or neither."
        )
    _require_columns(df, [c for c in (x, y, yerr_low, yerr_high) if c is not None], "the bar table")
    if df.empty:
        raise DataError("the bar table has no rows; pass at least one bar.")
    heights = df[y].to_numpy(dtype=np.float64)
    yerr = None
    if yerr_low is not None and yerr_high is not None:
        low, high = df[yerr_low].to_numpy(dtype=np.float64), df[yerr_high].to_numpy(dtype=np.float64)
        yerr = np.nan_to_num(np.clip(np.vstack([heights - low, high - heights]), 0, None))  # (2, n) distances
    labels = df[x].astype(str).tolist()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(labels) + 2), 4), layout="constrained")
    positions = np.arange(len(labels))
    bars = ax.bar(positions, heights, yerr=yerr, capsize=4, color=_colors(len(labels)), edgecolor="black")
    # Inside the bars, so the values never collide with the error-bar caps above them.
    ax.bar_label(bars, labels=[f"{v:.3f}" for v in heights], label_type="center", fontsize=8)
    long_labels = len(labels) > 4 or max(map(len, labels)) > 10
    ax.set_xticks(positions, labels, rotation=30 if long_labels else 0, ha="right" if long_labels else "center")
    ax.set_ylabel(y)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_gradient_norms(norms: pd.DataFrame, path: PathLike) -> Path:
    """Per-layer gradient norm (mean over the steps of an epoch) against epoch, log scale.

    ``norms`` has columns epoch, layer, grad_norm (the engine's ``grad_norms`` output).
    """
    _require_columns(norms, ["epoch", "layer", "grad_norm"], "gradient norms")
    layers = list(dict.fromkeys(norms["layer"]))
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    for color, layer in zip(_colors(len(layers)), layers, strict=True):
        d = norms[norms["layer"] == layer]
        ax.plot(d["epoch"], d["grad_norm"], marker="o", ms=3, color=color, label=layer)
    ax.set(xlabel="epoch", ylabel="gradient norm (mean per step)", yscale="log", title="Gradient norm per layer")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_hidden_gradients(df: pd.DataFrame, path: PathLike) -> Path:
    """||dL/dh_t|| against time step t, one line per column other than ``t``, log scale."""
    _require_columns(df, ["t"], "hidden-state gradients")
    cols = [c for c in df.columns if c != "t"]
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    for color, col in zip(_colors(len(cols)), cols, strict=True):
        ax.plot(df["t"], df[col], color=color, label=col)
    ax.set(
        xlabel="time step t (token position)",
        ylabel="||dL/dh_t|| (mean over reports)",
        yscale="log",
        title="How the loss gradient reaches each hidden state",
    )
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_tradeoff(df: pd.DataFrame, path: PathLike, *, highlight: str = "") -> Path:
    """Size against batch-1 latency of deployment variants (log scales), labelled with their test accuracy.

    Args:
        df: one row per variant with ``variant``, ``size_mb``, ``latency_b1_median_ms`` and ``test_accuracy``.
        path: where to write the PNG.
        highlight: the variant to mark (the one shipped).
    """
    _require_columns(df, ["variant", "size_mb", "latency_b1_median_ms", "test_accuracy"], "the variant table")
    if df.empty:
        raise DataError("the variant table has no rows")
    fig, ax = plt.subplots(figsize=(8, 5.5), layout="constrained")
    colors = _colors(len(df))
    for i, r in enumerate(df.itertuples(index=False)):
        chosen = r.variant == highlight
        ax.scatter(
            r.size_mb,
            r.latency_b1_median_ms,
            s=140 if chosen else 60,
            color=colors[i],
            edgecolor="black",
            linewidth=2 if chosen else 0.5,
            marker="*" if chosen else "o",
            zorder=3,
            label=f"{r.variant} (acc {r.test_accuracy:.3f})" + (" [shipped]" if chosen else ""),
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("file size (MB, log scale)")
    ax.set_ylabel("latency at batch 1, median (ms, log scale)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def plot_trials(curves: pd.DataFrame, metric: str, path: PathLike, *, best: str = "") -> Path:
    """A sweep's validation curves, one line per trial (``curves``: trial, epoch, ``metric``); ``best`` in bold.

    A trial that a scheduler stopped early ends where its line ends."""
    _require_columns(curves, ["trial", "epoch", metric], "the sweep's curves")
    trials = list(dict.fromkeys(curves["trial"]))
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, color in zip(trials, _colors(len(trials)), strict=True):
        part = curves[curves["trial"] == name].sort_values("epoch")
        is_best = name == best
        ax.plot(
            part["epoch"],
            part[metric],
            color="black" if is_best else color,
            lw=2.4 if is_best else 1.0,
            alpha=1.0 if is_best else 0.6,
            marker="o",
            ms=3,
            label=f"{name} (best)" if is_best else None,
            zorder=3 if is_best else 2,
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(f"{len(trials)} trials: {metric.replace('_', ' ')} per epoch")
    if best:
        ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)
