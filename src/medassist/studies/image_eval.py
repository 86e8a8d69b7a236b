"""Test evaluation of the image study's selected model: metrics with 95% bootstrap intervals, confusion matrix,
ROC, calibration, example predictions and Grad-CAM. Runs once, after every choice has been made."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file

from medassist.data.types import ImageData
from medassist.models import create_model
from medassist.run import Run
from medassist.studies.image_config import ImageStudyConfig
from medassist.studies.units import UnitResult
from medassist.train import predict_proba, to_tensor


def evaluate_selected(
    run: Run,
    cfg: ImageStudyConfig,
    data: ImageData,
    label: str,
    unit: UnitResult,
    others: list[tuple[str, UnitResult]] = (),
) -> dict[str, Any]:
    """Evaluate the selected model on the test split; write figures, tables and the model; return the numbers.

    ``others`` are the remaining candidates, best first: when the selected model has no convolution (the MLP),
    Grad-CAM is drawn for the best convolutional one instead, and the report says so.
    """
    from medassist.evaluate import (
        classification_metrics,
        headline_metrics_with_ci,
        plot_confusion_matrix,
        plot_prediction_grid,
        plot_reliability,
        plot_roc,
        reliability_bins,
    )

    test = data.splits["test"]
    names = data.class_names
    model = _load_unit(run, data, unit)
    probs = predict_proba(model, test.images)
    y = test.labels.reshape(-1)
    report = classification_metrics(y, probs, class_names=names)
    headline = headline_metrics_with_ci(y, probs, n_boot=cfg.n_boot, seed=cfg.train.seed)

    per_class = pd.DataFrame([{"class": c, **report["per_class"][c]} for c in names])
    run.write_table("test_per_class", per_class)
    run.write_table(
        "test_headline",
        pd.DataFrame(
            [
                {"metric": k, "value": v["value"], "ci95_low": v["ci_low"], "ci95_high": v["ci_high"]}
                for k, v in headline.items()
            ]
        ),
    )
    run.write_table("reliability", reliability_bins(y, probs))
    _save_predictions(run, data, unit, probs)
    pd.DataFrame({"y_true": y, **{f"p_{c}": probs[:, i] for i, c in enumerate(names)}}).to_csv(
        run.path("tables/test_predictions.csv"), index=False
    )
    plot_confusion_matrix(np.asarray(report["confusion_matrix"]), names, run.figure("confusion_matrix"))
    plot_roc(y, probs, names, run.figure("roc"))
    plot_reliability(y, probs, run.figure("reliability"))

    # Ten test images drawn at random (seeded), with predictions and Grad-CAM of the predicted class.
    rng = np.random.default_rng(cfg.train.seed)
    idx = np.sort(rng.choice(len(test), min(cfg.n_examples, len(test)), replace=False))
    pred, conf = probs.argmax(1), probs.max(1)
    plot_prediction_grid(test.images[idx], y[idx], pred[idx], conf[idx], names, run.figure("predictions"))
    gradcam_note = _gradcam(run, data, [(label, unit), *others], test.images[idx], y[idx], names)

    run.save_model(
        model,
        {
            "model": unit.model,
            "model_kwargs": unit.model_kwargs,
            "num_classes": data.num_classes,
            "in_channels": data.n_channels,
            "image_size": data.image_size,
            "class_names": names,
            "normalisation": {"scale": 1 / 255, "mean": 0.5, "std": 0.5},
            "selected_as": label,
            "unit": unit.name,
        },
    )
    return {
        "label": label,
        "unit": unit.name,
        "model": unit.model,
        "model_kwargs": unit.model_kwargs,
        "val_auc": unit.val["auc"],
        "val_accuracy": unit.val["accuracy"],
        "headline": headline,
        "metrics": report,
        "gradcam": gradcam_note,
        "example_indices": idx.tolist(),
    }


def _save_predictions(run: Run, data: ImageData, unit: UnitResult, test_probs: np.ndarray) -> None:
    """The selected model's validation and test probabilities with the splits' metadata (sex, age, site, ... of a
    user's CSV; file paths are left out), for an audit that does not retrain."""
    from medassist.studies.predictions import write_predictions

    val, test = data.splits["val"], data.splits["test"]
    write_predictions(
        run,
        task="multi-class",
        label_names=data.class_names,
        splits={
            "val": (val.labels.reshape(-1), np.load(run.dir / "units" / unit.name / "val_probs.npy"), val.metadata),
            "test": (test.labels.reshape(-1), test_probs, test.metadata),
        },
        model=unit.name,
        kind="image",
        extra={
            "dataset": data.name,
            "unit": {
                "name": unit.name,
                "model": unit.model,
                "model_kwargs": unit.model_kwargs,
                "config": unit.extra.get("config"),
            },
        },
    )


def _load_unit(run: Run, data: ImageData, unit: UnitResult) -> torch.nn.Module:
    model = create_model(unit.model, num_classes=data.num_classes, in_channels=data.n_channels, **unit.model_kwargs)
    model.load_state_dict(load_file(str(run.dir / "units" / unit.name / "best.safetensors")))
    return model.eval()


def _gradcam(
    run: Run,
    data: ImageData,
    candidates: list[tuple[str, UnitResult]],
    images: np.ndarray,
    y: np.ndarray,
    names: list[str],
) -> str:
    """Grad-CAM of the predicted class for the first candidate that has a convolutional layer."""
    from medassist.evaluate import plot_prediction_grid
    from medassist.explain import find_last_conv, grad_cam

    for i, (label, unit) in enumerate(candidates):
        model = _load_unit(run, data, unit)
        try:
            layer_name, layer = find_last_conv(model)
        except Exception:  # noqa: BLE001 - a model without convolutions (the MLP) has no Grad-CAM
            continue
        probs = predict_proba(model, images)
        pred, conf = probs.argmax(1), probs.max(1)
        maps = grad_cam(model, layer, to_tensor(images), torch.as_tensor(pred))
        plot_prediction_grid(images, y, pred, conf, names, run.figure("gradcam"), overlays=maps)
        note = f"Grad-CAM of the predicted class at layer '{layer_name}' (captum LayerGradCam, relu_attributions=True)"
        if i > 0:
            note += (
                f"; drawn for {label}, the best validation candidate with convolutions, because the selected "
                f"model has none (its own predictions are in the grid above)"
            )
        return note
    return "not drawn: no candidate model has a convolutional layer"
