"""A sweep's report: reads the tune run folder's files and nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from medassist.report.html import write_report
from medassist.utils.format import fmt_int, fmt_metric, fmt_seconds, readable_table

METRIC_NAMES = {
    "val_auc": "validation AUC",
    "val_accuracy": "validation accuracy",
    "val_macro_f1": "validation macro-F1",
    "val_loss": "validation loss",
}


def build_tune_report(run_dir: str | Path) -> str:
    """The Markdown report of a sweep: how it ran, the best trial and its config file, every trial, the curves."""
    run_dir = Path(run_dir)
    m = json.loads((run_dir / "metrics.json").read_text())
    trials = pd.read_csv(run_dir / "tables" / "trials.csv")
    best = m["best"]
    metric = METRIC_NAMES.get(m["metric"], m["metric"])
    stopped = int((trials["epochs_run"] < trials["epochs_run"].max()).sum())
    headers = {c: c.removeprefix("param:") for c in trials.columns}
    headers.update({"best_score": f"best {metric}", "best_epoch": "best epoch", "epochs_run": "epochs run"})
    lines = [
        f"# Sweep of the {m['study']} study on Ray Tune",
        "",
        f"{fmt_int(len(trials))} trials ({fmt_int(m['samples'])} sampled; {fmt_int(m['trials_failed'])} failed) "
        f"in {fmt_seconds(m['wall_time_s'])} s, scheduler {m['scheduler']}"
        + (f", which stopped {fmt_int(stopped)} trials before the last epoch" if m["scheduler"] == "asha" else "")
        + f". Trials are ranked by their best epoch's {metric} on the validation split; the test split is not read.",
        "",
        f"**Best trial: {best['trial']}**, {metric} {fmt_metric(best['score'])} at epoch {fmt_int(best['epoch'])}. "
        "Its settings, as a config file for the study (`medassist "
        f"{m['study']} --config best.yaml`):",
        "",
        "```yaml",
        yaml.safe_dump(m["best_config"], sort_keys=False).strip(),
        "```",
        "",
        "A sweep's best validation score is an optimistic estimate of that setting (it was chosen as the best of "
        "many): the study run with `best.yaml` measures it again, and on test.",
        "",
        "## Every trial",
        "",
        readable_table(
            trials.drop(columns=["error"]) if not trials["error"].fillna("").any() else trials,
            headers=headers,
            max_columns=None,
        ),
        "",
    ]
    if (run_dir / "figures" / "trials.png").is_file():
        lines += [
            "![Validation curves of every trial](figures/trials.png)",
            "",
            f"*{metric[0].upper() + metric[1:]} per epoch, one line per trial (the best in black).*",
            "",
        ]
    return "\n".join(lines)


def write_tune_report(run_dir: str | Path) -> Path:
    """Write report.md and report.html of a sweep's run folder; return the Markdown path."""
    run_dir = Path(run_dir)
    return write_report(run_dir, build_tune_report(run_dir), title="medassist sweep")
