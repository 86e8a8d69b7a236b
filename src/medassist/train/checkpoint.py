"""The engine's checkpoint: everything a resume needs to end with the weights and history of an uninterrupted run
(model, optimiser, schedule, scaler, selection, history and every random state), written after every epoch."""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from medassist.config import TrainConfig, to_dict
from medassist.errors import MedAssistError
from medassist.train.device import to_cpu
from medassist.utils.io import atomic_path

if TYPE_CHECKING:
    from medassist.train.engine import _Training


def rng_state(generators: dict[str, torch.Generator], device: torch.device | None = None) -> dict[str, object]:
    """Every random state training draws from: PyTorch's global generator (dropout, drop-connect, a step_fn's
    noise) and, on CUDA, the device's, NumPy's and Python's global generators, and the engine's own ``generators``
    (batch order, augmentation)."""
    state: dict[str, object] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        **{f"generator:{k}": g.get_state() for k, g in generators.items()},
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(
    state: dict[str, object], generators: dict[str, torch.Generator], device: torch.device | None = None
) -> None:
    """Restore what :func:`rng_state` saved (a CUDA state only on CUDA: a GPU run resumed on a CPU goes on)."""
    torch.set_rng_state(state["torch"])  # type: ignore[arg-type]
    np.random.set_state(state["numpy"])  # type: ignore[arg-type]
    random.setstate(state["python"])  # type: ignore[arg-type]
    for k, g in generators.items():
        g.set_state(state[f"generator:{k}"])  # type: ignore[arg-type]
    if device is not None and device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)  # type: ignore[arg-type]


def save_checkpoint(t: _Training, path: Path, epoch: int, cfg: TrainConfig) -> None:
    """Everything a resume needs, written atomically (by rank 0 only). Nothing draws a random number between here
    and the next epoch's first batch, so the random state saved here is the one that epoch starts from: a run killed
    mid-epoch repeats that epoch exactly."""
    with atomic_path(path) as tmp:
        torch.save(
            to_cpu(  # the optimiser's moments, the moving average and a GAN's discriminator live on the device too
                {
                    "model": t.model.state_dict(),
                    "optimizer": t.optimizer.state_dict(),
                    "scaler": t.scaler.state_dict() if t.scaler is not None else None,
                    "scheduler": t.scheduler.state_dict() if t.scheduler is not None else None,
                    "epoch": epoch,
                    "history": t.rows,
                    "grad_norms": t.norm_rows,
                    "best_state": t.best_state,
                    "best_score": t.best_score,
                    "best_epoch": t.best_epoch,
                    "bad_epochs": t.bad_epochs,
                    "elapsed": t.elapsed,
                    "rng": rng_state(t.generators, t.accel.device),
                    "config": to_dict(cfg),
                    "step_state": t.step_state.state_dict() if t.step_state is not None else None,
                    "privacy_state": t.privacy.state_dict() if t.privacy is not None else None,
                    "ema": t.ema.state_dict() if t.ema is not None else None,
                }
            ),
            tmp,
        )


def load_checkpoint(t: _Training, path: Path, desc: str) -> dict[str, Any]:
    """Continue from a checkpoint: the weights, optimiser, schedule, scaler, history, selection and the random
    states the next epoch starts from. Returns the checkpoint (its moving average and DP-SGD state are restored
    once those exist)."""
    state = torch.load(path, map_location="cpu", weights_only=False)  # our own file: optimiser + RNG state
    if "rng" not in state:
        raise MedAssistError(
            f"{path} was written by an older medassist and lacks the random states a resume needs to give "
            f"the numbers of an uninterrupted run; delete it to train '{desc}' again from its first epoch"
        )
    t.model.load_state_dict(state["model"])
    t.optimizer.load_state_dict(state["optimizer"])
    if t.scheduler is not None and state["scheduler"] is not None:
        t.scheduler.load_state_dict(state["scheduler"])
    t.rows, t.norm_rows, t.best_state = state["history"], state["grad_norms"], state["best_state"]
    t.best_score, t.best_epoch, t.bad_epochs = state["best_score"], state["best_epoch"], state["bad_epochs"]
    t.elapsed, t.start_epoch = state["elapsed"], state["epoch"] + 1
    set_rng_state(state["rng"], t.generators, t.accel.device)  # the state with which the next epoch starts
    if t.scaler is not None and state.get("scaler") is not None:
        t.scaler.load_state_dict(state["scaler"])
    if t.step_state is not None and state.get("step_state") is not None:
        t.step_state.load_state_dict(state["step_state"])
    return state
