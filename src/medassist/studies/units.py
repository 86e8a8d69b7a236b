"""A training unit: one model trained once inside a study, saved so that ``--resume`` can skip it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from safetensors.torch import load_file, save_file
from torch import nn

from medassist.config import TrainConfig, to_dict
from medassist.data.types import Split
from medassist.evaluate.metrics import at_chance
from medassist.evaluate.training import training_status
from medassist.models import count_parameters, create_model
from medassist.run import Run
from medassist.train import fit, predict_proba
from medassist.train.device import current
from medassist.train.engine import FitResult, Labelled, StepFn, as_labelled, seed_everything
from medassist.utils.io import atomic_path


@dataclass
class UnitResult:
    """The record of one trained model: its settings, curves and validation numbers."""

    name: str
    model: str
    model_kwargs: dict[str, Any]
    params: int
    trainable_params: int
    best_epoch: int
    epochs_run: int
    train_time: float
    stopped_early: bool
    budget_reached: bool
    n_train: int
    train: dict[str, float]  # metrics on the training images in eval mode, at the best epoch
    val: dict[str, float]  # metrics on the validation split at the best epoch
    extra: dict[str, Any] = field(default_factory=dict)
    planned_epochs: int = 0  # after min_steps (0 in runs written before it was recorded)
    batch_size: int = 0  # after min_batches
    under_trained: bool = False  # a time budget cut it while validation was still improving
    at_chance: bool = False  # validation AUC near 0.5, or one class predicted for every case

    @property
    def training(self) -> str:
        """How its training ended, for tables and legends: converged, under-trained, at chance, or both."""
        return training_status(self.under_trained, self.at_chance)

    @property
    def usable(self) -> bool:
        """Whether a conclusion about capacity, architecture or regularisation may rest on it."""
        return not (self.under_trained or self.at_chance)

    def row(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "params": self.params,
            "trainable_params": self.trainable_params,
            "n_train": self.n_train,
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "train_time_s": self.train_time,
            "train_loss": self.train["loss"],
            "train_accuracy": self.train["accuracy"],
            "train_auc": self.train["auc"],
            "val_loss": self.val["loss"],
            "val_accuracy": self.val["accuracy"],
            "val_auc": self.val["auc"],
            "val_macro_f1": self.val["macro_f1"],
            "gap_accuracy": self.train["accuracy"] - self.val["accuracy"],
            "stopped_by": "time budget"
            if self.budget_reached
            else "early stopping"
            if self.stopped_early
            else "epochs",
            "planned_epochs": self.planned_epochs,
            "batch_size": self.batch_size,
            "training": self.training,
            "under_trained": self.under_trained,
            "at_chance": self.at_chance,
        }


def _subset(data: Labelled, n: int, seed: int) -> Labelled:
    if n <= 0 or n >= len(data):
        return data
    return data.subset(np.sort(np.random.default_rng(seed).choice(len(data), n, replace=False)))


def _predict(model: nn.Module, data: Split | Labelled, task: str) -> tuple[np.ndarray, np.ndarray]:
    data = as_labelled(data)
    probs = predict_proba(model, data.batcher, task=task)
    return (data.labels if task == "multi-label" else data.labels.reshape(-1)), probs


def split_metrics(
    model: nn.Module, data: Split | Labelled, metrics: dict, *, task: str = "multi-class"
) -> dict[str, float]:
    """Metrics of ``model`` on ``data``."""
    y, probs = _predict(model, data, task)
    return {name: float(fn(y, probs)) for name, fn in metrics.items()}


def train_unit(
    run: Run,
    name: str,
    *,
    model_name: str,
    model_kwargs: dict[str, Any],
    train: Split | Labelled,
    val: Split | Labelled,
    cfg: TrainConfig,
    num_classes: int,
    in_channels: int = 1,
    task: str = "multi-class",
    train_eval_samples: int = 2000,
    progress: bool = True,
    step_fn: StepFn | None = None,
) -> tuple[UnitResult, nn.Module]:
    """Train (or, if already done in this run folder, reload) one model; write its history and result."""
    from medassist.evaluate import metrics_for

    metrics = metrics_for(task)
    unit_dir = run.path(f"units/{name}/x").parent
    # Every unit seeds itself (and sets its threads) before building its model, so its initial weights do not
    # depend on what ran before it: a unit reused on resume (which draws nothing) and a trained one (which draws
    # a whole training's worth) leave different random states, and the next unit must not inherit either.
    seed_everything(cfg.seed, cfg.threads)
    model = create_model(model_name, num_classes=num_classes, in_channels=in_channels, **model_kwargs)
    done = reload_unit(run, name, model)
    if done is not None:
        return UnitResult(**done), model

    t0 = time.perf_counter()
    result = fit(
        model,
        train,
        val,
        cfg,
        num_classes=num_classes,
        task=task,
        checkpoint=unit_dir / "checkpoint.pt",
        resume=True,
        progress=progress,
        desc=name,
        step_fn=step_fn,
    )
    train_eval = _subset(as_labelled(train), train_eval_samples, cfg.seed)
    y_val, p_val = _predict(model, val, task)
    with atomic_path(unit_dir / "val_probs.npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, p_val)  # what the choices after training (thresholds, paired intervals) read
    val_metrics = {k: float(fn(y_val, p_val)) for k, fn in metrics.items()}
    unit = UnitResult(
        name=name,
        model=model_name,
        model_kwargs=model_kwargs,
        params=count_parameters(model),
        trainable_params=count_parameters(model, trainable_only=True),
        best_epoch=result.best_epoch,
        epochs_run=len(result.history),
        train_time=result.train_time,
        stopped_early=result.stopped_early,
        budget_reached=result.budget_reached,
        n_train=len(train),
        train=split_metrics(model, train_eval, metrics, task=task),
        val=val_metrics,
        extra={"config": to_dict(cfg), "wall_time": time.perf_counter() - t0},
        planned_epochs=result.planned_epochs,
        batch_size=result.batch_size,
        under_trained=result.under_trained,
        at_chance=at_chance(val_metrics.get("auc"), None if task == "multi-label" else p_val.argmax(axis=1)),
    )
    if not result.grad_norms.empty:
        run.path(f"history/{name}_grad_norms.csv").write_text(result.grad_norms.to_csv(index=False))
    save_unit(run, name, result, unit.__dict__)
    return unit, model


def reload_unit(run: Run, name: str, model: nn.Module) -> dict[str, Any] | None:
    """A unit this run folder already finished (a resumed run): its best weights loaded into ``model`` and its
    result record returned; None when it has still to be trained."""
    unit_dir = run.dir / "units" / name
    weights = unit_dir / "best.safetensors"
    if not ((unit_dir / "result.json").is_file() and weights.is_file()):
        return None
    model.load_state_dict(load_file(str(weights)))
    model.to(current().device)  # where fit leaves a model it trained: the run's device
    return run.read_json(f"units/{name}/result.json")


def save_unit(run: Run, name: str, result: FitResult, record: dict[str, Any]) -> None:
    """A finished unit: its history, its best weights, its result record (written last: what :func:`reload_unit`
    trusts), and no checkpoint (the unit is done; only its best weights are kept)."""
    unit_dir = run.path(f"units/{name}/x").parent
    run.path(f"history/{name}.csv").write_text(result.history.to_csv(index=False))
    with atomic_path(unit_dir / "best.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in result.best_state.items()}, str(tmp))
    run.write_json(f"units/{name}/result.json", record)
    (unit_dir / "checkpoint.pt").unlink(missing_ok=True)


def load_history(run: Run, name: str) -> pd.DataFrame:
    return pd.read_csv(run.dir / "history" / f"{name}.csv")


def stratified_fraction(split: Split, fraction: float, seed: int) -> Split:
    """A class-stratified random subset holding ``fraction`` of the split (at least 2 images per class)."""
    if fraction >= 1.0:
        return split
    rng = np.random.default_rng(seed)
    y = split.labels.reshape(-1)
    keep = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = max(2, round(fraction * len(idx)))
        keep.append(rng.choice(idx, min(k, len(idx)), replace=False))
    idx = np.sort(np.concatenate(keep))
    meta = None if split.metadata is None else split.metadata.iloc[idx].reset_index(drop=True)
    return Split(split.images[idx], split.labels[idx], meta)
