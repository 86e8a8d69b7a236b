"""Sweeps on Ray Tune: ``medassist tune image --space space.yaml --samples 20 --scheduler asha``.

Ray Tune drives the image study's training (one model per trial, trained by the one engine :func:`fit`) over a
search space written in YAML. Every epoch reports the validation metric, so that ASHA stops poor trials early; the
best trial is chosen on validation only (its best epoch, as the engine chooses epochs), and its settings are written
as ``best.yaml``, which ``medassist image --config best.yaml`` takes. Local by default (``ray.init`` on this
machine, one trial per core, no dashboard); ``address`` joins a running Ray cluster.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from medassist.config import DeviceOptions, RunOptions, flatten, from_dict, merge, option, to_dict
from medassist.errors import MedAssistError
from medassist.run import Run
from medassist.studies.image_config import ImageStudyConfig
from medassist.studies.table import STUDIES as TABLE
from medassist.studies.text_setup import TRANSFORMERS, TextStudyConfig
from medassist.studies.tune_space import load_space, split_params
from medassist.train.device import on_device, resolve, use

SCHEDULERS = ("asha", "fifo")
STUDIES = tuple(s.command[0] for s in TABLE if s.tunable)  # the studies whose training a sweep can tune
SWEEP_METRICS = ("val_auc", "val_accuracy", "val_macro_f1", "val_loss")


@dataclass
class TuneConfig(DeviceOptions, RunOptions):
    """A sweep: which study, which space, how many trials, how they are scheduled and where they run."""

    study: str = option("image", "the study whose training is swept: image | text")
    space: str = option("", "YAML search space: dotted option -> distribution (see medassist.studies.tune_space)")
    samples: int = option(20, "trials sampled from the space")
    scheduler: str = option("asha", "asha (stop poor trials early) | fifo (run every trial to the end)")
    metric: str = option(
        "val_auc", "validation metric that ranks trials: val_auc | val_accuracy | val_macro_f1 | val_loss"
    )
    grace_epochs: int = option(2, "ASHA: epochs every trial runs before it may be stopped")
    reduction_factor: int = option(2, "ASHA: the fraction 1/factor of trials promoted at each rung")
    model: str = option("", "model trained in every trial unless the space sets it (default: cnn_gap | bilstm)")
    cpus_per_trial: float = option(1.0, "CPU cores each trial reserves (one trial per core by default)")
    num_cpus: int = option(0, "local Ray: cores Ray may use (0 = all of this machine's)")
    gpus_per_trial: float = option(
        -1.0,
        "GPUs each trial reserves; a fraction shares one GPU (0.25: four trials on it); -1 = 1 when --device is a "
        "GPU, else 0",
    )
    address: str = option(
        "", "join a running Ray cluster at this address (e.g. ray://head:10001) instead of a local one"
    )
    seed: int = option(0, "seed of the random search (the trials' training seed is image.train.seed)")
    out: str = option("runs", "folder in which the sweep's run folder is made")
    progress: bool = option(True, "show Ray Tune's progress table")
    image: ImageStudyConfig = field(
        default_factory=ImageStudyConfig, metadata={"help": "image sweeps: data and base training of every trial"}
    )
    text: TextStudyConfig = field(
        default_factory=TextStudyConfig, metadata={"help": "text sweeps: reports and base training of every trial"}
    )


def _study_cls(study: str) -> type:
    return TextStudyConfig if study == "text" else ImageStudyConfig


def default_model(cfg: TuneConfig) -> str:
    return cfg.model or ("bilstm" if cfg.study == "text" else "cnn_gap")


def study_keys(cfg: TuneConfig) -> set[str]:
    """The dotted options a space may set: every option of the study's config, with its sections."""
    flat = flatten(to_dict(getattr(cfg, cfg.study)))
    keys = set(flat)
    for key in flat:
        parts = key.split(".")
        keys.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return keys


def trial_config(
    base: dict[str, Any], params: dict[str, Any], default_model: str, study: str = "image"
) -> tuple[Any, dict]:
    """The study configuration of one trial, and its own settings (model, dropout, model kwargs)."""
    own, nested = split_params(params)
    cfg = from_dict(_study_cls(study), merge(base, nested))
    kwargs = {k.split(".", 1)[1]: v for k, v in own.items() if k.startswith("model_kwargs.")}
    return cfg, {"model": own.get("model", default_model), "dropout": float(own.get("dropout", 0.0)), "kwargs": kwargs}


def _report(row: dict[str, Any]) -> None:
    from ray import tune

    tune.report({k: float(v) for k, v in row.items() if k.startswith(("val_", "train_")) or k == "epoch"})


def _on_trial_device(trial: Callable[..., None]) -> Callable[..., None]:
    """A trial run on the sweep's device and precision (in a Ray worker, ``cuda`` is the GPU Ray gave it)."""

    @functools.wraps(trial)
    def wrapper(params: dict[str, Any], *, device: str = "cpu", precision: str = "32", **kwargs: Any) -> None:
        with use(resolve("cuda" if device.startswith("cuda") else device, precision)):
            trial(params, **kwargs)

    return wrapper


