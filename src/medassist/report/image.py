"""The image study's report: reads the run folder's files and nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from medassist.report.analysis import image_analysis
from medassist.report.html import markdown_to_html
from medassist.utils.io import atomic_write_text


def _table(run_dir: Path, name: str) -> str:
    path = run_dir / "tables" / f"{name}.md"
    return path.read_text() if path.is_file() else "_not computed in this run_\n"


def _fig(run_dir: Path, name: str, caption: str) -> str:
    rel = f"figures/{name}.png"
    return f"![{caption}]({rel})\n\n*{caption}*\n" if (run_dir / rel).is_file() else ""


def _cols(run_dir: Path, name: str, cols: list[str]) -> str:
    """A table restricted to the columns a reader needs (the CSV keeps them all)."""
    path = run_dir / "tables" / f"{name}.csv"
    if not path.is_file():
        return "_not computed in this run_\n"
    from medassist.run import markdown_table

    df = pd.read_csv(path)
    return markdown_table(df[[c for c in cols if c in df.columns]])


def build_image_report(run_dir: str | Path) -> str:
    """The Markdown report of an image study run folder."""
    run_dir = Path(run_dir)
    m = json.loads((run_dir / "metrics.json").read_text())
    data = json.loads((run_dir / "data.json").read_text())
    y_val = _val_labels(run_dir)
    sel = m["selected"]
    h = sel["headline"]
    status = json.loads((run_dir / "status.json").read_text()) if (run_dir / "status.json").is_file() else {}
    sizes = data["sizes"]
    counts = data["class_counts"]
    lines = [
        f"# Image study: {data['name']}",
        "",
        f"Run folder `{run_dir.name}`, started {status.get('started', '?')}. Classes: "
        + ", ".join(f"{i} = {c}" for i, c in enumerate(data["class_names"]))
        + f". Splits: train {sizes['train']} ({counts['train']}), validation {sizes['val']} ({counts['val']}), "
        f"test {sizes['test']} ({counts['test']}). Every choice below was made on the validation split; the test "
        "split was evaluated only for reporting.",
        "",
        "## Analysis",
        "",
        image_analysis(m, data, run_dir, y_val),
        "",
        "## Headline: the selected model on the test set",
        "",
        f"Selected: **{sel['label']}** (validation AUC {sel['val_auc']:.4f}). 95% percentile bootstrap intervals.",
        "",
        "| metric | value | 95% CI |",
        "|---|---|---|",
        *[f"| {k} | {v['value']:.4f} | {v['ci_low']:.4f} - {v['ci_high']:.4f} |" for k, v in h.items()],
        "",
        "Per class:",
        "",
        _table(run_dir, "test_per_class"),
        _fig(run_dir, "confusion_matrix", "Confusion matrix (test)"),
        _fig(run_dir, "roc", "ROC curve (test)"),
        _fig(run_dir, "reliability", "Reliability diagram (test); ECE in the title"),
        "## Capacity and bias-variance",
        "",
        "All models trained with the same recipe; train metrics are measured in eval mode at the best epoch.",
        "",
        _cols(
            run_dir,
            "capacity",
            [
                "model",
                "params",
                "best_epoch",
                "epochs_run",
                "train_time_s",
                "train_loss",
                "val_loss",
                "train_accuracy",
                "val_accuracy",
                "val_auc",
                "gap_accuracy",
                "stopped_by",
            ],
        ),
        _fig(run_dir, "capacity_curves", "Learning curves: train (solid) and validation (dashed) loss and accuracy"),
        f"Chosen architecture (best validation AUC): **{m['chosen_architecture']}**. Diagnosis: "
        f"**{m['diagnosis']['label']}**.",
        "",
        f"Rule: {m['diagnosis_rule']}.",
        "",
        "### Learning curve over training-set size",
        "",
        "Each subset is a class-stratified random draw, trained for the same number of optimisation steps as the "
        "full set.",
        "",
        _table(run_dir, "size_curve"),
        _fig(run_dir, "size_curve", "Train and validation accuracy against the number of training images"),
        "## Regularisation ablation",
        "",
        f"On {m['chosen_architecture']}. Validation chooses; test columns are reported only.",
        "",
        _cols(
            run_dir,
            "ablation",
            [
                "regularisation",
                "best_epoch",
                "epochs_run",
                "train_accuracy",
                "val_accuracy",
                "val_auc",
                "gap_accuracy",
                "test_accuracy",
                "test_auc",
                "test_macro_f1",
            ],
        ),
        _fig(run_dir, "ablation_curves", "Ablation curves: loss and AUC"),
        "## Transfer learning (EfficientNet-Lite0, ImageNet weights)",
        "",
        _cols(
            run_dir,
            "transfer",
            [
                "mode",
                "params",
                "trainable_params",
                "best_epoch",
                "epochs_run",
                "train_time_s",
                "train_accuracy",
                "val_accuracy",
                "val_auc",
                "test_accuracy",
                "test_auc",
            ],
        ),
        _fig(run_dir, "transfer_curves", "Transfer learning curves"),
        "## Example predictions and Grad-CAM",
        "",
        _fig(run_dir, "predictions", "Ten test images (seeded draw): true label, predicted label, confidence"),
        f"Grad-CAM: {sel['gradcam']}.",
        "",
        _fig(run_dir, "gradcam", "Grad-CAM of the predicted class over the same images"),
    ]
    return "\n".join(lines) + "\n"


def _val_labels(run_dir: Path) -> np.ndarray | None:
    path = run_dir / "tables" / "val_labels.csv"
    return pd.read_csv(path)["y_true"].to_numpy() if path.is_file() else None


def write_image_report(run_dir: str | Path) -> Path:
    """Write report.md and report.html into the run folder."""
    run_dir = Path(run_dir)
    text = build_image_report(run_dir)
    atomic_write_text(run_dir / "report.md", text)
    atomic_write_text(run_dir / "report.html", markdown_to_html(text, base_dir=run_dir, title=run_dir.name))
    return run_dir / "report.md"
