"""The one training engine: every study trains its models through :func:`fit`.

It keeps per-epoch history, selects the best epoch on a validation metric (keeping a copy of those weights),
stops early, writes a checkpoint after every epoch and resumes from it. A study that needs a special step
(a teacher for distillation, two losses for a multi-task head, a GAN's discriminator) passes its own ``step_fn``;
a model that is not a classifier (a generator) passes a ``validate`` hook; DP-SGD plugs in as a ``privacy`` hook.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from medassist.config import TrainConfig
from medassist.data.types import Split
from medassist.errors import MedAssistError
from medassist.evaluate.metrics import METRICS
from medassist.evaluate.multilabel import MULTILABEL_METRICS
from medassist.evaluate.training import under_trained
from medassist.train.augment import augment_batch
from medassist.train.checkpoint import load_checkpoint, save_checkpoint
from medassist.train.data import TASKS, Batcher, ImageBatcher, predict_proba, with_inputs
from medassist.train.device import Accelerator, current, state_to_cpu
from medassist.train.distributed import all_sum, any_rank, from_main, ranks, shard, sync_buffers
from medassist.train.losses import default_loss, init_prior_bias
from medassist.train.optim import build_optimizer, build_scheduler, steps_per_batch
from medassist.utils.cores import usable_cores

# step_fn(model, inputs, y) -> (loss, logits) or (loss, logits, logs): the part of a training step that differs
# between studies. ``inputs`` is the tuple of the model's positional arguments (images, or token ids and mask);
# ``logits`` may be None (a generator has none); ``logs`` maps names to per-batch scalars (a VAE's KL, a GAN's
# D(real)) that the history averages per epoch as ``train_<name>``. A step_fn object with ``state_dict`` and
# ``load_state_dict`` (a GAN step holding its discriminator and that optimiser) travels in the checkpoint.
StepFn = Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], tuple[Any, ...]]
# validate(model) -> {name: value}: the validation of a model that is not a classifier (e.g. {"loss": -ELBO});
# the history gets ``val_<name>`` and ``cfg.monitor`` names one of them.
ValidateFn = Callable[[nn.Module], dict[str, float]]
MONITORS = ("val_auc", "val_accuracy", "val_macro_f1", "val_micro_f1", "val_loss")
LOWER_IS_BETTER = ("loss", "distance")  # a monitor ending with one of these is minimised


class PrivacyHook(Protocol):
    """DP-SGD for :func:`fit` (e.g. Opacus): wraps the model and optimiser once before training."""

    def attach(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, *, n_samples: int, batch_size: int, epochs: int
    ) -> tuple[nn.Module, torch.optim.Optimizer]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class Labelled:
    """A batcher and its labels: (N,) class indices (multi-class) or (N, K) 0/1 (multi-label)."""

    batcher: Batcher
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.batcher)

    def subset(self, idx: np.ndarray) -> Labelled:
        return Labelled(self.batcher.subset(idx), self.labels[idx])


def as_labelled(data: Split | Labelled) -> Labelled:
    """An image :class:`Split` becomes an image batcher with its labels; a :class:`Labelled` passes through."""
    if isinstance(data, Labelled):
        return data
    return Labelled(ImageBatcher(data.images), data.labels)


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        history: one row per epoch (train/val loss and accuracy, val AUC, lr, epoch time).
        best_epoch: the epoch whose weights were kept (1-based).
        best_score: the monitored validation metric at that epoch.
        best_state: a copy of the model's state dict at the best epoch (already loaded into the model).
        stopped_early: True when early stopping ended training.
        budget_reached: True when the time budget ended training.
        planned_epochs: the epochs training was set to run (after ``min_steps``).
        batch_size: the batch it trained with (after ``min_batches``).
        train_time: seconds spent training and validating.
        grad_norms: per-layer gradient norms per epoch, when requested.
    """

    history: pd.DataFrame
    best_epoch: int
    best_score: float
    best_state: dict[str, torch.Tensor]
    stopped_early: bool = False
    budget_reached: bool = False
    planned_epochs: int = 0
    batch_size: int = 0
    train_time: float = 0.0
    grad_norms: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def under_trained(self) -> bool:
        """A time budget cut training while validation was still improving (:func:`under_trained`)."""
        return under_trained(
            budget_reached=self.budget_reached,
            best_epoch=self.best_epoch,
            epochs_run=len(self.history),
            planned_epochs=self.planned_epochs,
        )


