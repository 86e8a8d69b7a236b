"""The image study's report: reads the run folder's files and nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from medassist.report.analysis import image_analysis
from medassist.report.html import write_report
from medassist.utils.format import computed_on, fmt_ci, fmt_int, fmt_metric, readable_header, readable_table

NOT_COMPUTED = "_not computed in this run_\n"

# Column titles for people; a column not listed gets readable_header(name).
HEADERS = {
    "params": "parameters",
    "trainable_params": "trainable parameters",
    "n_train": "training images",
    "fraction": "share of training set",
    "best_epoch": "best epoch",
    "epochs_run": "epochs run",
    "stopped_by": "stopped by",
    "planned_epochs": "planned epochs",
    "batch_size": "batch",
    "training": "training",
    "val_auc_vs_best": "val AUC - best",
    "gap_accuracy": "gap (train - val accuracy)",
    "train_accuracy": "train accuracy",
    "val_accuracy": "val accuracy",
    "test_accuracy": "test accuracy",
}


def _headers(cols: list[str]) -> dict[str, str]:
    return {c: HEADERS.get(c) or readable_header(c) for c in cols}


def _csv(run_dir: Path, name: str) -> pd.DataFrame | None:
    path = run_dir / "tables" / f"{name}.csv"
    return pd.read_csv(path) if path.is_file() else None


def _table(run_dir: Path, name: str) -> str:
    """A whole table of the run, formatted for people (from its CSV; the Markdown of older runs otherwise)."""
    df = _csv(run_dir, name)
    if df is not None:
        return readable_table(df, headers=_headers(list(df.columns)))
    path = run_dir / "tables" / f"{name}.md"
    return path.read_text() if path.is_file() else NOT_COMPUTED


def _fig(run_dir: Path, name: str, caption: str) -> str:
    rel = f"figures/{name}.png"
    return f"![{caption}]({rel})\n\n*{caption}*\n" if (run_dir / rel).is_file() else ""


def _cols(
    run_dir: Path, name: str, cols: list[str], *, headers: dict[str, str] | None = None, note: bool = False
) -> str:
    """A table restricted to the columns a reader needs, formatted for people (the CSV keeps them all, at full
    precision; ``note`` says so under the table). Wider than MAX_COLUMNS, it is split, the first column repeated."""
    df = _csv(run_dir, name)
    if df is None:
        return NOT_COMPUTED
    text = readable_table(df[[c for c in cols if c in df.columns]], headers=headers)
    return text + (_full_csv(name) if note else "")


def _full_csv(name: str) -> str:
    return f"\nEvery column, at full precision: `tables/{name}.csv`.\n"


def _parts(run_dir: Path, name: str, parts: list[tuple[str, list[str]]]) -> str:
    """A table shown as several narrower ones, one per concern (``(caption, columns)``; the first column of each
    is the row's name), followed by where the full table is."""
    df = _csv(run_dir, name)
    if df is None:
        return NOT_COMPUTED
    out = []
    for caption, cols in parts:
        cols = [c for c in cols if c in df.columns]
        if len(cols) > 1:
            out += [f"{caption}:", "", readable_table(df[cols], headers=_headers(cols))]
    return "\n".join(out) + _full_csv(name)


def _splits(data: dict) -> str:
    names = data["class_names"]
    counts = data["class_counts"]

    def one(split: str) -> str:
        per = ", ".join(f"{c} {fmt_int(n)}" for c, n in zip(names, counts[split], strict=True))
        return f"{fmt_int(data['sizes'][split])} ({per})"

    skipped = (data.get("info") or {}).get("skipped_bad_files", 0)
    left_out = (
        f" ({fmt_int(skipped)} unreadable image file{'s' if skipped != 1 else ''} left out by --skip-bad-files)"
        if skipped
        else ""
    )
    mixed = (data.get("info") or {}).get("mixed_channels")
    if mixed:
        left_out += (
            f"; the files mix {fmt_int(mixed['grayscale'])} grayscale and {fmt_int(mixed['colour'])} colour images, "
            f"all converted to {'RGB' if mixed['converted_to'] == 3 else 'grayscale'} (--channels chooses)"
        )
    return f"train {one('train')}, validation {one('val')}, test {one('test')}{left_out}"


def _headline(h: dict) -> list[str]:
    return [
        "| metric | value | 95% CI |",
        "|---|---|---|",
        *[
            f"| {readable_header(k)} | {fmt_metric(v['value'])} | {fmt_ci(v['ci_low'], v['ci_high'])} |"
            for k, v in h.items()
        ],
    ]


def build_image_report(run_dir: str | Path) -> str:
    """The Markdown report of an image study run folder."""
    run_dir = Path(run_dir)
    m = json.loads((run_dir / "metrics.json").read_text())
    data = json.loads((run_dir / "data.json").read_text())
    y_val = _val_labels(run_dir)
    sel = m["selected"]
    h = sel["headline"]
    status = json.loads((run_dir / "status.json").read_text()) if (run_dir / "status.json").is_file() else {}
    lines = [
        f"# Image study: {data['name']}",
        "",
        f"Run folder `{run_dir.name}`, started {status.get('started', '?')}. Classes: "
        + ", ".join(f"{i} = {c}" for i, c in enumerate(data["class_names"]))
        + f". Splits: {_splits(data)}. Every choice below was made on the validation split; the test split was "
        "evaluated only for reporting. Tables show rounded numbers; `tables/*.csv` keep every column at full "
        "precision. " + computed_on(m),
        "",
        "## Analysis",
        "",
        image_analysis(m, data, run_dir, y_val),
        "",
        "## Headline: the selected model on the test set",
        "",
        f"Selected: **{sel['label']}** (validation AUC {fmt_metric(sel['val_auc'])}). 95% percentile bootstrap "
        "intervals.",
        "",
        *_headline(h),
        "",
        "Per class:",
        "",
        _table(run_dir, "test_per_class"),
        _fig(run_dir, "confusion_matrix", "Confusion matrix (test)"),
        _fig(run_dir, "roc", "ROC curve (test)"),
        _fig(run_dir, "reliability", "Reliability diagram (test); ECE in the title"),
        "## Capacity and bias-variance",
        "",
        _recipe_line(m, data),
        "",
        _parts(
            run_dir,
            "capacity",
            [
                (
                    "Size and training",
                    [
                        "model",
                        "params",
                        "batch_size",
                        "planned_epochs",
                        "epochs_run",
                        "best_epoch",
                        "train_time_s",
                        "stopped_by",
                        "training",
                    ],
                ),
                (
                    "Fit",
                    ["model", "train_loss", "val_loss", "train_accuracy", "val_accuracy", "val_auc", "gap_accuracy"],
                ),
                ("Against the best (validation AUC, paired bootstrap)", ["model", "val_auc", "val_auc_vs_best"]),
            ],
        ),
        _fig(run_dir, "capacity_curves", "Learning curves: train (solid) and validation (dashed) loss and accuracy"),
        f"Chosen architecture: **{m['chosen_architecture']}**"
        + (f" ({m['choice_rule']})" if m.get("choice_rule") else " (best validation AUC)")
        + f". Diagnosis: **{m['diagnosis']['label']}**.",
        "",
        f"Rule: {m['diagnosis_rule']}.",
        "",
        *_training_rules(m),
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
        _parts(
            run_dir,
            "ablation",
            [
                (
                    "Validation (chooses)",
                    [
                        "regularisation",
                        "best_epoch",
                        "epochs_run",
                        "train_accuracy",
                        "val_accuracy",
                        "val_auc",
                        "gap_accuracy",
                        "training",
                    ],
                ),
                ("Test (reported only)", ["regularisation", "test_accuracy", "test_auc", "test_macro_f1"]),
            ],
        ),
        _fig(run_dir, "ablation_curves", "Ablation curves: loss and AUC"),
        "## Transfer learning (EfficientNet-Lite0, ImageNet weights)",
        "",
        _parts(
            run_dir,
            "transfer",
            [
                (
                    "Size and training",
                    [
                        "mode",
                        "params",
                        "trainable_params",
                        "batch_size",
                        "best_epoch",
                        "epochs_run",
                        "train_time_s",
                        "training",
                    ],
                ),
                (
                    "Accuracy (validation chooses; test reported only)",
                    ["mode", "train_accuracy", "val_accuracy", "val_auc", "test_accuracy", "test_auc"],
                ),
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


def _recipe_line(m: dict, data: dict) -> str:
    """How the capacity models were trained, and what a subsampled training set gave up."""
    text = (
        "Every model trained with the same recipe, for the same epochs at the same batch (the table's planned "
        "epochs); train metrics are measured in eval mode at the best epoch."
    )
    full = m.get("train_subsample")
    if full:
        text += (
            f" This profile trained on {fmt_int(data['sizes']['train'])} of the {fmt_int(full)} training images (a "
            "class-stratified draw), so that every model, ResNet-50 included, got the same epochs in minutes; the "
            "full profile trains on all of them."
        )
    return text


def _training_rules(m: dict) -> list[str]:
    rules = m.get("training_rules")
    if not rules:
        return []
    return [
        f"Marked in every table and legend: {rules['under_trained']}; {rules['at_chance']}. No conclusion about "
        "capacity, regularisation or transfer rests on a model so marked.",
        "",
    ]


def _val_labels(run_dir: Path) -> np.ndarray | None:
    path = run_dir / "tables" / "val_labels.csv"
    return pd.read_csv(path)["y_true"].to_numpy() if path.is_file() else None


def write_image_report(run_dir: str | Path) -> Path:
    """Write report.md and report.html into the run folder."""
    run_dir = Path(run_dir)
    return write_report(run_dir, build_image_report(run_dir), title=run_dir.name)
