"""MedMNIST benchmark: medassist's recipe and the reference protocol, trained side by side on the same machine with
the same time budget, reported beside the published MedMNIST v2 rows.

Each (data set, seed, method) trains in a fresh child process, so that its peak memory (max RSS) is its own.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import math
import multiprocessing as mp
import resource
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from medassist.config import TrainConfig, option, to_dict
from medassist.errors import MedAssistError
from medassist.run import Run, markdown_table

# Published test AUC / ACC, MedMNIST v2 (Yang et al., Scientific Data 2023), as given in the shared data README.
PUBLISHED: dict[str, dict[str, tuple[float, float]]] = {
    "pneumoniamnist": {
        "ResNet-18 (28)": (0.944, 0.854),
        "ResNet-18 (224)": (0.956, 0.864),
        "ResNet-50 (28)": (0.948, 0.854),
        "ResNet-50 (224)": (0.962, 0.884),
        "auto-sklearn": (0.942, 0.855),
        "AutoKeras": (0.947, 0.878),
        "Google AutoML Vision": (0.991, 0.946),
    },
    "breastmnist": {
        "ResNet-18 (28)": (0.901, 0.863),
        "ResNet-18 (224)": (0.891, 0.833),
        "ResNet-50 (28)": (0.857, 0.812),
        "ResNet-50 (224)": (0.866, 0.842),
        "auto-sklearn": (0.836, 0.803),
        "AutoKeras": (0.871, 0.831),
        "Google AutoML Vision": (0.919, 0.861),
    },
}
# The targets: beat every published ResNet row.
TARGETS = {"pneumoniamnist": (0.97, 0.90), "breastmnist": (0.91, 0.87)}


def _recipe() -> TrainConfig:
    return TrainConfig(
        epochs=20,
        batch_size=64,
        optimizer="adamw",
        lr=2e-3,
        weight_decay=5e-4,
        scheduler="onecycle",
        budget_schedule=True,  # each member's onecycle anneals within its share of the budget, on any machine
        augment=True,
        monitor="val_auc",
        label_smoothing=0.05,
    )


def _reference() -> TrainConfig:
    return TrainConfig(
        epochs=100,
        batch_size=128,
        optimizer="adam",
        lr=1e-3,
        scheduler="step",
        milestones=[0.5, 0.75],
        gamma=0.1,
        monitor="val_auc",
    )


@dataclass
class BenchConfig:
    """The MedMNIST benchmark."""

    datasets: list[str] = option(["pneumoniamnist", "breastmnist"], "MedMNIST data sets")
    seeds: list[int] = option([0, 1, 2], "seeds (one training run each)")
    budget: float = option(600.0, "training time budget in seconds, per data set, seed and method")
    data_dir: str = option("", "data directory (default: $MEDASSIST_DATA_DIR, else a per-user cache)")
    out: str = option("runs", "folder in which the benchmark's run folder is made")
    recipe_model: str = option("cnn_gap", "model of medassist's recipe")
    recipe_width: int = option(32, "width (first-stage channels) of the recipe's cnn_gap")
    recipe_members: int = option(3, "models in the recipe's ensemble (probabilities averaged), sharing the budget")
    recipe_min_steps: int = option(
        800, "at least this many optimisation steps per recipe model (a small data set gets more epochs); 0 = off"
    )
    methods: list[str] = option(["medassist", "reference"], "methods run: medassist (the recipe) and/or reference")
    recipe: TrainConfig = field(default_factory=_recipe, metadata={"help": "medassist's training recipe"})
    reference: TrainConfig = field(
        default_factory=_reference, metadata={"help": "reference protocol: ResNet-18, Adam 1e-3, no augmentation"}
    )
    progress: bool = option(True, "show progress bars")


def _job(method: str, dataset: str, seed: int, cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """One (data set, seed, method) in a child process: test metrics, training time and peak memory."""
    from medassist.config import from_dict
    from medassist.data import load_medmnist
    from medassist.evaluate.metrics import METRICS
    from medassist.models import create_model
    from medassist.train import fit, predict_proba

    cfg = from_dict(BenchConfig, cfg_dict)
    data = load_medmnist(dataset, data_dir=cfg.data_dir or None, progress=False)
    if method == "medassist":
        members, base, model_name = cfg.recipe_members, cfg.recipe, cfg.recipe_model
        kwargs = {"width": cfg.recipe_width} if cfg.recipe_model == "cnn_gap" else {}
        name = f"{cfg.recipe_model} x{members} + recipe"
    else:
        members, base, model_name, kwargs, name = 1, cfg.reference, "resnet18", {}, "ResNet-18 reference protocol"
    if method == "medassist" and cfg.recipe_min_steps:
        steps_per_epoch = math.ceil(len(data.splits["train"]) / base.batch_size)
        base = dataclasses.replace(base, epochs=max(base.epochs, math.ceil(cfg.recipe_min_steps / steps_per_epoch)))
    t0 = time.perf_counter()
    probs, val_probs, epochs, budget_reached = [], [], 0, False
    for k in range(members):
        # The budget covers the whole method: each member gets an equal share of what is left.
        left = cfg.budget - (time.perf_counter() - t0)
        tcfg = dataclasses.replace(base, seed=seed * 1000 + k, time_budget=max(left / (members - k), 1.0))
        torch.manual_seed(tcfg.seed)
        model = create_model(model_name, num_classes=data.num_classes, in_channels=data.n_channels, **kwargs)
        result = fit(
            model,
            data.splits["train"],
            data.splits["val"],
            tcfg,
            num_classes=data.num_classes,
            progress=cfg.progress,
            desc=f"{dataset} {method} seed {seed} model {k + 1}/{members}",
        )
        probs.append(predict_proba(model, data.splits["test"].images))
        val_probs.append(predict_proba(model, data.splits["val"].images))
        epochs += len(result.history)
        budget_reached |= result.budget_reached
    train_time = time.perf_counter() - t0
    p, pv = np.mean(probs, axis=0), np.mean(val_probs, axis=0)  # the ensemble averages probabilities
    y, yv = data.splits["test"].labels.reshape(-1), data.splits["val"].labels.reshape(-1)
    return {
        "dataset": dataset,
        "method": name,
        "seed": seed,
        "test_auc": float(METRICS["auc"](y, p)),
        "test_accuracy": float(METRICS["accuracy"](y, p)),
        "val_auc": float(METRICS["auc"](yv, pv)),
        "val_accuracy": float(METRICS["accuracy"](yv, pv)),
        "members": members,
        "epochs_run": epochs,
        "train_time_s": train_time,
        "budget_reached": budget_reached,
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux: KiB
    }


def _in_child(*args: Any) -> dict[str, Any]:
    with cf.ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(_job, *args).result()


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per data set and method, beside the published rows and the targets."""
    rows = []
    for (ds, method), g in runs.groupby(["dataset", "method"], sort=False):
        auc_t, acc_t = TARGETS.get(ds, (np.nan, np.nan))
        rows.append(
            {
                "dataset": ds,
                "method": method,
                "seeds": len(g),
                "test_auc_mean": g.test_auc.mean(),
                "test_auc_std": g.test_auc.std(ddof=1) if len(g) > 1 else 0.0,
                "test_acc_mean": g.test_accuracy.mean(),
                "test_acc_std": g.test_accuracy.std(ddof=1) if len(g) > 1 else 0.0,
                "train_time_s_mean": g.train_time_s.mean(),
                "peak_memory_mb_max": g.peak_memory_mb.max(),
                "target_auc": auc_t,
                "target_acc": acc_t,
                "meets_target": bool(g.test_auc.mean() >= auc_t and g.test_accuracy.mean() >= acc_t),
            }
        )
    for ds in runs.dataset.unique():
        for method, (auc, acc) in PUBLISHED.get(ds, {}).items():
            rows.append({"dataset": ds, "method": f"published: {method}", "test_auc_mean": auc, "test_acc_mean": acc})
    return pd.DataFrame(rows)


def run_benchmark(cfg: BenchConfig) -> Run:
    """Run every (data set, seed, method), write runs.csv and summary tables, print the table."""
    from tqdm.auto import tqdm

    run = Run.create(cfg.out, "bench-medmnist", to_dict(cfg))
    with run:
        unknown = [m for m in cfg.methods if m not in ("medassist", "reference")]
        if unknown or not cfg.methods:
            raise MedAssistError(f"methods must be medassist and/or reference; got {cfg.methods}")
        jobs = [(m, ds, s) for ds in cfg.datasets for s in cfg.seeds for m in cfg.methods]
        rows = []
        for m, ds, s in tqdm(jobs, desc="benchmark", disable=not cfg.progress):
            rows.append(_in_child(m, ds, s, to_dict(cfg)))
            pd.DataFrame(rows).to_csv(run.path("tables/runs.csv"), index=False)
        runs = pd.DataFrame(rows)
        summary = summarise(runs)
        run.write_table("runs", runs)
        run.write_table("summary", summary, floatfmt=".3f")
        run.write_json("metrics.json", {"runs": runs.to_dict("records"), "summary": summary.to_dict("records")})
        print(markdown_table(summary, floatfmt=".3f"))
        print(f"benchmark run folder: {run.dir}")
    return run
