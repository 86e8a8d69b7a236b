"""The text study's report: reads the run folder's files and nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from medassist.report.html import write_report
from medassist.report.image import _cols, _fig
from medassist.report.text_analysis import baseline_verdict, text_explanation
from medassist.utils.format import computed_on, fmt_value_ci, readable_table

# Column titles of the text report's tables.
HEADERS = {
    "model": "model",
    "params": "parameters",
    "train_time_s": "train time (s)",
    "epochs_run": "epochs",
    "stopped_by": "stopped by",
    "planned_epochs": "planned epochs",
    "batch_size": "batch",
    "infer_ms_batch1": "ms/report, batch 1",
    "infer_ms_per_report_b64": "ms/report, batch 64",
    "train_macro_f1": "train macro-F1",
    "val_macro_f1": "val macro-F1",
    "gap_macro_f1": "gap (train - val)",
    "test_macro_f1": "macro-F1 at 0.5",
    "test_macro_f1_t": "macro-F1 at val thresholds",
    "test_micro_f1": "micro-F1 at 0.5",
    "test_micro_f1_t": "micro-F1 at val thresholds",
    "test_macro_auc": "macro-AUC",
    "test_accuracy": "accuracy",
}


def _task(m: dict) -> str:
    return m.get("task", "multi-label")


def _test_table(df: pd.DataFrame, task: str) -> str:
    """Test metrics with their 95% intervals, one row per model."""
    if task == "multi-label":
        metrics = ["test_macro_f1", "test_macro_f1_t", "test_micro_f1", "test_micro_f1_t", "test_macro_auc"]
    else:
        metrics = ["test_accuracy", "test_macro_f1", "test_macro_auc"]
    cols = ["model", *[c + sfx for c in metrics for sfx in ("", "_lo", "_hi") if c + sfx in df.columns]]
    return readable_table(df[cols], headers=HEADERS, max_columns=None)


def _cost_table(df: pd.DataFrame) -> str:
    cols = [
        "model",
        "params",
        "train_time_s",
        "batch_size",
        "planned_epochs",
        "epochs_run",
        "stopped_by",
        "training",
        "infer_ms_batch1",
    ]
    cols += ["infer_ms_per_report_b64", "train_macro_f1", "val_macro_f1", "gap_macro_f1"]
    return readable_table(df[[c for c in cols if c in df.columns]], headers=HEADERS)


def _versus_table(df: pd.DataFrame, task: str) -> str:
    """Each model's paired difference from the tuned TF-IDF baseline on test, and what it means."""
    head = "macro_f1_t" if task == "multi-label" else "macro_f1"
    col = f"vs_tfidf_{head}"
    rows = df[df["model"] != "tfidf_logreg"]
    if col not in rows.columns:
        return ""
    what = "macro-F1 at each model's validation-chosen thresholds" if task == "multi-label" else "macro-F1"
    out = pd.DataFrame(
        {
            "model": rows["model"],
            f"difference in test {what} (model - TF-IDF)": [
                fmt_value_ci(r[col], r[f"{col}_lo"], r[f"{col}_hi"], kind="delta") for _, r in rows.iterrows()
            ],
            "verdict": [baseline_verdict(r, head) for _, r in rows.iterrows()],
        }
    )
    return readable_table(out, max_columns=None)


def _baseline_section(run_dir: Path, m: dict, df: pd.DataFrame) -> list[str]:
    base = df[df["model"] == "tfidf_logreg"].iloc[0]
    grid = run_dir / "tables" / "tfidf_grid.csv"
    lines = [
        "## The TF-IDF baseline, tuned on validation",
        "",
        "TF-IDF + logistic regression fitted for every setting below on the training split; the setting with the "
        f"highest validation macro-F1 was kept: **{base['settings']}**. The test split chose nothing.",
        "",
    ]
    if grid.is_file():
        g = pd.read_csv(grid)
        lines += [readable_table(g, headers=True, kinds={"C": "number"}), ""]
    for model, name, what in (
        (
            "minilm_frozen_lr",
            "frozen_grid",
            "MiniLM's sentence embeddings (the encoder frozen: mean-pooled, normalised, computed once) and a logistic "
            "regression fitted for every setting below on the training split",
        ),
        (
            "ensemble",
            "ensemble_grid",
            "The average of the tuned TF-IDF's and the Transformer's probabilities at every TF-IDF weight below "
            "(thresholds chosen on validation after averaging)",
        ),
    ):
        path, row = run_dir / "tables" / f"{name}.csv", df[df["model"] == model]
        if path.is_file() and len(row):
            lines += [
                f"{what}; the setting with the highest validation macro-F1 was kept: **{row.iloc[0]['settings']}**.",
                "",
                readable_table(pd.read_csv(path), headers=True, kinds={"C": "number"}),
                "",
            ]
    return lines


