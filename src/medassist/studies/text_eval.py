"""Evaluation parts of the text study: the TF-IDF baseline, the vanishing-gradient analysis, the test comparison
with timing and bootstrap intervals, and the error analysis."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from medassist.data.text_types import TextData
from medassist.evaluate.metrics import bootstrap_ci
from medassist.evaluate.multilabel import MULTILABEL_METRICS, macro_auc, macro_f1, micro_f1
from medassist.run import Run
from medassist.train import predict_proba
from medassist.train.data import main_logits

if TYPE_CHECKING:
    from medassist.studies.text import Encoded, TextStudyConfig
    from medassist.studies.units import UnitResult

CI_METRICS = {"macro_f1": macro_f1, "macro_auc": macro_auc, "micro_f1": micro_f1}


@dataclass
class Baseline:
    """The fitted TF-IDF model's numbers."""

    row: dict[str, Any]
    test_probs: np.ndarray


def tfidf_baseline(run: Run, data: TextData) -> Baseline:
    """Fit TF-IDF + logistic regression on train; time it; evaluate on val and test."""
    from medassist.models.tfidf import TfidfLogReg

    tr, va, te = (data.splits[s] for s in ("train", "val", "test"))
    t0 = time.perf_counter()
    model = TfidfLogReg().fit(tr.texts, tr.labels)
    fit_time = time.perf_counter() - t0
    model.save(run.path("models/tfidf.joblib"))
    p_tr, p_va = model.predict_proba(tr.texts), model.predict_proba(va.texts)
    t0 = time.perf_counter()
    p_te = model.predict_proba(te.texts)
    per_report = (time.perf_counter() - t0) / len(te.texts)
    row = {
        "model": "tfidf_logreg",
        "params": len(model.vectorizer_.vocabulary_) * data.num_labels,
        "train_time_s": fit_time,
        "infer_ms_per_report_b64": 1000 * per_report,
        "infer_ms_batch1": np.nan,
        "train_macro_f1": macro_f1(tr.labels, p_tr),
        "val_macro_f1": macro_f1(va.labels, p_va),
        "val_auc": macro_auc(va.labels, p_va),
    }
    return Baseline(row, p_te)


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
    y = torch.as_tensor(val.labels[order]).float()

    def loss_fn(out: Any) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(main_logits(out), y)

    curves = {}
    for label, name in analysed:
        unit = units[name]
        torch.manual_seed(cfg.seed)
        untrained = create_model(unit.model, num_classes=val.labels.shape[1], **unit.model_kwargs)
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


def _latency(model: torch.nn.Module, batcher, *, batch: int, repeats: int, warmup: int = 2) -> float:
    """Median seconds per report over ``repeats`` timed batches (after ``warmup`` untimed ones), on the first
    reports."""
    model.eval()
    idx = torch.arange(min(batch, len(batcher)))
    inputs = batcher.inputs(idx)
    times = []
    with torch.no_grad():
        for i in range(repeats + warmup):
            t0 = time.perf_counter()
            model(*inputs)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return float(np.median(times)) / len(idx)


@dataclass
class Comparison:
    table: pd.DataFrame
    sweep_test: pd.DataFrame
    best_name: str
    best_probs: np.ndarray


def compare_models(
    run: Run,
    cfg: TextStudyConfig,
    data: TextData,
    enc: Encoded,
    units: dict[str, UnitResult],
    models: dict[str, torch.nn.Module],
    best: dict[str, str],
    baseline: Baseline,
) -> Comparison:
    """Test metrics (with 95% bootstrap intervals) and timing of the best run of each model, beside TF-IDF."""
    y = data.splits["test"].labels
    rows, probs = [], {}
    sweep_test = []
    for name, unit in units.items():
        test = enc.get(unit.model)["test"]
        p = predict_proba(models[name], test.batcher, task="multi-label")
        probs[name] = p
        sweep_test.append({"run": name, **{f"test_{k}": float(f(y, p)) for k, f in CI_METRICS.items()}})
    for arch, name in best.items():
        unit, model = units[name], models[name]
        test = enc.get(unit.model)["test"]
        rows.append(
            {
                "model": arch,
                "run": name,
                "params": unit.params,
                "train_time_s": unit.train_time,
                "infer_ms_per_report_b64": 1000 * _latency(model, test.batcher, batch=64, repeats=7),
                "infer_ms_batch1": 1000 * _latency(model, test.batcher, batch=1, repeats=30),
                "train_macro_f1": unit.train["macro_f1"],
                "val_macro_f1": unit.val["macro_f1"],
                "val_auc": unit.val["auc"],
                **_with_ci(y, probs[name], cfg),
            }
        )
    rows.append({**baseline.row, "run": "tfidf", **_with_ci(y, baseline.test_probs, cfg)})
    probs["tfidf"] = baseline.test_probs
    table = pd.DataFrame(rows)
    table["gap_macro_f1"] = table["train_macro_f1"] - table["val_macro_f1"]
    run.write_table("comparison", table)
    # "The best model": the highest validation macro-AUC, the baseline included.
    best_row = table.loc[table["val_auc"].idxmax()]
    per_label = pd.DataFrame(
        {
            "label": data.label_names,
            "test_positives": y.sum(0).astype(int),
            **{r["model"]: _per_label_auc(y, probs[r["run"]]) for r in rows},
        }
    )
    run.write_table("per_label_auc", per_label)
    return Comparison(table, pd.DataFrame(sweep_test), str(best_row["run"]), probs[str(best_row["run"])])


def _per_label_auc(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    from medassist.evaluate.multilabel import per_label_auc

    return per_label_auc(y, p)


def _with_ci(y: np.ndarray, p: np.ndarray, cfg: TextStudyConfig) -> dict[str, float]:
    out = {}
    for k, f in CI_METRICS.items():
        v, lo, hi = bootstrap_ci(y, p, f, n_boot=cfg.n_boot, seed=cfg.seed)
        out.update({f"test_{k}": v, f"test_{k}_lo": lo, f"test_{k}_hi": hi})
    out["test_loss"] = MULTILABEL_METRICS["loss"](y, p)
    return out


def error_analysis(
    run: Run, cfg: TextStudyConfig, data: TextData, enc: Encoded, best_name: str, probs: np.ndarray
) -> list[dict[str, Any]]:
    """The test reports the best model got most wrong (largest summed |label - probability|)."""
    test = data.splits["test"]
    y = test.labels
    err = np.abs(y - probs).sum(1)
    names = np.array(data.label_names)
    rows = []
    for i in np.argsort(-err)[: cfg.n_errors]:
        rows.append(
            {
                "index": int(i),
                "error": float(err[i]),
                "true": ", ".join(names[y[i] == 1]) or "(none)",
                "predicted": ", ".join(f"{n} ({probs[i, j]:.2f})" for j, n in enumerate(names) if probs[i, j] >= 0.5)
                or "(none)",
                "text": test.texts[i][:400],
            }
        )
    run.write_table("errors", pd.DataFrame(rows))
    return rows
