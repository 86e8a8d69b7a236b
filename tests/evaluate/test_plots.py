"""Each plot function writes a PNG and closes its figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from medassist.errors import DataError
from medassist.evaluate import (
    plot_bar,
    plot_confusion_matrix,
    plot_learning_curves,
    plot_prediction_grid,
    plot_reliability,
    plot_roc,
    plot_size_curve,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path) -> None:
    data = path.read_bytes()
    assert len(data) > 1000 and data.startswith(PNG_MAGIC)
    assert not plt.get_fignums(), "the figure was left open"


def predictions(n: int, k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.5
    return y, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def history(epochs: int, offset: float) -> pd.DataFrame:
    epoch = np.arange(1, epochs + 1)
    return pd.DataFrame(
        {
            "epoch": epoch,
            "train_loss": 1 / epoch + offset,
            "val_loss": 1.2 / epoch + offset,
            "train_accuracy": 1 - 0.5 / epoch,
            "val_accuracy": 0.9 - 0.5 / epoch,
            "val_auc": 0.95 - 0.3 / epoch,
            "lr": 1e-3,
            "epoch_time": 0.5,
        }
    )


def test_plot_learning_curves(tmp_path):
    histories = {"small": history(5, 0.1), "large": history(8, 0.0).drop(columns=["train_accuracy"])}
    path = plot_learning_curves(histories, tmp_path / "nested" / "curves.png", metrics=("loss", "accuracy", "auc"))
    assert path == tmp_path / "nested" / "curves.png"
    assert_png(path)


def test_plot_learning_curves_without_any_requested_metric(tmp_path):
    with pytest.raises(DataError, match="f1"):
        plot_learning_curves({"run": history(3, 0.0)}, tmp_path / "x.png", metrics=("f1",))
    assert not (tmp_path / "x.png").exists()


def test_plot_size_curve(tmp_path):
    df = pd.DataFrame(
        {
            "fraction": [0.1, 0.25, 0.5, 1.0],
            "n_train": [100, 250, 500, 1000],
            "train_accuracy": [1.0, 0.98, 0.95, 0.93],
            "val_accuracy": [0.7, 0.8, 0.85, 0.88],
        }
    )
    assert_png(plot_size_curve(df, tmp_path / "size.png"))
    with pytest.raises(DataError, match="val_auc"):
        plot_size_curve(df, tmp_path / "size_auc.png", metric="auc")


@pytest.mark.parametrize("normalize", [False, True])
def test_plot_confusion_matrix(tmp_path, normalize):
    cm = [[50, 3, 0], [4, 40, 6], [0, 0, 0]]  # an empty row must not break normalisation
    assert_png(plot_confusion_matrix(cm, ["normal", "benign", "malignant"], tmp_path / "cm.png", normalize=normalize))


@pytest.mark.parametrize("k", [2, 3])
def test_plot_roc(tmp_path, k):
    y, probs = predictions(120, k)
    assert_png(plot_roc(y, probs, [f"c{i}" for i in range(k)], tmp_path / "roc.png"))


def test_plot_reliability(tmp_path):
    y, probs = predictions(200, 3)
    assert_png(plot_reliability(y, probs, tmp_path / "reliability.png", n_bins=10))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("with_overlays", [False, True])
def test_plot_prediction_grid(tmp_path, channels, with_overlays):
    rng = np.random.default_rng(0)
    n = 7  # not a multiple of ncols: the spare panels stay blank
    images = rng.integers(0, 256, size=(n, channels, 16, 16), dtype=np.uint8)
    y_true = rng.integers(0, 2, n)
    y_pred = np.where(rng.random(n) < 0.7, y_true, 1 - y_true)
    overlays = rng.random((n, 16, 16)) if with_overlays else None
    path = plot_prediction_grid(
        images, y_true, y_pred, rng.random(n), ["normal", "pneumonia"], tmp_path / "grid.png", overlays=overlays
    )
    assert_png(path)


def test_plot_prediction_grid_rejects_mismatched_overlays(tmp_path):
    images = np.zeros((2, 1, 8, 8), dtype=np.uint8)
    with pytest.raises(DataError, match=r"overlays have shape \(2, 4, 4\)"):
        plot_prediction_grid(
            images, [0, 1], [0, 0], [0.9, 0.6], ["a", "b"], tmp_path / "g.png", overlays=np.zeros((2, 4, 4))
        )


def test_plot_bar(tmp_path):
    df = pd.DataFrame(
        {
            "model": ["cnn", "resnet18", "efficientnet"],
            "auc": [0.9, 0.93, 0.94],
            "lo": [0.87, 0.9, 0.92],
            "hi": [0.92, 0.95, 0.96],
        }
    )
    assert_png(plot_bar(df, "model", "auc", tmp_path / "bar.png", yerr_low="lo", yerr_high="hi", title="test AUC"))
    assert_png(plot_bar(df, "model", "auc", tmp_path / "bar_plain.png"))
    with pytest.raises(DataError, match="ci_low"):
        plot_bar(df, "model", "auc", tmp_path / "bad.png", yerr_low="ci_low", yerr_high="hi")