def seed_everything(seed: int, threads: int = 0) -> None:
    """Seed Python, NumPy and PyTorch, and make CPU kernels deterministic."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Under torchrun the processes of one node share its cores (LOCAL_WORLD_SIZE of them run side by side).
    per_process = max(1, usable_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(threads or per_process)


def with_min_steps(cfg: TrainConfig, steps_per_epoch: int) -> TrainConfig:
    """``cfg`` with enough epochs for at least ``cfg.min_steps`` optimisation steps (small data sets train longer)."""
    if cfg.min_steps <= 0:
        return cfg
    return dataclasses.replace(cfg, epochs=max(cfg.epochs, math.ceil(cfg.min_steps / max(1, steps_per_epoch))))


MIN_BATCH = 8


def for_data_size(cfg: TrainConfig, n_train: int) -> TrainConfig:
    """``cfg`` as it trains on ``n_train`` examples: a smaller batch where an epoch would have fewer than
    ``cfg.min_batches`` steps, then enough epochs for ``cfg.min_steps`` steps.

    Both depend on the data alone, so every model of a comparison trained on the same data gets the same batch,
    the same epochs and the same number of optimisation steps, however much each step costs.
    """
    if cfg.min_batches > 0 and n_train > 0 and math.ceil(n_train / cfg.batch_size) < cfg.min_batches:
        cfg = dataclasses.replace(cfg, batch_size=max(MIN_BATCH, min(cfg.batch_size, n_train // cfg.min_batches)))
    return with_min_steps(cfg, max(1, math.ceil(n_train / cfg.batch_size)))


def _layer_names(model: nn.Module) -> dict[str, str]:
    """Parameter name -> layer name (the owning module), for per-layer gradient norms."""
    return {n: n.rsplit(".", 1)[0] if "." in n else n for n, p in model.named_parameters() if p.requires_grad}


class _Clock:
    """Seconds of training so far, resume included (paces a time-budgeted schedule)."""

    def __init__(self) -> None:
        self.start()

    def start(self, already: float = 0.0) -> None:
        self._t0 = time.perf_counter() - already

    def __call__(self) -> float:
        return time.perf_counter() - self._t0


def _is_better(score: float, best: float, monitor: str) -> bool:
    if math.isnan(score):
        return False
    if math.isnan(best):
        return True
    return score < best if monitor.endswith(LOWER_IS_BETTER) else score > best


@dataclass
class _Training:
    """One fit's state: what the epochs advance, what validation selects from and what a checkpoint holds."""

    model: nn.Module
    train_model: nn.Module  # the model, or its DP-SGD / DDP wrapper
    judged: nn.Module  # what validation sees: the model, or its moving average
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    ema: Any
    step: StepFn
    step_state: Any  # a step with its own state (a GAN's discriminator), else None
    privacy: PrivacyHook | None
    generators: dict[str, torch.Generator]
    accel: Accelerator
    per_step: bool
    layers: dict[str, str]
    rows: list[dict] = field(default_factory=list)
    norm_rows: list[dict] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    best_score: float = float("nan")
    best_epoch: int = 0
    bad_epochs: int = 0
    elapsed: float = 0.0
    start_epoch: int = 1


@dataclass
class _Epoch:
    """What one epoch of training sums up (over every rank under torchrun).

    The per-step sums stay on the device, in float64 (the loss, the correct predictions, a step's logs, the
    squared gradient norms), so that a GPU is not made to wait for the host at every step; :meth:`settle` brings
    them to the host once an epoch. The sums are those of Python floats, step for step, so the numbers are the
    same on the CPU."""

    loss_sum: Any = 0.0
    correct: Any = 0.0
    seen: int = 0
    n_steps: int = 0
    grad_norms: dict[str, Any] = field(default_factory=dict)
    logs: dict[str, Any] = field(default_factory=dict)
    finite: Any = True
    budget_reached: bool = False

    def settle(self) -> bool:
        """The sums as host floats (one transfer); False when a step's loss was not finite."""
        self.loss_sum, self.correct = _host(self.loss_sum), _host(self.correct)
        self.logs = {k: _host(v) for k, v in self.logs.items()}
        self.grad_norms = {k: _host(v) for k, v in self.grad_norms.items()}
        return bool(self.finite)


def _host(v: Any) -> float:
    return float(v.item()) if isinstance(v, torch.Tensor) else float(v)


