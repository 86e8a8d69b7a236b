"""Optimisers and learning-rate schedules by name."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from medassist.config import TrainConfig
from medassist.errors import MedAssistError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "step", "cosine", "onecycle", "plateau")
# Schedules stepped after every batch (the others step once per epoch).
PER_STEP = ("onecycle",)
# OneCycleLR's defaults, reused by the time-paced version: 30% warm-up from lr/25, annealing to lr/(25 * 1e4).
_PCT_START, _DIV, _FINAL_DIV = 0.3, 25.0, 1e4


def _cos(start: float, end: float, t: float) -> float:
    return end + (start - end) / 2 * (1 + math.cos(math.pi * min(max(t, 0.0), 1.0)))


def schedule_factor(name: str, progress: float, pct_start: float = _PCT_START) -> float:
    """lr / base lr of the onecycle or cosine schedule at ``progress`` (0 = first step, 1 = last step)."""
    if name == "cosine":
        return _cos(1.0, 0.0, progress)
    if name == "onecycle":
        if progress < pct_start:
            return _cos(1 / _DIV, 1.0, progress / pct_start)
        return _cos(1.0, 1 / (_DIV * _FINAL_DIV), (progress - pct_start) / (1 - pct_start))
    raise MedAssistError(f"budget_schedule needs scheduler onecycle or cosine, not '{name}'")


class PacedSchedule(torch.optim.lr_scheduler.LambdaLR):
    """Onecycle or cosine, stepped per batch, whose progress is the larger of steps done / planned steps and
    ``clock()`` / budget: on a slow machine the learning rate still anneals before the time budget stops training.
    Progress never goes back. Paced by steps alone it is torch's OneCycleLR (cosine annealing) step for step.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        name: str,
        total_steps: int,
        budget: float,
        clock: Callable[[], float],
        warmup: float = _PCT_START,
    ) -> None:
        schedule_factor(name, 0.0)  # fails early on an unsupported schedule
        last = max(1, total_steps - 1)  # torch's schedules end on the last step
        self.name, self.last, self.budget, self.clock, self.progress = name, last, budget, clock, 0.0
        self.pct_start = min(max((warmup * total_steps - 1) / last, 1e-6), 1 - 1e-6)  # where OneCycleLR peaks
        super().__init__(optimizer, self._factor)

    def state_dict(self) -> dict[str, Any]:
        """The schedule's state without its clock: a resumed run keeps the clock of its own process."""
        state = super().state_dict()
        state.pop("clock", None)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # A checkpoint of an older version holds the clock of the process that wrote it: never restore that.
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "clock"})

    def _factor(self, step: int) -> float:
        self.progress = min(1.0, max(self.progress, step / self.last, self.clock() / self.budget))
        return schedule_factor(self.name, self.progress, self.pct_start)


def steps_per_batch(cfg: TrainConfig) -> bool:
    """Whether the schedule of ``cfg`` steps after every batch rather than once per epoch."""
    return cfg.scheduler in PER_STEP or (cfg.scheduler != "none" and cfg.budget_schedule and cfg.time_budget > 0)


def layer_groups(model: nn.Module, lr: float, decay: float) -> list[dict[str, Any]]:
    """Parameter groups with layer-wise learning-rate decay: the model's ``layer_groups()`` (lists of parameters,
    input side first) at ``lr * decay ** depth``, depth counted from the last group (the head, at ``lr``).

    Raises :class:`MedAssistError` if the model does not list its layers or its lists miss a trainable parameter.
    """
    if not 0 < decay <= 1:
        raise MedAssistError(f"layer_decay must be in (0, 1]; got {decay}")
    if not hasattr(model, "layer_groups"):
        raise MedAssistError(
            f"layer_decay {decay}: {type(model).__name__} does not list its layers (layer_groups); use layer_decay 1"
        )
    layers = [[p for p in group if p.requires_grad] for group in model.layer_groups()]
    listed = {id(p) for group in layers for p in group}
    missing = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in listed]
    if missing:
        raise MedAssistError(f"{type(model).__name__}.layer_groups() misses trainable parameters {missing[:3]}")
    n = len(layers)
    return [{"params": group, "lr": lr * decay ** (n - 1 - i)} for i, group in enumerate(layers) if group]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD over the trainable parameters, with weight decay (and layer-wise learning rates when
    ``cfg.layer_decay`` is below 1)."""
    params: Any = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise MedAssistError("the model has no trainable parameters")
    if cfg.layer_decay != 1.0:
        params = layer_groups(model, cfg.lr, cfg.layer_decay)
    # The fused kernels update all parameters in one pass (several times faster than the per-tensor loop on CPU).
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, fused=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, fused=True)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0
        )
    raise MedAssistError(f"unknown optimizer '{cfg.optimizer}'; choose one of {', '.join(OPTIMIZERS)}")


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    steps_per_epoch: int,
    clock: Callable[[], float] | None = None,
) -> torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    """The schedule named by ``cfg.scheduler``; onecycle steps per batch, the others per epoch.

    With ``cfg.budget_schedule`` and a time budget, onecycle and cosine are paced by ``clock()`` (seconds of
    training so far) as well as by steps, and step per batch.
    """
    s = cfg.scheduler
    if s == "none":
        return None
    if cfg.budget_schedule and cfg.time_budget > 0:
        if clock is None:
            raise MedAssistError("budget_schedule needs a clock (seconds of training so far)")
        return PacedSchedule(
            optimizer, s, max(1, cfg.epochs * steps_per_epoch), cfg.time_budget, clock, warmup=cfg.warmup
        )
    if s == "step":
        milestones = sorted({max(1, round(f * cfg.epochs)) for f in cfg.milestones})
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=cfg.gamma)
    if s == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, cfg.epochs))
    if s == "onecycle":
        if not 0 < cfg.warmup < 1:
            raise MedAssistError(f"warmup is a share of the steps, in (0, 1); got {cfg.warmup}")
        total, pct = max(1, cfg.epochs * steps_per_epoch), cfg.warmup
        if math.isclose(pct * total, 1.0):  # torch divides by (warm-up steps - 1): one step would divide by zero
            pct = 2 / total if total > 2 else 0.25
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[g["lr"] for g in optimizer.param_groups],  # each group peaks at its own (layer-wise) rate
            total_steps=total,
            pct_start=pct,
        )
    if s == "plateau":
        mode = "min" if cfg.monitor.endswith("loss") else "max"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=mode, factor=cfg.gamma, patience=max(1, cfg.patience // 2)
        )
    raise MedAssistError(f"unknown scheduler '{s}'; choose one of {', '.join(SCHEDULERS)}")