@_on_trial_device
def run_text_trial(params: dict[str, Any], *, base: dict[str, Any], default_model: str, threads: int) -> None:
    """One text trial: the study's reports, tokenised as the study tokenises them, one model trained by ``fit``."""
    import tempfile

    from medassist.models import create_model
    from medassist.studies.text_setup import Encoded, load_text_data
    from medassist.train import fit

    cfg, own = trial_config(base, params, default_model, "text")
    data = load_text_data(dataclasses.replace(cfg, progress=False))
    arch = own["model"]
    base_train = cfg.transformer_train if arch in TRANSFORMERS else cfg.rnn_train
    balance = cfg.balance_classes and data.task == "multi-class"
    train_cfg = dataclasses.replace(
        base_train, seed=cfg.seed, threads=threads, class_weights=base_train.class_weights or balance
    )
    with tempfile.TemporaryDirectory() as tmp:  # the vocabulary file the encoder writes; the trial keeps none
        enc = Encoded(data, Run.create(tmp, "trial", {}), cfg.max_len)
        sets = enc.get(arch)
        model = create_model(
            arch, num_classes=data.num_labels, **enc.model_kwargs(arch, own["dropout"]), **own["kwargs"]
        )
        fit(
            model,
            sets["train"],
            sets["val"],
            train_cfg,
            num_classes=data.num_labels,
            task=data.task,
            progress=False,
            desc="trial",
            on_epoch=_report,
        )


@_on_trial_device
def run_trial(params: dict[str, Any], *, base: dict[str, Any], default_model: str, threads: int) -> None:
    """One trial, run by Ray Tune in a worker process: train one model, reporting every epoch's validation."""
    from medassist.models import create_model
    from medassist.studies.image import load_data
    from medassist.train import fit

    cfg, own = trial_config(base, params, default_model)
    data = load_data(dataclasses.replace(cfg, progress=False))
    train_cfg = dataclasses.replace(cfg.train, threads=threads)
    model = create_model(
        own["model"],
        num_classes=data.num_classes,
        in_channels=data.n_channels,
        dropout=own["dropout"],
        **{"image_size": data.image_size, **own["kwargs"]},
    )

    fit(
        model,
        data.splits["train"],
        data.splits["val"],
        train_cfg,
        num_classes=data.num_classes,
        progress=False,
        desc="trial",
        on_epoch=_report,
    )


def _scheduler(cfg: TuneConfig, mode: str) -> Any:
    if cfg.scheduler == "fifo":
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=max(_max_epochs(cfg), cfg.grace_epochs),
        grace_period=max(1, cfg.grace_epochs),
        reduction_factor=max(2, cfg.reduction_factor),
    )


def _max_epochs(cfg: TuneConfig) -> int:
    if cfg.study == "text":
        return max(cfg.text.rnn_train.epochs, cfg.text.transformer_train.epochs)
    return cfg.image.train.epochs


def check_config(cfg: TuneConfig) -> dict[str, Any]:
    """Refuse a sweep that cannot run, before Ray starts; return its search space."""
    if cfg.study not in STUDIES:
        raise MedAssistError(f"unknown study '{cfg.study}' to tune; choose one of {', '.join(STUDIES)}")
    if not cfg.space:
        raise MedAssistError("give the search space: --space space.yaml (see `medassist tune image --help`)")
    if cfg.scheduler not in SCHEDULERS:
        raise MedAssistError(f"unknown scheduler '{cfg.scheduler}'; choose one of {', '.join(SCHEDULERS)}")
    if cfg.metric not in SWEEP_METRICS:
        raise MedAssistError(f"unknown metric '{cfg.metric}'; choose one of {', '.join(SWEEP_METRICS)}")
    if cfg.samples < 1:
        raise MedAssistError(f"samples must be at least 1 (got {cfg.samples})")
    return load_space(cfg.space, study_keys=study_keys(cfg))


def trial_resources(cfg: TuneConfig) -> dict[str, float]:
    """What Ray reserves for each trial: ``cpus_per_trial`` cores, and GPUs when the sweep runs on CUDA."""
    gpus = cfg.gpus_per_trial if cfg.gpus_per_trial >= 0 else (1.0 if cfg.device.startswith("cuda") else 0.0)
    if gpus > 0 and not cfg.device.startswith("cuda"):
        raise MedAssistError(f"--gpus-per-trial {gpus}: the sweep runs on {cfg.device}; give --device cuda")
    if gpus == 0 and cfg.device.startswith("cuda"):
        raise MedAssistError(
            f"--gpus-per-trial 0 with --device {cfg.device}: Ray hides every GPU from a trial that reserves none, so "
            "its training could not reach CUDA; give a share of a GPU (e.g. --gpus-per-trial 0.25 runs four trials "
            "on one) or --device cpu"
        )
    return {"cpu": cfg.cpus_per_trial, "gpu": gpus} if gpus > 0 else {"cpu": cfg.cpus_per_trial}


