"""The text study's report: reads the run folder's files and nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from medassist.report.html import markdown_to_html
from medassist.report.image import _cols, _fig
from medassist.report.text_analysis import text_explanation
from medassist.run import markdown_table
from medassist.utils.io import atomic_write_text


def _ci_table(run_dir: Path) -> str:
    df = pd.read_csv(run_dir / "tables" / "comparison.csv")
    out = pd.DataFrame(
        {
            "model": df["model"],
            "params": df["params"].map(lambda v: f"{int(v):,}" if v == v else ""),
            "train time (s)": df["train_time_s"].round(1),
            "ms/report (batch 64)": df["infer_ms_per_report_b64"].round(3),
            "ms/report (batch 1)": df["infer_ms_batch1"].round(2),
            "train macro-F1": df["train_macro_f1"].round(3),
            "val macro-F1": df["val_macro_f1"].round(3),
            "gap": df["gap_macro_f1"].round(3),
            **{
                f"test {k}": [
                    f"{v:.3f} [{lo:.3f}, {hi:.3f}]"
                    for v, lo, hi in zip(df[f"test_{c}"], df[f"test_{c}_lo"], df[f"test_{c}_hi"], strict=True)
                ]
                for k, c in (("macro-F1", "macro_f1"), ("macro-AUC", "macro_auc"), ("micro-F1", "micro_f1"))
            },
        }
    )
    return markdown_table(out)


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
                "test set": f"{data['sizes']['test']} physician-labelled reports, {len(data['label_names'])} labels",
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
        markdown_table(table),
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
    counts = pd.DataFrame({"label": data["label_names"], **{s: c for s, c in data["label_counts"].items()}})
    g = m["gradients"]
    lines = [
        f"# Text study: {data['name']}",
        "",
        f"Run folder `{run_dir.name}`. Splits: "
        + ", ".join(f"{k} {v}" for k, v in data["sizes"].items())
        + f" reports; {len(data['label_names'])} labels (multi-label). Every choice was made on the validation "
        "split; the test split was evaluated only for reporting. Intervals are 95% percentile bootstrap intervals.",
        "",
        "## Explanation",
        "",
        text_explanation(m, data, cfg),
        "",
        "## Comparison (selected run of each model, and the TF-IDF baseline)",
        "",
        _ci_table(run_dir),
        _fig(
            run_dir, "curves_best", "Training (solid) and validation (dashed) loss and macro-AUC of the selected runs"
        ),
        *_reference(m, data),
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
                "test_macro_f1",
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
        markdown_table(
            pd.DataFrame([{"curve": k, "ratio first/last step": v} for k, v in g["ratio_first_to_last_step"].items()]),
            floatfmt=".3g",
        ),
        "",
        _fig(run_dir, "gradient_norms_layers", "Gradient norm per layer over training"),
        _fig(run_dir, "gradient_norms_time", "||dL/dh_t|| along the sequence"),
        "## Per-label test AUC",
        "",
        (run_dir / "tables" / "per_label_auc.md").read_text(),
        "## Label counts",
        "",
        markdown_table(counts),
        "## Error analysis",
        "",
        f"The test reports that {m['best_model']} (the best model on validation) got most wrong, by the summed "
        "absolute difference between labels and predicted probabilities.",
        "",
        _cols(run_dir, "errors", ["error", "true", "predicted", "text"]),
    ]
    return "\n".join(lines) + "\n"


def write_text_report(run_dir: str | Path) -> Path:
    """Write report.md and report.html into the run folder."""
    run_dir = Path(run_dir)
    text = build_text_report(run_dir)
    atomic_write_text(run_dir / "report.md", text)
    atomic_write_text(run_dir / "report.html", markdown_to_html(text, base_dir=run_dir, title=run_dir.name))
    return run_dir / "report.md"