def _sum(v: Any) -> torch.Tensor:
    """A step's scalar as a float64 tensor where it is (no host sync)."""
    return v.detach().double() if isinstance(v, torch.Tensor) else torch.tensor(float(v), dtype=torch.float64)


def _check_fit(cfg: TrainConfig, task: str, validate: ValidateFn | None) -> None:
    if validate is None and cfg.monitor not in MONITORS:
        raise MedAssistError(f"unknown monitor '{cfg.monitor}'; choose one of {', '.join(MONITORS)}")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise MedAssistError(f"epochs and batch_size must be at least 1 (got {cfg.epochs}, {cfg.batch_size})")
    if task not in TASKS:
        raise MedAssistError(f"unknown task '{task}'; choose one of {', '.join(TASKS)}")
    if not 0.0 <= cfg.ema < 1.0:
        raise MedAssistError(f"ema is a decay in [0, 1) (0 = off), got {cfg.ema}")


def fit(
    model: nn.Module,
    train: Split | Labelled,
    val: Split | Labelled,
    cfg: TrainConfig,
    *,
    num_classes: int,
    task: str = "multi-class",
    checkpoint: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    desc: str = "train",
    step_fn: StepFn | None = None,
    validate: ValidateFn | None = None,
    privacy: PrivacyHook | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> FitResult:
    """Train ``model`` on ``train``, validating on ``val`` after every epoch.

    Args:
        model: any ``nn.Module`` mapping the batcher's inputs to (B, num_classes) logits (or a tuple whose first
            element is those logits, for multi-task models with their own ``step_fn``).
        train: an image :class:`Split`, or a :class:`Labelled` batcher (e.g. token ids for text models).
        val: validation data; selects the best epoch and drives early stopping. Never the test split.
        cfg: optimiser, schedule, regularisation and stopping settings.
        num_classes: number of classes (multi-class) or labels (multi-label).
        task: "multi-class" (softmax, cross-entropy) or "multi-label" (sigmoid, binary cross-entropy).
        checkpoint: file written after every epoch (model, optimiser, schedule, history, every random state).
        resume: continue from ``checkpoint`` if it exists; a run killed mid-epoch repeats that epoch from the
            random state it started with, and ends with the weights and history of an uninterrupted run.
        progress: show a progress bar.
        desc: label of the progress bar.
        step_fn: replaces the default loss step; returns (loss, logits) or (loss, logits, logs).
        validate: replaces the classifier metrics on ``val`` (a generator's validation loss); ``cfg.monitor`` must
            be one of the ``val_<name>`` it returns.
        privacy: a DP-SGD hook that wraps the model and optimiser (its accountant travels in the checkpoint).
        on_epoch: called with each epoch's history row once its checkpoint is written (a sweep reports it to its
            scheduler, which may stop the trial there).

    The model trains on the current accelerator (:func:`medassist.train.device.current`: the run's
    ``--device`` and ``--precision``): the model, each batch, the loss weights and the moving average live on its
    device, the forward pass autocasts at its precision, and float16 gradients are scaled. Checkpoints and
    ``best_state`` hold CPU tensors, so that a run started on one device resumes on another.

    Returns:
        A :class:`FitResult`; the model is left holding the best epoch's weights, on the accelerator's device.
    """
    _check_fit(cfg, task, validate)
    accel = current()
    if privacy is not None and accel.precision != "32":
        raise MedAssistError(
            f"{desc}: DP-SGD runs at precision 32 only: per-example gradients clipped in {accel.precision} lose the "
            "precision that the (epsilon, delta) guarantee's clipping bound assumes; use --precision 32"
        )
    seed_everything(cfg.seed, cfg.threads)
    model.to(accel.device)
    train, val = as_labelled(train), as_labelled(val)
    y_labels = train.labels if task == "multi-label" else train.labels.reshape(-1)
    cfg = for_data_size(cfg, len(train.batcher))
    steps_per_epoch = max(1, math.ceil(len(train.batcher) / cfg.batch_size))
    clock = _Clock()
    t = _start(model, cfg, task, y_labels, num_classes, steps_per_epoch, clock, accel, step_fn, privacy)
    ckpt = Path(checkpoint) if checkpoint else None
    resumed = resume and ckpt is not None and ckpt.is_file()
    state = load_checkpoint(t, ckpt, desc) if resumed else {}
    _wrap(t, cfg, state, n_train=len(train.batcher), desc=desc)
    clock.start(t.elapsed)
    r = ranks()
    y_train = torch.from_numpy(y_labels.astype(np.int64))
    y_val = val.labels if task == "multi-label" else val.labels.reshape(-1).astype(np.int64)

    stopped_early = budget_reached = False
    done = bool(t.rows) and (t.rows[-1].get("stop_reason") or "") != ""
    bar = tqdm(
        total=cfg.epochs,
        initial=t.start_epoch - 1,
        desc=desc,
        disable=not progress or not r.is_main,
        leave=False,
        unit="ep",
    )
    for epoch in range(t.start_epoch, cfg.epochs + 1):
        if done:
            break
        t0 = time.perf_counter()
        sums = _train_epoch(t, cfg, train, y_train, task, desc, epoch, t0)
        budget_reached = sums.budget_reached
        sync_buffers(t.judged, r)
        val_metrics = from_main(_validate(t, val, y_val, task, validate, cfg, desc, epoch), r)
        lr = t.optimizer.param_groups[0]["lr"]  # the rate this epoch trained at, before an epoch-wise schedule steps
        monitored = _select(t, cfg, val_metrics, epoch)
        epoch_time = time.perf_counter() - t0
        t.elapsed += epoch_time
        stopped_early = cfg.early_stopping and t.bad_epochs >= cfg.patience
        _record(t, epoch, sums, val_metrics, lr, epoch_time, stopped_early)
        if ckpt is not None and r.is_main:
            save_checkpoint(t, ckpt, epoch, cfg)
        if on_epoch is not None and r.is_main:
            on_epoch(dict(t.rows[-1]))
        bar.update(1)
        bar.set_postfix({cfg.monitor: f"{monitored:.4f}", "best": f"{t.best_score:.4f}"})
        if stopped_early or budget_reached:
            break
    bar.close()
    if t.rows and t.rows[-1]["stop_reason"] == "early_stopping":
        stopped_early = True
    if t.rows and t.rows[-1]["stop_reason"] == "time_budget":
        budget_reached = True
    model.load_state_dict(t.best_state)
    return FitResult(
        history=pd.DataFrame(t.rows),
        best_epoch=t.best_epoch,
        best_score=float(t.best_score),
        best_state=t.best_state,
        stopped_early=stopped_early,
        budget_reached=budget_reached,
        planned_epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        train_time=t.elapsed,
        grad_norms=pd.DataFrame(t.norm_rows, columns=["epoch", "layer", "grad_norm"]),
    )


def _start(
    model: nn.Module,
    cfg: TrainConfig,
    task: str,
    y_labels: np.ndarray,
    num_classes: int,
    steps_per_epoch: int,
    clock: _Clock,
    accel: Accelerator,
    step_fn: StepFn | None,
    privacy: PrivacyHook | None,
) -> _Training:
    """The loss step, the optimiser, the schedule, the gradient scaler and the random generators of a new fit."""
    loss_fn = default_loss(task, cfg, y_labels, num_classes, accel.device)

    def default_step(
        m: nn.Module, inputs: tuple[torch.Tensor, ...], yb: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = m(*inputs)
        return loss_fn(logits, yb), logits

    step = step_fn or default_step
    if hasattr(step, "to"):  # a step's own modules (a GAN's discriminator) go where the model goes
        step.to(accel.device)  # type: ignore[union-attr]
    if cfg.prior_bias and task == "multi-label":
        init_prior_bias(model, y_labels)
    optimizer = build_optimizer(model, cfg)
    scaler = accel.grad_scaler()
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch, clock=clock)
    # Batch order and augmentation draw from generators of their own, so that turning augmentation on (an
    # ablation row) changes the augmentation only, not which images share a batch.
    generators = {
        "order": torch.Generator().manual_seed(cfg.seed),
        "augment": torch.Generator().manual_seed(cfg.seed + 1),
    }
    return _Training(
        model=model,
        train_model=model,
        judged=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        ema=None,
        step=step,
        step_state=step if hasattr(step, "state_dict") and hasattr(step, "load_state_dict") else None,
        privacy=privacy,
        generators=generators,
        accel=accel,
        per_step=steps_per_batch(cfg),
        layers=_layer_names(model) if cfg.grad_norms else {},
        best_state=_copy_state(model, accel),
    )


def _wrap(t: _Training, cfg: TrainConfig, state: dict[str, Any], *, n_train: int, desc: str) -> None:
    """The moving average (a copy of the model, made before DP-SGD or DDP wrap it) that validation sees; then
    DP-SGD's wrapper, or under torchrun DDP's (each rank trains on its shard of every batch, gradients averaged)."""
    if cfg.ema:
        t.ema = torch.optim.swa_utils.AveragedModel(
            t.model,
            device=t.accel.device,
            multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema),
            use_buffers=True,
        )
        if state.get("ema") is not None:
            t.ema.load_state_dict(state["ema"])
        t.judged = t.ema.module
    if t.privacy is not None:
        t.train_model, t.optimizer = t.privacy.attach(
            t.model, t.optimizer, n_samples=n_train, batch_size=cfg.batch_size, epochs=cfg.epochs
        )
        if state.get("privacy_state") is not None:
            t.privacy.load_state_dict(state["privacy_state"])
    if ranks().distributed:
        if t.privacy is not None:
            raise MedAssistError(f"{desc}: DP-SGD cannot be combined with torchrun's data parallelism; run it alone")
        ids = [t.accel.device.index] if t.accel.is_cuda else None  # each rank on its LOCAL_RANK GPU
        t.train_model = nn.parallel.DistributedDataParallel(t.train_model, device_ids=ids)


