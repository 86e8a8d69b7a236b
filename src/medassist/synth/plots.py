"""The study's figures: sample grids per class, VAE reconstructions, training curves, closest pairs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from medassist.evaluate.plots import _save  # noqa: E402


def _show(ax: plt.Axes, image: np.ndarray) -> None:
    ax.axis("off")
    if image.shape[0] == 1:
        ax.imshow(image[0], cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(image.transpose(1, 2, 0))


def plot_sample_grid(rows: Sequence[np.ndarray], row_names: Sequence[str], path: Path, *, title: str) -> Path:
    """One row of uint8 (N, C, H, W) images per class."""
    ncols = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(1.1 * ncols, 1.25 * len(rows) + 0.4), squeeze=False)
    for i, (images, name) in enumerate(zip(rows, row_names, strict=True)):
        for j in range(ncols):
            ax = axes[i, j]
            ax.axis("off")
            if j < len(images):
                _show(ax, images[j])
        axes[i, 0].set_title(name, fontsize=8, loc="left")
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def plot_pairs(top: np.ndarray, bottom: np.ndarray, labels: Sequence[str], path: Path, *, title: str) -> Path:
    """Two aligned rows: e.g. originals above their reconstructions, or synthetic images above their closest
    training images; ``labels`` titles each column."""
    n = len(top)
    fig, axes = plt.subplots(2, n, figsize=(1.2 * n, 2.9), squeeze=False)
    for j in range(n):
        _show(axes[0, j], top[j])
        _show(axes[1, j], bottom[j])
        axes[0, j].set_title(labels[j], fontsize=6)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def plot_curves(history: pd.DataFrame, panels: Sequence[tuple[str, Sequence[str]]], path: Path, *, title: str) -> Path:
    """One panel per (title, columns) of a generator's history, against the epoch."""
    panels = [(t, [c for c in cols if c in history.columns]) for t, cols in panels]
    panels = [(t, cols) for t, cols in panels if cols]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.0), squeeze=False, layout="constrained")
    for ax, (name, cols) in zip(axes[0], panels, strict=True):
        for c in cols:
            ax.plot(history["epoch"], history[c], marker="o", ms=3, label=c)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