@on_device
def run_tune(cfg: TuneConfig) -> Path:
    """Run the sweep; write its run folder (trials table and figure, best.yaml, report) and return it."""
    import ray
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    space = check_config(cfg)
    trial_resources(cfg)  # refused here, before Ray starts
    mode = "min" if cfg.metric.endswith("loss") else "max"
    cpus = cfg.num_cpus or os.cpu_count() or 1
    threads = max(1, int(cfg.cpus_per_trial))
    with Run.create(cfg.out, f"tune-{cfg.study}", to_dict(cfg), kind="tune") as run:
        started = not ray.is_initialized()
        if started:
            if cfg.address:
                ray.init(address=cfg.address, log_to_driver=False)
            else:
                ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        t0 = time.perf_counter()
        try:
            trainable = tune.with_parameters(
                run_text_trial if cfg.study == "text" else run_trial,
                base=to_dict(getattr(cfg, cfg.study)),
                default_model=default_model(cfg),
                threads=threads,
                device=cfg.device,
                precision=cfg.precision,
            )
            tuner = tune.Tuner(
                tune.with_resources(trainable, trial_resources(cfg)),
                param_space=space,
                tune_config=tune.TuneConfig(
                    metric=cfg.metric,
                    mode=mode,
                    num_samples=cfg.samples,
                    scheduler=_scheduler(cfg, mode),
                    search_alg=BasicVariantGenerator(random_state=cfg.seed),
                ),
                run_config=tune.RunConfig(
                    name="ray",
                    storage_path=str(run.path("trials/x").parent.resolve()),
                    verbose=1 if cfg.progress else 0,
                ),
            )
            grid = tuner.fit()
        finally:
            if started:
                ray.shutdown()
        wall = time.perf_counter() - t0
        trials, curves = trial_tables(grid, space, cfg.metric, mode)
        if trials.empty:
            raise MedAssistError("no trial reported a validation metric; see the errors under trials/ray")
        run.write_table("trials", trials)
        run.write_table("curves", curves)
        best = trials.iloc[0]
        from medassist.evaluate.plots import plot_trials

        plot_trials(curves, cfg.metric, run.figure("trials"), best=str(best["trial"]))
        params = {k.removeprefix("param:"): v for k, v in best.items() if str(k).startswith("param:")}
        best_yaml = best_config(params, cfg)
        (run.path("best.yaml")).write_text(yaml.safe_dump(best_yaml, sort_keys=False))
        run.write_metrics(
            {
                "kind": "tune",
                "study": cfg.study,
                "metric": cfg.metric,
                "mode": mode,
                "scheduler": cfg.scheduler,
                "samples": cfg.samples,
                "trials_failed": int(sum(1 for r in grid if r.error is not None)),
                "wall_time_s": wall,
                "best": {"trial": best["trial"], "score": float(best["best_score"]), "epoch": int(best["best_epoch"])},
                "best_config": best_yaml,
            },
        )
        from medassist.report.tune import write_tune_report

        write_tune_report(run.dir)
    return run.dir


def trial_tables(grid: Any, space: dict[str, Any], metric: str, mode: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per trial (its sampled settings, best epoch and score, epochs run), best first; and every epoch."""
    rows, curves = [], []
    for result in grid:
        hist = result.metrics_dataframe
        if hist is None or hist.empty or metric not in hist:
            continue
        trial = str(hist["trial_id"].iloc[0])
        scores = hist[metric]
        i = int(scores.idxmin() if mode == "min" else scores.idxmax())
        row = {"trial": trial}
        row.update({f"param:{k}": result.config.get(k) for k in space})
        row.update(
            {
                "best_score": float(scores.loc[i]),
                "best_epoch": int(hist["epoch"].loc[i]),
                "epochs_run": len(hist),
                "error": "" if result.error is None else type(result.error).__name__,
            }
        )
        rows.append(row)
        curves += [
            {"trial": trial, "epoch": int(e), metric: float(s)} for e, s in zip(hist["epoch"], scores, strict=True)
        ]
    trials = pd.DataFrame(rows)
    if not trials.empty:
        trials = trials.sort_values("best_score", ascending=mode == "min", kind="stable").reset_index(drop=True)
    return trials, pd.DataFrame(curves)


def best_config(params: dict[str, Any], cfg: TuneConfig) -> dict[str, Any]:
    """The best trial's settings as a config file of the study (the sweep's keys only, over any profile)."""
    own, nested = split_params(params)
    out = merge({}, nested)
    model = own.get("model", default_model(cfg))
    if cfg.study == "text":
        out["transformer" if model in TRANSFORMERS else "recurrent"] = model
        if "dropout" in own:  # the text study's dropout of that model's runs (its sweep varies it further)
            out["transformer_dropout" if model in TRANSFORMERS else "base_dropout"] = float(own["dropout"])
        return _plain(out)
    out["models"] = [model]
    if "dropout" in own:  # the image study applies dropout in its 'dropout' (and 'all') ablation rows
        out.setdefault("regularisation", {})["dropout"] = float(own["dropout"])
    return _plain(out)


def _plain(obj: Any) -> Any:
    """Numpy scalars as Python ones, so that the YAML holds plain values."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj.item() if hasattr(obj, "item") else obj