def _train_epoch(
    t: _Training,
    cfg: TrainConfig,
    train: Labelled,
    y_train: torch.Tensor,
    task: str,
    desc: str,
    epoch: int,
    t0: float,
) -> _Epoch:
    """One pass over the training batches (this rank's shard of each); stops early when the time budget ends."""
    r = ranks()
    s = _Epoch()
    t.train_model.train()
    order = _rank_batches(train.batcher.order(cfg.batch_size, generator=t.generators["order"]), r)
    for idx, inputs in with_inputs(train.batcher, order, pin=t.accel.is_cuda):
        yb = y_train[idx]
        if cfg.augment and getattr(train.batcher, "augmentable", False):  # on the CPU, from its own generator
            inputs = (augment_batch(inputs[0], cfg.augmentation, t.generators["augment"]), *inputs[1:])
        inputs, yb = tuple(t.accel.put(x) for x in inputs), t.accel.put(yb)
        with t.accel.autocast():
            out = t.step(t.train_model, inputs, yb)
        loss, logits = out[0], out[1]
        for k, v in (out[2] if len(out) > 2 else {}).items():
            s.logs[k] = s.logs.get(k, 0.0) + _sum(v) * len(idx)
        if t.accel.moves:  # checked once an epoch (settle), not at a host sync per step
            s.finite = torch.isfinite(loss.detach()) & s.finite
        elif not torch.isfinite(loss):
            _diverged(desc, epoch, cfg)
        _optimise(t, loss, s)
        s.n_steps += 1
        s.loss_sum = s.loss_sum + _sum(loss) * len(idx)
        s.correct = s.correct + (math.nan if logits is None else _n_correct(logits.detach().float(), yb, task))
        s.seen += len(idx)
        if cfg.time_budget and any_rank(t.elapsed + time.perf_counter() - t0 > cfg.time_budget, r):
            s.budget_reached = True
            break
    if not s.settle():
        _diverged(desc, epoch, cfg)
    if r.distributed:  # the epoch's training numbers over every rank's shards
        keys = sorted(s.logs)
        totals = all_sum([s.loss_sum, s.correct, float(s.seen), *(s.logs[k] for k in keys)], r)
        s.loss_sum, s.correct, s.seen = totals[0], totals[1], int(totals[2])
        s.logs = dict(zip(keys, totals[3:], strict=True))
    return s


