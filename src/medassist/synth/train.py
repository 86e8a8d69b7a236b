"""A generator trained once inside a run folder by the one engine, saved so that ``--resume`` can skip it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from medassist.config import TrainConfig, to_dict
from medassist.models import count_parameters
from medassist.run import Run
from medassist.train.engine import Labelled, PrivacyHook, StepFn, ValidateFn, fit, seed_everything
from medassist.utils.io import atomic_path


def train_generator(
    run: Run,
    name: str,
    build: Callable[[], nn.Module],
    train: Labelled,
    cfg: TrainConfig,
    *,
    step_fn: StepFn,
    validate: ValidateFn,
    num_classes: int,
    privacy: PrivacyHook | None = None,
    extra_modules: dict[str, nn.Module] | None = None,
    progress: bool = True,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train (or, if already done in this run, reload) the generator ``build()`` with :func:`fit`.

    ``extra_modules`` (a GAN's discriminator) are saved beside it and reloaded with it. Writes
    ``history/<name>.csv`` and ``units/<name>/`` (best weights, result.json with
    ``planned_epochs`` and ``under_trained``, :attr:`medassist.train.engine.FitResult.under_trained`).
    """
    unit_dir = run.path(f"units/{name}/x").parent
    seed_everything(cfg.seed, cfg.threads)
    model = build()
    files = {"model": model, **(extra_modules or {})}
    if (unit_dir / "result.json").is_file():
        for key, module in files.items():
            module.load_state_dict(load_file(str(unit_dir / f"{key}.safetensors")))
        return model, run.read_json(f"units/{name}/result.json")
    t0 = time.perf_counter()
    res = fit(
        model,
        train,
        train,
        cfg,
        num_classes=num_classes,
        checkpoint=unit_dir / "checkpoint.pt",
        resume=True,
        progress=progress,
        desc=name,
        step_fn=step_fn,
        validate=validate,
        privacy=privacy,
    )
    states = {"model": res.best_state, **{k: m.state_dict() for k, m in (extra_modules or {}).items()}}
    for key, state in states.items():
        with atomic_path(unit_dir / f"{key}.safetensors") as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp))
    result = {
        "name": name,
        "params": count_parameters(model),
        "best_epoch": res.best_epoch,
        "best_score": res.best_score,
        "epochs_run": len(res.history),
        "train_time": res.train_time,
        "wall_time": time.perf_counter() - t0,
        "budget_reached": res.budget_reached,
        "planned_epochs": res.planned_epochs,
        "under_trained": bool(res.under_trained),  # the budget ended it while validation still improved
        "config": to_dict(cfg),
    }
    if privacy is not None:
        result.update(epsilon=privacy.epsilon(), noise_multiplier=getattr(privacy, "noise_multiplier", None))
    run.path(f"history/{name}.csv").write_text(res.history.to_csv(index=False))
    run.write_json(f"units/{name}/result.json", result)
    (unit_dir / "checkpoint.pt").unlink(missing_ok=True)
    return model, result