SEARCH_COMMAND = (
    "medassist tune text --space examples/tune_minilm.yaml --samples 6 --grace-epochs 1 --reduction-factor 3"
)


def _search_section(run_dir: Path, cfg: dict) -> list[str]:
    """How MiniLM's fine-tuning defaults were chosen: the search's trials (shipped with medassist) and this run's
    own settings."""
    path = run_dir / "tables" / "minilm_search.csv"
    if not path.is_file():
        return []
    trials = pd.read_csv(path)
    params = [c for c in trials.columns if c.startswith("param:") and trials[c].nunique() > 1]
    table = trials[["trial", *params, "best_score", "best_epoch", "epochs_run"]].rename(
        columns={c: c.removeprefix("param:").removeprefix("transformer_train.") for c in params}
    )
    t = cfg.get("transformer_train", {})
    this = ", ".join(f"{k} {t.get(k)}" for k in ("lr", "epochs", "warmup", "layer_decay"))
    return [
        "## How MiniLM's fine-tuning settings were chosen",
        "",
        f"The profile's defaults come from a search on Open-i's validation split (`{SEARCH_COMMAND}`, ASHA on Ray "
        "Tune; each trial ranked by its best epoch's validation macro-AUC; the test split read by none). Its trials, "
        f"best first (dropout is the head's). This run trained MiniLM with {this}, head dropout "
        f"{cfg.get('transformer_dropout')}.",
        "",
        readable_table(table, headers=True),
        "",
    ]


def _thresholds_section(run_dir: Path, task: str) -> list[str]:
    path = run_dir / "tables" / "thresholds.csv"
    if task != "multi-label" or not path.is_file():
        return []
    t = pd.read_csv(path)
    t.columns = [c.split("-")[0] if c != "label" else c for c in t.columns]
    return [
        "## Decision thresholds, chosen on validation",
        "",
        "Per label and model, the probability at which a finding is predicted: the one that maximised that label's "
        "F1 on the validation split (0.5 where validation has no positive case). The test metrics above are given "
        "at 0.5 and at these thresholds.",
        "",
        readable_table(t, kinds={c: "metric" for c in t.columns if c != "label"}),
        "",
    ]


def _per_label_section(run_dir: Path, m: dict) -> list[str]:
    if _task(m) == "multi-label":
        return ["## Per-label test AUC", "", _cols(run_dir, "per_label_auc", _columns(run_dir, "per_label_auc")), ""]
    best = m["best_model"]
    return [
        "## Per-class test F1 and one-vs-rest AUC",
        "",
        _cols(run_dir, "per_class", _columns(run_dir, "per_class")),
        "",
        _fig(run_dir, "confusion_matrix", f"Confusion matrix on test of {best}, the best model on validation"),
    ]


def _columns(run_dir: Path, name: str) -> list[str]:
    path = run_dir / "tables" / f"{name}.csv"
    return list(pd.read_csv(path, nrows=0).columns) if path.is_file() else []


# The PadChest authors' own figure for their report labeller (Bustos et al., "PadChest: A large chest x-ray image
# dataset with multi-label annotated reports", Medical Image Analysis 66, 2020): an attention RNN, scored on an
# independent test set of their own, over their full label set.
PADCHEST_REFERENCE = {"model": "PadChest authors' RNN labeller", "micro_f1": 0.93}


def _reference(m: dict, data: dict) -> list[str]:
    """The published PadChest figure beside this run's best model (a section only for PadChest runs)."""
    if data["name"] != "padchest":
        return []
    rows = {r["run"]: r for r in m["comparison"]}
    best = rows[m["best_model"]]
    ref = PADCHEST_REFERENCE
    table = pd.DataFrame(
        [
            {
                "model": f"{best['model']} (this run's best on validation)",
                "test micro-F1": f"{best['test_micro_f1']:.3f} [{best['test_micro_f1_lo']:.3f}, "
                f"{best['test_micro_f1_hi']:.3f}]",
                "test macro-AUC": f"{best['test_macro_auc']:.3f} [{best['test_macro_auc_lo']:.3f}, "
                f"{best['test_macro_auc_hi']:.3f}]",
                "test set": f"{data['sizes']['test']:,} physician-labelled reports, {len(data['label_names'])} labels",
            },
            {
                "model": ref["model"],
                "test micro-F1": f"{ref['micro_f1']:.2f}",
                "test macro-AUC": "not reported",
                "test set": "the authors' independent test set, their full label set",
            },
        ]
    )
    gap = best["test_micro_f1"] - ref["micro_f1"]
    return [
        "## Beside the published PadChest labeller",
        "",
        readable_table(table, max_columns=None),
        f"This run's micro-F1 is {abs(gap):.3f} {'above' if gap >= 0 else 'below'} the published figure. The two are "
        "not measured on the same reports or labels (the published one covers the authors' full label set on their "
        "own test reports), so the comparison places this run beside that figure rather than ranking the two.",
        "",
    ]


