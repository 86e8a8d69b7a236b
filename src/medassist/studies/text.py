"""The clinical text study: a recurrent model against a Transformer on radiology reports, with a regularisation
sweep, a vanishing-gradient analysis, a TF-IDF baseline, a multi-task variant, and a generated report.

Every choice is made on the validation split; the test split is only evaluated.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from medassist.config import TrainConfig, to_dict
from medassist.data.text_types import TextData
from medassist.errors import MedAssistError
from medassist.run import Run
from medassist.studies.text_setup import (
    RECURRENT,
    TRANSFORMERS,
    Encoded,
    TextStudyConfig,
    load_text_data,
)
from medassist.studies.units import UnitResult, load_history, train_unit
from medassist.train.device import on_device
from medassist.utils.steps import step

__all__ = ["Encoded", "TextStudyConfig", "load_text_data", "multitask_step", "run_text_study", "sweep_runs"]


def multitask_step(normal_index: int, abnormal_weight: float = 1.0):
    """Loss of the two-head model: findings (binary cross-entropy per label) plus normal-vs-abnormal.

    The abnormal head counts as one label more: the loss is the mean over the K findings and the abnormal output,
    with the abnormal term scaled by ``abnormal_weight``. (Adding the abnormal loss to the findings' mean instead
    would give that one output K times the weight of any finding and slow the findings' learning.)
    """

    def step(model, inputs, y):
        findings, abnormal = model(*inputs)
        target = 1.0 - y[:, normal_index].float()  # abnormal = not labelled 'normal'
        k = findings.shape[1]
        loss = k * F.binary_cross_entropy_with_logits(findings, y.float())
        loss = loss + abnormal_weight * F.binary_cross_entropy_with_logits(abnormal, target)
        return loss / (k + 1), findings

    return step


def sweep_runs(cfg: TextStudyConfig, arch: str, base: TrainConfig) -> list[tuple[str, float, TrainConfig]]:
    """(name, dropout, training settings) of each run of the regularisation sweep of ``arch``."""
    dropout = cfg.transformer_dropout if arch == cfg.transformer else cfg.base_dropout
    if not cfg.sweep:
        return [(f"{arch}-base", dropout, base)]
    runs = [(f"{arch}-dropout{d:g}", d, base) for d in cfg.dropouts]
    runs += [(f"{arch}-wd{w:g}", dropout, dataclasses.replace(base, weight_decay=w)) for w in cfg.weight_decays]
    es = dataclasses.replace(base, early_stopping=True, patience=cfg.patience, monitor="val_loss")
    runs.append((f"{arch}-earlystop", dropout, es))
    return runs


def _check(cfg: TextStudyConfig) -> None:
    if cfg.recurrent not in RECURRENT:
        raise MedAssistError(f"unknown recurrent model '{cfg.recurrent}'; choose from {', '.join(RECURRENT)}")
    if cfg.transformer not in TRANSFORMERS:
        raise MedAssistError(f"unknown Transformer '{cfg.transformer}'; choose from {', '.join(TRANSFORMERS)}")
    known = (*RECURRENT, *TRANSFORMERS, "bilstm_multitask")
    bad = [m for m in cfg.extra_models if m not in known]
    if bad:
        raise MedAssistError(f"unknown model '{bad[0]}' in extra_models; choose from {', '.join(known)}")


@on_device
def run_text_study(cfg: TextStudyConfig) -> Path:
    """Run the whole text study and return its run folder."""
    _check(cfg)
    data = load_text_data(cfg)
    run = Run.create(cfg.out, f"text-{data.name}", to_dict(cfg), kind="text", resume=cfg.resume or None)
    with run:
        _study(run, cfg, data)
        from medassist.report.text import write_text_report

        write_text_report(run.dir)
    return run.dir


def _stage(cfg: TextStudyConfig, i: int, n: int, text: str) -> None:
    step(f"{i}/{n}", text, show=cfg.progress)


@dataclasses.dataclass
class _Trained:
    """The engine-trained models of one text run: each unit's result and model, the sweep's rows (one per run name;
    a run whose settings another already trained names it as its unit), and the selected run of each model."""

    units: dict[str, UnitResult] = dataclasses.field(default_factory=dict)
    models: dict[str, torch.nn.Module] = dataclasses.field(default_factory=dict)
    sweep_rows: list[dict] = dataclasses.field(default_factory=list)
    best: dict[str, str] = dataclasses.field(default_factory=dict)


N_STAGES = 6


def _study(run: Run, cfg: TextStudyConfig, data: TextData) -> None:
    from medassist.studies.text_baseline import frozen_encoder_baseline, tfidf_baseline

    enc = Encoded(data, run, cfg.max_len)
    _write_data_json(run, data)
    if cfg.transformer == "minilm":
        _copy_search(run)
    _stage(cfg, 1, N_STAGES, "TF-IDF and frozen-MiniLM logistic regressions, tuned on validation")
    baseline = tfidf_baseline(run, cfg, data)
    extra = {"minilm_frozen_lr": frozen_encoder_baseline(run, cfg, data)} if cfg.frozen_encoder else {}
    trained = _Trained()
    _train_sweeps(run, cfg, data, enc, trained)
    _train_extra_models(run, cfg, data, enc, trained)
    _stage(cfg, 5, N_STAGES, "vanishing-gradient analysis")
    _gradients(run, cfg, data, enc, trained)
    _stage(cfg, 6, N_STAGES, "test comparison, error analysis and report")
    _results(run, cfg, data, enc, trained, baseline, extra)


def _write_data_json(run: Run, data: TextData) -> None:
    run.write_json(
        "data.json",
        {
            "name": data.name,
            "label_names": data.label_names,
            "task": data.task,
            "sizes": {s: len(data.splits[s]) for s in data.splits},
            "label_counts": {s: _label_counts(data, s) for s in data.splits},
            "mean_words": {s: float(np.mean([len(t.split()) for t in data.splits[s].texts])) for s in data.splits},
            "info": data.info,
        },
    )


def _unit(
    run: Run,
    cfg: TextStudyConfig,
    data: TextData,
    enc: Encoded,
    trained: _Trained,
    name: str,
    arch: str,
    kwargs: dict,
    tcfg: TrainConfig,
    step: Any = None,
) -> UnitResult:
    """Train (or reload) one model of the study on its own tokens of the reports; kept in ``trained``."""
    sets = enc.get(arch)
    u, m = train_unit(
        run,
        name,
        model_name=arch,
        model_kwargs=kwargs,
        train=sets["train"],
        val=sets["val"],
        cfg=tcfg,
        num_classes=data.num_labels,
        task=data.task,
        train_eval_samples=cfg.train_eval_samples,
        progress=cfg.progress,
        step_fn=step,
    )
    trained.units[name], trained.models[name] = u, m
    return u


def _train_sweeps(run: Run, cfg: TextStudyConfig, data: TextData, enc: Encoded, trained: _Trained) -> None:
    """The regularisation sweep of the recurrent model and of the Transformer (one base run without the sweep);
    each model's selected run is its highest validation macro-AUC."""
    for i, (arch, base) in enumerate(((cfg.recurrent, cfg.rnn_train), (cfg.transformer, cfg.transformer_train))):
        base = _train_cfg(cfg, data, base)
        _stage(cfg, 2 + i, N_STAGES, f"{arch}: regularisation sweep")
        rows: dict[str, dict] = {}  # settings -> the sweep row of the run that trained them
        for name, dropout, tcfg in sweep_runs(cfg, arch, base):
            key = repr((dropout, to_dict(tcfg)))
            if key in rows:  # e.g. the weight-decay run at the base decay is the base-dropout run
                trained.sweep_rows.append({**rows[key], "run": name})
                continue
            u = _unit(run, cfg, data, enc, trained, name, arch, enc.model_kwargs(arch, dropout), tcfg)
            rows[key] = {
                "arch": arch,
                "run": name,
                "unit": name,
                "dropout": dropout,
                "weight_decay": tcfg.weight_decay,
                "early_stopping": tcfg.early_stopping,
                **_unit_cols(u),
            }
            trained.sweep_rows.append(rows[key])
        runs = (r for r in trained.sweep_rows if r["arch"] == arch)
        trained.best[arch] = max(runs, key=lambda r: r["val_auc"])["run"]


def _train_extra_models(run: Run, cfg: TextStudyConfig, data: TextData, enc: Encoded, trained: _Trained) -> None:
    """The further models of ``cfg.extra_models``, one base run each (the multi-task BiLSTM only where a 'normal'
    label gives its second head something to predict)."""
    _stage(cfg, 4, N_STAGES, f"further models: {', '.join(cfg.extra_models) or 'none'}")
    for arch in cfg.extra_models:
        base = cfg.transformer_train if arch in TRANSFORMERS else cfg.rnn_train
        step = None
        if arch == "bilstm_multitask":
            if data.task != "multi-label" or "normal" not in data.label_names:
                continue  # the second head predicts 'normal' vs abnormal; without that label there is nothing to add
            step = multitask_step(data.label_names.index("normal"))
        name = f"{arch}-base"
        kwargs = enc.model_kwargs(arch, cfg.base_dropout)
        _unit(run, cfg, data, enc, trained, name, arch, kwargs, _train_cfg(cfg, data, base), step)
        trained.best[arch] = name


def _gradients(run: Run, cfg: TextStudyConfig, data: TextData, enc: Encoded, trained: _Trained) -> None:
    """Gradient norms through time of the selected recurrent model and of a one-directional LSTM read from its last
    state: mean+max pooling gives every step a direct path to the loss; the last state has only the recurrence,
    which is where gradients vanish."""
    from medassist.studies.text_eval import gradient_analysis

    name = "lstm_last-base"
    kwargs = {**enc.model_kwargs("bilstm", cfg.base_dropout), "bidirectional": False, "pooling": "last"}
    _unit(run, cfg, data, enc, trained, name, "bilstm", kwargs, _train_cfg(cfg, data, cfg.rnn_train))
    analysed = [
        (f"{cfg.recurrent} (selected, mean+max pooling)", trained.best[cfg.recurrent]),
        ("LSTM, last state", name),
    ]
    gradient_analysis(run, cfg, enc, analysed, trained.units, trained.models)


def _results(
    run: Run,
    cfg: TextStudyConfig,
    data: TextData,
    enc: Encoded,
    trained: _Trained,
    baseline: Any,
    extra: dict[str, Any],
) -> None:
    """The test comparison, the selected model's predictions, the sweep table, the figures, the error analysis and
    metrics.json."""
    from medassist.studies.text_eval import compare_models, error_analysis, save_selected_predictions

    units, best = trained.units, trained.best
    comparison = compare_models(run, cfg, data, enc, units, trained.models, best, baseline, extra)
    save_selected_predictions(run, data, comparison, units)
    sweep = pd.DataFrame(trained.sweep_rows)
    if len(comparison.sweep_test):
        sweep = sweep.merge(comparison.sweep_test.rename(columns={"run": "unit"}), on="unit", how="left")
    sweep["same_as"] = np.where(sweep["unit"] != sweep["run"], sweep["unit"], "")
    sweep = sweep.drop(columns="unit")
    run.write_table("sweep", sweep)
    _figures(run, cfg, data, trained, comparison)
    err = error_analysis(
        run, cfg, data, comparison.best_name, comparison.best_probs, comparison.thresholds.get(comparison.best_name)
    )
    run.write_metrics(
        {
            "dataset": data.name,
            "best": best,
            "sweep": sweep.to_dict("records"),
            "comparison": comparison.table.to_dict("records"),
            "per_label": comparison.per_label.to_dict("records"),
            "best_model": comparison.best_name,
            "task": data.task,
            "tfidf_grid": baseline.grid.to_dict("records"),
            **{f"{k}_grid": b.grid.to_dict("records") for k, b in comparison.baselines.items() if k != "tfidf"},
            "thresholds": comparison.thresholds,
            "chosen": {k: b.chosen for k, b in comparison.baselines.items()},
            "gradients": run.read_json("gradients.json"),
            "errors": err,
        },
    )


def _figures(run: Run, cfg: TextStudyConfig, data: TextData, trained: _Trained, comparison: Any) -> None:
    """Learning curves of each sweep and of the selected runs; the confusion matrix of a multi-class task."""
    from medassist.evaluate.plots import plot_learning_curves
    from medassist.evaluate.training import legend_label

    units = trained.units
    for arch in (cfg.recurrent, cfg.transformer):
        names = [r["run"] for r in trained.sweep_rows if r["arch"] == arch and r["unit"] == r["run"]]
        plot_learning_curves(
            {legend_label(n, units[n].row()): load_history(run, n) for n in names},
            run.figure(f"sweep_{arch}"),
            metrics=("loss", "auc"),
        )
    plot_learning_curves(
        {legend_label(a, units[n].row()): load_history(run, n) for a, n in trained.best.items()},
        run.figure("curves_best"),
        metrics=("loss", "auc"),
    )
    if data.task == "multi-class":
        from sklearn.metrics import confusion_matrix

        from medassist.evaluate.plots import plot_confusion_matrix

        y_test = data.splits["test"].labels.reshape(-1)
        cm = confusion_matrix(y_test, comparison.best_probs.argmax(1), labels=range(data.num_labels))
        plot_confusion_matrix(cm, data.label_names, run.figure("confusion_matrix"), normalize=True)


MINILM_SEARCH = "minilm_search.csv"
"""The trials of the search that chose MiniLM's fine-tuning defaults, shipped in ``configs/text/``."""


def _copy_search(run: Run) -> None:
    """The search behind MiniLM's fine-tuning defaults, copied beside this run's tables for its report."""
    from importlib.resources import files

    source = files("medassist") / "configs" / "text" / MINILM_SEARCH
    if source.is_file():
        run.write_table(MINILM_SEARCH.removesuffix(".csv"), pd.read_csv(io.StringIO(source.read_text())))


def _train_cfg(cfg: TextStudyConfig, data: TextData, base: TrainConfig, **changes) -> TrainConfig:
    """A model's training settings in this study: the study's seed, and class weights for multi-class texts."""
    balance = cfg.balance_classes and data.task == "multi-class"
    return dataclasses.replace(base, seed=cfg.seed, class_weights=base.class_weights or balance, **changes)


def _label_counts(data: TextData, split: str) -> list[int]:
    """Positives per label (multi-label) or cases per class (multi-class)."""
    y = data.splits[split].labels
    if data.task == "multi-label":
        return y.sum(0).astype(int).tolist()
    return np.bincount(y.reshape(-1), minlength=data.num_labels).astype(int).tolist()


def _unit_cols(u: UnitResult) -> dict:
    return {
        "params": u.params,
        "epochs_run": u.epochs_run,
        "best_epoch": u.best_epoch,
        "train_time_s": u.train_time,
        "train_loss": u.train["loss"],
        "val_loss": u.val["loss"],
        "train_macro_f1": u.train["macro_f1"],
        "val_macro_f1": u.val["macro_f1"],
        "train_auc": u.train["auc"],
        "val_auc": u.val["auc"],
        "gap_macro_f1": u.train["macro_f1"] - u.val["macro_f1"],
        "gap_loss": u.val["loss"] - u.train["loss"],
    }