def _optimise(t: _Training, loss: torch.Tensor, s: _Epoch) -> None:
    """Backward, the per-layer gradient norms (when recorded), the optimiser step (scaled for float16), the moving
    average and a per-batch schedule."""
    t.optimizer.zero_grad(set_to_none=True)
    if t.scaler is not None:
        t.scaler.scale(loss).backward()
        t.scaler.unscale_(t.optimizer)  # true gradients for the norms and the step
    else:
        loss.backward()
    if t.layers:
        per_layer: dict[str, Any] = {}
        for n, p in t.model.named_parameters():
            if p.grad is not None and n in t.layers:
                per_layer[t.layers[n]] = per_layer.get(t.layers[n], 0.0) + p.grad.detach().pow(2).sum().double()
        for k, v in per_layer.items():
            s.grad_norms[k] = s.grad_norms.get(k, 0.0) + v.sqrt()
    if t.scaler is not None:
        t.scaler.step(t.optimizer)
        t.scaler.update()
    else:
        t.optimizer.step()
    if t.ema is not None:
        t.ema.update_parameters(t.model)
    if t.per_step:
        t.scheduler.step()


def _validate(
    t: _Training,
    val: Labelled,
    y_val: np.ndarray,
    task: str,
    validate: ValidateFn | None,
    cfg: TrainConfig,
    desc: str,
    epoch: int,
) -> dict[str, float]:
    """The validation metrics of what is judged (the model or its moving average)."""
    if validate is not None:
        val_metrics = {k: float(v) for k, v in validate(t.judged).items()}
        if cfg.monitor.removeprefix("val_") not in val_metrics:
            known = ", ".join(f"val_{k}" for k in val_metrics)
            raise MedAssistError(f"{desc}: unknown monitor '{cfg.monitor}'; this model's validation gives {known}")
        return val_metrics
    val_probs = predict_proba(t.judged, val.batcher, task=task)
    if not np.isfinite(val_probs).all():
        _diverged(desc, epoch, cfg)
    metrics = MULTILABEL_METRICS if task == "multi-label" else METRICS
    return {name: float(fn(y_val, val_probs)) for name, fn in metrics.items()}