def build_text_report(run_dir: str | Path) -> str:
    """The Markdown report of a text study run folder."""
    run_dir = Path(run_dir)
    m = json.loads((run_dir / "metrics.json").read_text())
    data = json.loads((run_dir / "data.json").read_text())
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    task = _task(m)
    what = "labels (multi-label)" if task == "multi-label" else "classes (multi-class, one per report)"
    counts = pd.DataFrame({"label": data["label_names"], **{s: c for s, c in data["label_counts"].items()}})
    comparison = pd.read_csv(run_dir / "tables" / "comparison.csv")
    g = m["gradients"]
    lines = [
        f"# Text study: {data['name']}",
        "",
        f"Run folder `{run_dir.name}`. Splits: "
        + ", ".join(f"{k} {v}" for k, v in data["sizes"].items())
        + f" reports; {len(data['label_names'])} {what}. Every choice was made on the validation "
        "split; the test split was evaluated only for reporting. Intervals are 95% percentile bootstrap intervals. "
        + computed_on(m),
        "",
        "## Explanation",
        "",
        text_explanation(m, data, cfg),
        "",
        "## Comparison (selected run of each model, and the tuned TF-IDF baseline)",
        "",
        "Test metrics of the selected run of each model, with 95% bootstrap intervals:",
        "",
        _test_table(comparison, task),
        "Against the tuned baseline: the paired bootstrap interval of the difference on the same test reports. A "
        "model beats the baseline only when the whole interval is above zero.",
        "",
        _versus_table(comparison, task),
        "Cost and fit (train and validation macro-F1 at 0.5; the gap is the overfitting gap):",
        "",
        _cost_table(comparison),
        _fig(
            run_dir, "curves_best", "Training (solid) and validation (dashed) loss and macro-AUC of the selected runs"
        ),
        *_reference(m, data),
        *_baseline_section(run_dir, m, comparison),
        *_search_section(run_dir, cfg),
        *_thresholds_section(run_dir, task),
        "## Regularisation sweep",
        "",
        "Dropout at three values, weight decay (L2) at three values, and early stopping on validation loss, for both "
        "architectures. The run with the highest validation macro-AUC is selected. A run whose settings equal "
        "another's (the weight-decay run at the base decay) is that run, named in `same_as`.",
        "",
        _cols(
            run_dir,
            "sweep",
            [
                "run",
                "dropout",
                "weight_decay",
                "early_stopping",
                "epochs_run",
                "best_epoch",
                "train_macro_f1",
                "val_macro_f1",
                "gap_macro_f1",
                "val_auc",
                "test_accuracy",
                "test_macro_f1",
                "test_macro_f1_t",
                "test_macro_auc",
                "same_as",
            ],
        ),
        _fig(run_dir, f"sweep_{cfg['recurrent']}", f"Sweep curves: {cfg['recurrent']}"),
        _fig(run_dir, f"sweep_{cfg['transformer']}", f"Sweep curves: {cfg['transformer']}"),
        "## Vanishing gradients in the recurrent model",
        "",
        f"First figure: the norm of each layer's gradient per epoch (run `{g['layer_norms_unit']}`). Second: the norm "
        f"of the loss gradient with respect to the hidden state at each time step, averaged over the "
        f"{g['n_sequences']} longest validation reports, before and after training, for the selected recurrent model "
        "(mean and max pooling over time) and for a one-directional LSTM read from its last state.",
        "",
        readable_table(
            pd.DataFrame([{"curve": k, "ratio first/last step": v} for k, v in g["ratio_first_to_last_step"].items()]),
            kinds={"ratio first/last step": "ratio"},
        ),
        "",
        _fig(run_dir, "gradient_norms_layers", "Gradient norm per layer over training"),
        _fig(run_dir, "gradient_norms_time", "||dL/dh_t|| along the sequence"),
        *_per_label_section(run_dir, m),
        "## Label counts" if task == "multi-label" else "## Class counts",
        "",
        readable_table(counts, kinds={c: "int" for c in counts.columns if c != "label"}),
        "## Error analysis",
        "",
        f"The test reports that {m['best_model']} (the best model on validation) got most wrong, "
        + (
            "by the summed absolute difference between labels and predicted probabilities (predicted: the labels at "
            "or above its validation-chosen thresholds)."
            if task == "multi-label"
            else "by the lowest probability given to the true class (predicted: its most probable class)."
        ),
        "",
        _cols(run_dir, "errors", ["error", "true", "predicted", "text"]),
    ]
    return "\n".join(lines) + "\n"


def write_text_report(run_dir: str | Path) -> Path:
    """Write report.md and report.html into the run folder."""
    run_dir = Path(run_dir)
    return write_report(run_dir, build_text_report(run_dir), title=run_dir.name)
