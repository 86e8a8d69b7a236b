"""Evaluation parts of the text study: the TF-IDF baseline, the vanishing-gradient analysis, the test comparison
with timing and bootstrap intervals, and the error analysis."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from medassist.data.text_types import TextData
from medassist.evaluate.metrics import bootstrap_ci, paired_bootstrap_difference
from medassist.evaluate.thresholds import apply_thresholds, choose_thresholds
from medassist.run import Run
from medassist.studies.text_baseline import Baseline
from medassist.studies.text_setup import Encoded, TextStudyConfig
from medassist.studies.text_tasks import TaskMetrics, task_metrics
from medassist.studies.units import UnitResult
from medassist.train import predict_proba
from medassist.train.data import main_logits, model_device


def gradient_analysis(
    run: Run,
    cfg: TextStudyConfig,
    enc: Encoded,
    analysed: list[tuple[str, str]],
    units: dict[str, UnitResult],
    models: dict[str, torch.nn.Module],
) -> None:
    """Per-layer gradient norms over training, and ||dL/dh_t|| along the sequence before and after training.

    Args:
        analysed: (label, unit name) of the recurrent runs to analyse; the first one's layer norms are plotted.
    """
    from medassist.evaluate.plots import plot_gradient_norms, plot_hidden_gradients
    from medassist.explain.gradients import hidden_state_gradient_norms
    from medassist.models import create_model

    first_unit = analysed[0][1]
    norms = pd.read_csv(run.dir / "history" / f"{first_unit}_grad_norms.csv")
    plot_gradient_norms(norms, run.figure("gradient_norms_layers"))
    val = enc.get(units[first_unit].model)["val"]
    # The longest validation reports show how far back the signal reaches.
    order = np.argsort(-val.batcher.lengths.numpy(), kind="stable")[:64]
    ids, mask = val.batcher.inputs(torch.as_tensor(order))
    y = torch.as_tensor(val.labels[order])
    tm = task_metrics("multi-label" if val.labels.ndim == 2 else "multi-class")

    def loss_fn(out: Any) -> torch.Tensor:
        logits = main_logits(out)
        return tm.loss(logits, y.to(logits.device))

    curves = {}
    for label, name in analysed:
        unit = units[name]
        torch.manual_seed(cfg.seed)
        num_classes = val.labels.shape[1] if tm.multilabel else len(models[name].head.bias)
        untrained = create_model(unit.model, num_classes=num_classes, **unit.model_kwargs)
        curves[f"{label}, before training"] = hidden_state_gradient_norms(untrained, ids, mask, loss_fn)
        curves[f"{label}, after training"] = hidden_state_gradient_norms(models[name], ids, mask, loss_fn)
    steps = int(mask.sum(1).max())
    df = pd.DataFrame({"t": np.arange(steps), **{k: v[:steps] for k, v in curves.items()}})
    run.write_table("hidden_gradients", df, floatfmt=".3e")
    plot_hidden_gradients(df, run.figure("gradient_norms_time"))
    first = norms[norms.epoch == norms.epoch.min()].set_index("layer")["grad_norm"]
    last = norms[norms.epoch == norms.epoch.max()].set_index("layer")["grad_norm"]
    run.write_json(
        "gradients.json",
        {
            "layer_norms_unit": first_unit,
            "steps": steps,
            "n_sequences": len(order),
            "layers_first_epoch": first.to_dict(),
            "layers_last_epoch": last.to_dict(),
            "ratio_first_to_last_step": {k: _ratio(v[:steps]) for k, v in curves.items()},
        },
    )


def _ratio(v: np.ndarray) -> float:
    """||dL/dh_1|| / ||dL/dh_T||: below 1 means the gradient fades going back along the sequence."""
    v = v[np.isfinite(v)]
    return float(v[0] / v[-1]) if len(v) > 1 and v[-1] > 0 else float("nan")


def _latency(model: torch.nn.Module, batcher, *, batch: int, repeats: int) -> float:
    """Median seconds per report of ``model`` on the first ``batch`` reports (:func:`median_seconds`: ``repeats``
    timed batches at most, fewer when each takes long)."""
    from medassist.deploy.measure import median_seconds

    model.eval()
    idx = torch.arange(min(batch, len(batcher)))
    device = model_device(model)
    inputs = tuple(x.to(device) for x in batcher.inputs(idx))  # timed where the model is

    @torch.no_grad()
    def call() -> None:
        model(*inputs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return median_seconds(call, repeats=repeats) / len(idx)


@dataclass
class Comparison:
    """The test comparison.

    Attributes:
        table: one row per model (the selected run of each architecture, and TF-IDF).
        sweep_test: test metrics of every trained run of the sweep.
        best_name: the run with the highest validation macro-AUC (TF-IDF included).
        best_probs: its test probabilities.
        thresholds: multi-label: each compared run's per-label thresholds, chosen on validation.
        per_label: per-label test AUC of every compared model (multi-label), or per-class F1 and AUC.
        baselines: the models not trained by the engine, by run name: "tfidf", and "minilm_frozen_lr" and
            "ensemble" when compared.
    """

    table: pd.DataFrame
    sweep_test: pd.DataFrame
    best_name: str
    best_probs: np.ndarray
    thresholds: dict[str, list[float]]
    per_label: pd.DataFrame = field(default_factory=pd.DataFrame)
    baselines: dict[str, Baseline] = field(default_factory=dict)


def headline_metric(task: str) -> str:
    """The metric on which every model is compared with the baseline: macro-F1 at the validation-chosen
    thresholds (multi-label) or macro-F1 (multi-class)."""
    return "macro_f1_t" if task == "multi-label" else "macro_f1"


def _test_metrics(
    tm: TaskMetrics, y: np.ndarray, p: np.ndarray, t: np.ndarray | None, cfg: TextStudyConfig, ci: bool
) -> dict[str, float]:
    """Test metrics at the default decision and, multi-label, at thresholds ``t`` (``_t``); with intervals if ``ci``."""
    scored = [(k, f, p) for k, f in tm.ci.items()]
    if t is not None:
        decided = apply_thresholds(p, t)
        scored += [(f"{k}_t", tm.ci[k], decided) for k in tm.thresholded]
    out: dict[str, float] = {}
    for k, f, q in scored:
        if ci:
            v, lo, hi = bootstrap_ci(y, q, f, n_boot=cfg.n_boot, seed=cfg.seed)
            out.update({f"test_{k}": v, f"test_{k}_lo": lo, f"test_{k}_hi": hi})
        else:
            out[f"test_{k}"] = float(f(y, q))
    return out


def compare_models(
    run: Run,
    cfg: TextStudyConfig,
    data: TextData,
    enc: Encoded,
    units: dict[str, UnitResult],
    models: dict[str, torch.nn.Module],
    best: dict[str, str],
    baseline: Baseline,
    extra: dict[str, Baseline] | None = None,
) -> Comparison:
    """Test metrics (with 95% bootstrap intervals) and timing of the best run of each model, of the models in
    ``extra`` (the frozen encoder) and of the ensemble of TF-IDF and the Transformer (``cfg.ensemble``), beside the
    tuned TF-IDF baseline, and each model's paired difference from that baseline.

    Multi-label thresholds are chosen per label on the validation probabilities each run saved, then applied to test.
    """
    from medassist.studies.text_baseline import ensemble_baseline

    tm = task_metrics(data.task)
    y, y_val = tm.labels(data.splits["test"].labels), tm.labels(data.splits["val"].labels)
    probs: dict[str, np.ndarray] = {}
    thresholds: dict[str, np.ndarray | None] = {}
    sweep_test = []
    for name, unit in units.items():
        test = enc.get(unit.model)["test"]
        probs[name] = predict_proba(models[name], test.batcher, task=data.task)
        p_val = np.load(run.dir / "units" / name / "val_probs.npy")
        thresholds[name] = choose_thresholds(y_val, p_val) if tm.multilabel else None
        sweep_test.append({"run": name, **_test_metrics(tm, y, probs[name], thresholds[name], cfg, ci=False)})
    others = {"tfidf": baseline, **(extra or {})}

    rows = []
    for arch, name in best.items():
        unit, model = units[name], models[name]
        test = enc.get(unit.model)["test"]
        rows.append(
            {
                "model": arch,
                "run": name,
                "params": unit.params,
                "train_time_s": unit.train_time,
                "epochs_run": unit.epochs_run,
                "planned_epochs": unit.planned_epochs,
                "batch_size": unit.batch_size,
                "steps": unit.planned_epochs * -(-unit.n_train // max(1, unit.batch_size)),
                "stopped_by": unit.row()["stopped_by"],
                "training": unit.training,
                "under_trained": unit.under_trained,
                "at_chance": unit.at_chance,
                "infer_ms_per_report_b64": 1000 * _latency(model, test.batcher, batch=64, repeats=7),
                "infer_ms_batch1": 1000 * _latency(model, test.batcher, batch=1, repeats=30),
                "train_macro_f1": unit.train["macro_f1"],
                "val_macro_f1": unit.val["macro_f1"],
                "val_auc": unit.val["auc"],
            }
        )
    transformer = next((r for r in rows if r["model"] == cfg.transformer), None)
    if cfg.ensemble and transformer is not None:
        name = transformer["run"]
        p_val = np.load(run.dir / "units" / name / "val_probs.npy")
        others["ensemble"] = ensemble_baseline(data, baseline, transformer, p_val, probs[name])
        run.write_table("ensemble_grid", others["ensemble"].grid)
    for key, b in others.items():
        np.save(run.path(f"models/{key}.val_probs.npy"), b.val_probs)  # as each unit saved its own
        probs[key] = b.test_probs
        thresholds[key] = choose_thresholds(y_val, b.val_probs) if tm.multilabel else None
        rows.append({**b.row, "run": key})
    head = headline_metric(data.task)
    for r in rows:
        t = thresholds[r["run"]]
        r.update(_test_metrics(tm, y, probs[r["run"]], t, cfg, ci=True))
        if t is not None:
            p_val = (
                others[r["run"]].val_probs
                if r["run"] in others
                else np.load(run.dir / "units" / r["run"] / "val_probs.npy")
            )
            r["val_macro_f1_t"] = tm.macro_f1(y_val, apply_thresholds(p_val, t))
        if r["run"] != "tfidf":  # paired bootstrap of the difference from the tuned baseline, on the same reports
            a, b = probs[r["run"]], probs["tfidf"]
            if t is not None and head.endswith("_t"):
                a, b = apply_thresholds(a, t), apply_thresholds(b, thresholds["tfidf"])
            d, lo, hi = paired_bootstrap_difference(y, a, b, tm.macro_f1, n_boot=cfg.n_boot, seed=cfg.seed)
            r.update({f"vs_tfidf_{head}": d, f"vs_tfidf_{head}_lo": lo, f"vs_tfidf_{head}_hi": hi})
    table = pd.DataFrame(rows)
    table["gap_macro_f1"] = table["train_macro_f1"] - table["val_macro_f1"]
    run.write_table("comparison", table)
    kept = {r["run"]: thresholds[r["run"]] for r in rows if thresholds[r["run"]] is not None}
    if kept:
        run.write_table("thresholds", pd.DataFrame({"label": data.label_names, **kept}))
    # "The best model": the highest validation macro-AUC, the baseline included.
    best_row = table.loc[table["val_auc"].idxmax()]
    per_label = _per_label(run, tm, data, y, probs, thresholds, rows)
    return Comparison(
        table,
        pd.DataFrame(sweep_test),
        str(best_row["run"]),
        probs[str(best_row["run"])],
        {k: [float(x) for x in v] for k, v in kept.items()},
        per_label,
        others,
    )


def save_selected_predictions(run: Run, data: TextData, comparison: Comparison, units: dict[str, UnitResult]) -> None:
    """Save the selected model's validation and test probabilities with the splits' metadata (never the texts), so
    that an audit (``medassist fairness``) reads them instead of retraining."""
    from medassist.studies.predictions import write_predictions

    name = comparison.best_name
    other = comparison.baselines.get(name)
    p_val = other.val_probs if other is not None else np.load(run.dir / "units" / name / "val_probs.npy")
    extra: dict[str, Any] = {"thresholds": comparison.thresholds.get(name), "dataset": data.name}
    if name in units:
        u = units[name]
        extra["unit"] = {"name": u.name, "model": u.model, "model_kwargs": u.model_kwargs, "config": u.extra["config"]}
    write_predictions(
        run,
        task=data.task,
        label_names=data.label_names,
        splits={
            "val": (data.splits["val"].labels, p_val, data.splits["val"].metadata),
            "test": (data.splits["test"].labels, comparison.best_probs, data.splits["test"].metadata),
        },
        model=name,
        kind="text",
        extra=extra,
    )


def _per_label(
    run: Run,
    tm: TaskMetrics,
    data: TextData,
    y: np.ndarray,
    probs: dict[str, np.ndarray],
    thresholds: dict[str, np.ndarray | None],
    rows: list[dict[str, Any]],
) -> pd.DataFrame:
    """Per-label test AUC (multi-label), or per-class F1 and one-vs-rest AUC (multi-class); written and returned."""
    from medassist.evaluate.multilabel import per_label_auc

    if tm.multilabel:
        table = pd.DataFrame(
            {
                "label": data.label_names,
                "test_positives": y.sum(0).astype(int),
                **{r["model"]: per_label_auc(y, probs[r["run"]]) for r in rows},
            }
        )
        run.write_table("per_label_auc", table)
        return table
    from sklearn.metrics import f1_score

    k = data.num_labels
    onehot = np.eye(k, dtype=int)[y]
    table = pd.DataFrame({"class": data.label_names, "test_cases": np.bincount(y, minlength=k)})
    for r in rows:
        p = probs[r["run"]]
        table[f"{r['model']} F1"] = f1_score(y, p.argmax(1), labels=range(k), average=None, zero_division=0)
        table[f"{r['model']} AUC"] = per_label_auc(onehot, p)
    run.write_table("per_class", table)
    return table


def error_analysis(
    run: Run,
    cfg: TextStudyConfig,
    data: TextData,
    best_name: str,
    probs: np.ndarray,
    thresholds: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """The test reports the best model got most wrong: the largest summed |label - probability| (multi-label), or
    the lowest probability of the true class (multi-class)."""
    test = data.splits["test"]
    names = np.array(data.label_names)
    if data.task == "multi-label":
        y = test.labels
        err = np.abs(y - probs).sum(1)
        t = np.full(y.shape[1], 0.5) if thresholds is None else np.asarray(thresholds)

        def true(i: int) -> str:
            return ", ".join(names[y[i] == 1]) or "(none)"

        def predicted(i: int) -> str:
            return ", ".join(f"{n} ({probs[i, j]:.2f})" for j, n in enumerate(names) if probs[i, j] >= t[j]) or "(none)"
    else:
        y = test.labels.reshape(-1)
        err = 1.0 - probs[np.arange(len(y)), y]

        def true(i: int) -> str:
            return str(names[y[i]])

        def predicted(i: int) -> str:
            j = int(probs[i].argmax())
            return f"{names[j]} ({probs[i, j]:.2f})"

    rows = []
    for i in np.argsort(-err, kind="stable")[: cfg.n_errors]:
        rows.append(
            {
                "index": int(i),
                "error": float(err[i]),
                "true": true(int(i)),
                "predicted": predicted(int(i)),
                "text": test.texts[i][:400],
            }
        )
    run.write_table("errors", pd.DataFrame(rows))
    return rows