def _select(t: _Training, cfg: TrainConfig, val_metrics: dict[str, float], epoch: int) -> float:
    """Step an epoch-wise schedule; keep a copy of the weights when the monitored metric improved. Returns it."""
    monitored = val_metrics[cfg.monitor.removeprefix("val_")]
    if t.scheduler is not None and cfg.scheduler == "plateau":
        t.scheduler.step(monitored)
    elif t.scheduler is not None and not t.per_step:
        t.scheduler.step()
    if _is_better(monitored, t.best_score, cfg.monitor):
        t.best_score, t.best_epoch, t.bad_epochs = monitored, epoch, 0
        t.best_state = _copy_state(t.judged, t.accel)  # a copy, not a reference to the live weights
    else:
        t.bad_epochs += 1
    return monitored


def _record(
    t: _Training,
    epoch: int,
    s: _Epoch,
    val_metrics: dict[str, float],
    lr: float,
    epoch_time: float,
    stopped_early: bool,
) -> None:
    """The epoch's history row (with why training stopped there, if it did) and its gradient norms."""
    reason = "early_stopping" if stopped_early else "time_budget" if s.budget_reached else ""
    t.rows.append(
        {
            "epoch": epoch,
            "train_loss": s.loss_sum / max(s.seen, 1),
            "train_accuracy": s.correct / max(s.seen, 1),
            **{f"train_{k}": v / max(s.seen, 1) for k, v in s.logs.items()},
            **{f"val_{k}": v for k, v in val_metrics.items()},
            "lr": lr,
            "epoch_time": epoch_time,
            "samples": s.seen,
            "stop_reason": reason,
        }
    )
    t.norm_rows += [{"epoch": epoch, "layer": k, "grad_norm": v / max(s.n_steps, 1)} for k, v in s.grad_norms.items()]


def _rank_batches(order: Iterable[torch.Tensor], r: Any) -> Iterator[torch.Tensor]:
    """The index batches this rank trains on: under torchrun every rank drew the same global batch and keeps its
    shard (a batch smaller than the world is skipped by all); otherwise every batch."""
    for idx in order:
        if r.distributed:
            if len(idx) < r.world_size:
                continue
            idx = shard(idx, r)
        yield idx


def _copy_state(model: nn.Module, accel: Accelerator) -> dict[str, torch.Tensor]:
    """A copy of the model's weights on the CPU (a deep copy where they already are there)."""
    state = model.state_dict()
    return state_to_cpu(state) if accel.moves else copy.deepcopy(state)


def _n_correct(logits: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """Correct predictions in a batch (a float64 tensor where the logits are): cases (multi-class) or labels
    averaged per case (multi-label)."""
    if task == "multi-label":
        return ((logits > 0) == (y > 0)).float().mean(1).sum().double()
    return (logits.argmax(1) == y).sum().double()


def _diverged(desc: str, epoch: int, cfg: TrainConfig) -> None:
    raise MedAssistError(
        f"{desc}: training diverged (the loss became non-finite) at epoch {epoch}; lower the "
        f"learning rate (lr={cfg.lr})"
    )
