"""MedMNIST benchmark: medassist's recipe and the reference protocol, trained side by side on the same machine with
the same time budget, reported beside the published MedMNIST v2 rows.

Each (data set, seed, method) trains in a fresh child process, so that its peak memory (max RSS) is its own.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import multiprocessing as mp
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from medassist.config import DeviceOptions, RunOptions, TrainConfig, option, to_dict
from medassist.errors import MedAssistError
from medassist.run import Run, peak_rss_gb
from medassist.train.device import on_device
from medassist.utils.format import readable_table

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
        min_steps=800,  # a small data set (BreastMNIST: 9 steps per epoch) gets enough epochs to converge
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
class BenchConfig(DeviceOptions, RunOptions):
    """The MedMNIST benchmark."""

    datasets: list[str] = option(["pneumoniamnist", "breastmnist"], "MedMNIST data sets")
    seeds: list[int] = option([0, 1, 2], "seeds (one training run each)")
    budget: float = option(600.0, "training time budget in seconds, per data set, seed and method")
    image_size: int = option(
        28, "MedMNIST release: 28, or MedMNIST+'s 64, 128 or 224 px (downloaded once, MD5-checked)"
    )
    data_dir: str = option("", "data directory (default: $MEDASSIST_DATA_DIR, else a per-user cache)")
    recipe_model: str = option("cnn_gap", "model of medassist's recipe")
    recipe_width: int = option(32, "width (first-stage channels) of the recipe's cnn_gap")
    recipe_input_size: int = option(32, "input size of the recipe's efficientnet_lite0 (images are upsampled)")
    recipe_members: int = option(3, "models in the recipe's ensemble (probabilities averaged), sharing the budget")
    tta_flip: bool = option(False, "recipe: average the probabilities of each image and its horizontal flip")
    threshold: str = option(
        "argmax", "recipe's decision: argmax | val_accuracy | val_youden (a threshold chosen on validation only)"
    )
    methods: list[str] = option(["medassist", "reference"], "methods run: medassist (the recipe) and/or reference")
    recipe: TrainConfig = field(default_factory=_recipe, metadata={"help": "medassist's training recipe"})
    reference: TrainConfig = field(
        default_factory=_reference, metadata={"help": "reference protocol: ResNet-18, Adam 1e-3, no augmentation"}
    )


def _recipe_kwargs(cfg: BenchConfig) -> dict[str, Any]:
    if cfg.recipe_model == "cnn_gap":
        return {"width": cfg.recipe_width}
    if cfg.recipe_model == "efficientnet_lite0":
        return {"mode": "finetune", "input_size": cfg.recipe_input_size}  # ImageNet weights, all layers trained
    return {}


def _recipe_name(cfg: BenchConfig) -> str:
    name = f"{cfg.recipe_model} x{cfg.recipe_members} + recipe"
    if cfg.recipe_model == "efficientnet_lite0":
        name += f" ({cfg.recipe_input_size} px)"
    if cfg.tta_flip:
        name += " + flip TTA"
    if cfg.threshold != "argmax":
        name += f" + {cfg.threshold} threshold"
    return name


def check_config(cfg: BenchConfig) -> None:
    """Refuse an unknown method or threshold rule before anything trains."""
    from medassist.evaluate.decision import THRESHOLD_RULES

    unknown = [m for m in cfg.methods if m not in ("medassist", "reference")]
    if unknown or not cfg.methods:
        raise MedAssistError(f"methods must be medassist and/or reference; got {cfg.methods}")
    if cfg.threshold not in THRESHOLD_RULES:
        raise MedAssistError(f"unknown threshold '{cfg.threshold}'; choose one of {', '.join(THRESHOLD_RULES)}")


def lever_rows(y_val: np.ndarray, val_plain: np.ndarray, val_flip: np.ndarray) -> list[dict[str, Any]]:
    """Validation AUC and accuracy of every (test-time flip, threshold rule) pair, from validation data only.

    ``val_accuracy`` is measured at the threshold chosen on the same cases (optimistic for a chosen threshold);
    ``val_accuracy_loo`` decides each case with a threshold chosen on the others, the fair comparison with argmax.
    """
    from medassist.evaluate.decision import (
        THRESHOLD_RULES,
        choose_threshold,
        leave_one_out_accuracy,
        threshold_accuracy,
    )
    from medassist.evaluate.metrics import METRICS

    rows = []
    for flip, pv in ((False, val_plain), (True, val_flip)):
        for rule in THRESHOLD_RULES if pv.shape[1] == 2 else ("argmax",):
            if rule == "argmax":
                t, acc, loo = 0.5, METRICS["accuracy"](y_val, pv), METRICS["accuracy"](y_val, pv)
            else:
                t = choose_threshold(y_val, pv, rule)
                acc, loo = threshold_accuracy(y_val, pv, t), leave_one_out_accuracy(y_val, pv, rule)
            rows.append(
                {
                    "tta_flip": flip,
                    "threshold_rule": rule,
                    "threshold": t,
                    "val_auc": float(METRICS["auc"](y_val, pv)),
                    "val_accuracy": float(acc),
                    "val_accuracy_loo": float(loo),
                }
            )
    return rows


def decide(
    rule: str, y_val: np.ndarray, p_val: np.ndarray, y_test: np.ndarray, p_test: np.ndarray
) -> tuple[float, float, float]:
    """Threshold (NaN for argmax), validation and test accuracy: the threshold is chosen on validation alone and
    applied unchanged to the test probabilities."""
    from medassist.evaluate.decision import choose_threshold, threshold_accuracy
    from medassist.evaluate.metrics import METRICS

    if rule == "argmax":
        return float("nan"), float(METRICS["accuracy"](y_val, p_val)), float(METRICS["accuracy"](y_test, p_test))
    t = choose_threshold(y_val, p_val, rule)
    return t, threshold_accuracy(y_val, p_val, t), threshold_accuracy(y_test, p_test, t)


def _job(method: str, dataset: str, seed: int, cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """One (data set, seed, method) in a child process, on the run's device: test metrics, training time and peak
    memory (the process's, and the GPU's where one ran)."""
    from medassist.config import from_dict
    from medassist.train.device import resolve, use

    cfg = from_dict(BenchConfig, cfg_dict)
    with use(resolve(cfg.device, cfg.precision)) as accel:
        row = _job_on_device(method, dataset, seed, cfg)
        peak = accel.peak_memory_gb()
    return {**row, "peak_gpu_memory_mb": None if peak is None else peak * 1024}


def _job_on_device(method: str, dataset: str, seed: int, cfg: BenchConfig) -> dict[str, Any]:
    from medassist.data import load_medmnist
    from medassist.evaluate.decision import predict_proba_flip
    from medassist.evaluate.metrics import METRICS
    from medassist.models import create_model
    from medassist.train import fit

    data = load_medmnist(dataset, data_dir=cfg.data_dir or None, progress=False, size=cfg.image_size)
    if method == "medassist":
        members, base, model_name, kwargs = cfg.recipe_members, cfg.recipe, cfg.recipe_model, _recipe_kwargs(cfg)
        name, tta, rule = _recipe_name(cfg), cfg.tta_flip, cfg.threshold
    else:  # the reference protocol is the published one: argmax of one model, no test-time flips
        members, base, model_name, kwargs = 1, cfg.reference, "resnet18", {}
        name, tta, rule = "ResNet-18 reference protocol", False, "argmax"
    if model_name != "efficientnet_lite0":  # its stem fitted to the release's size (EfficientNet resizes itself)
        kwargs = {**kwargs, "image_size": cfg.image_size}
    test, val = data.splits["test"], data.splits["val"]
    t0 = time.perf_counter()
    probs: dict[str, list[np.ndarray]] = {"test": [], "test_flip": [], "val": [], "val_flip": []}
    epochs, budget_reached = 0, False
    for k in range(members):
        # The budget covers the whole method: each member gets an equal share of what is left.
        left = cfg.budget - (time.perf_counter() - t0)
        tcfg = dataclasses.replace(base, seed=seed * 1000 + k, time_budget=max(left / (members - k), 1.0))
        torch.manual_seed(tcfg.seed)
        model = create_model(model_name, num_classes=data.num_classes, in_channels=data.n_channels, **kwargs)
        result = fit(
            model,
            data.splits["train"],
            val,
            tcfg,
            num_classes=data.num_classes,
            progress=cfg.progress,
            desc=f"{dataset} {method} seed {seed} model {k + 1}/{members}",
        )
        for split, s in (("test", test), ("val", val)):
            probs[split].append(predict_proba_flip(model, s.images, flip=False))
            probs[f"{split}_flip"].append(predict_proba_flip(model, s.images, flip=True))
        epochs += len(result.history)
        budget_reached |= result.budget_reached
    train_time = time.perf_counter() - t0
    mean = {k: np.mean(v, axis=0) for k, v in probs.items()}  # the ensemble averages probabilities
    y, yv = test.labels.reshape(-1), val.labels.reshape(-1)
    p, pv = (mean["test_flip"], mean["val_flip"]) if tta else (mean["test"], mean["val"])
    threshold, val_acc, test_acc = decide(rule, yv, pv, y, p)
    return {
        "dataset": dataset,
        "method": name,
        "seed": seed,
        "test_auc": float(METRICS["auc"](y, p)),
        "test_accuracy": test_acc,
        "val_auc": float(METRICS["auc"](yv, pv)),
        "val_accuracy": val_acc,
        "threshold": threshold,
        "members": members,
        "epochs_run": epochs,
        "train_time_s": train_time,
        "budget_reached": budget_reached,
        "peak_memory_mb": peak_rss_gb() * 1024,
        "levers": [
            {"dataset": dataset, "method": name, "seed": seed, **r}
            for r in lever_rows(yv, mean["val"], mean["val_flip"])
        ],
    }


def _in_child(*args: Any) -> dict[str, Any]:
    with cf.ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(_job, *args).result()


def _verdict(auc: float, acc: float, auc_t: float, acc_t: float) -> str:
    """ "met" or "missed" against a data set's target AUC and accuracy; "no target" where it has none."""
    if np.isnan(auc_t) or np.isnan(acc_t):
        return "no target"
    return "met" if auc >= auc_t and acc >= acc_t else "missed"


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
                "test_auc_std": g.test_auc.std(ddof=1) if len(g) > 1 else np.nan,  # undefined for one seed
                "test_acc_mean": g.test_accuracy.mean(),
                "test_acc_std": g.test_accuracy.std(ddof=1) if len(g) > 1 else np.nan,
                "train_time_s_mean": g.train_time_s.mean(),
                "peak_memory_mb_max": g.peak_memory_mb.max(),
                **(
                    {"peak_gpu_memory_mb_max": g.peak_gpu_memory_mb.max()}
                    if "peak_gpu_memory_mb" in g and g.peak_gpu_memory_mb.notna().any()
                    else {}
                ),
                "target_auc": auc_t,
                "target_acc": acc_t,
                "target": _verdict(g.test_auc.mean(), g.test_accuracy.mean(), auc_t, acc_t),
            }
        )
    for ds in runs.dataset.unique():
        for method, (auc, acc) in PUBLISHED.get(ds, {}).items():
            rows.append({"dataset": ds, "method": f"published: {method}", "test_auc_mean": auc, "test_acc_mean": acc})
    return pd.DataFrame(rows)


@on_device
def run_benchmark(cfg: BenchConfig) -> Run:
    """Run every (data set, seed, method), write runs.csv and summary tables, print the table."""
    from tqdm.auto import tqdm

    check_config(cfg)
    run = Run.create(cfg.out, "bench-medmnist", to_dict(cfg), kind="bench_medmnist")
    with run:
        jobs = [(m, ds, s) for ds in cfg.datasets for s in cfg.seeds for m in cfg.methods]
        rows, levers = [], []
        for m, ds, s in tqdm(jobs, desc="benchmark", disable=not cfg.progress):
            row = _in_child(m, ds, s, to_dict(cfg))
            levers += row.pop("levers")
            rows.append(row)
            pd.DataFrame(rows).to_csv(run.path("tables/runs.csv"), index=False)
        runs, val_levers = pd.DataFrame(rows), pd.DataFrame(levers)
        summary = summarise(runs)
        run.write_table("runs", runs)
        run.write_table("summary", summary, floatfmt=".3f")
        # Validation only: what each lever would have given, for choosing the next setting without the test split.
        run.write_table("val_levers", val_levers, floatfmt=".3f")
        run.write_metrics(
            {
                "runs": runs.to_dict("records"),
                "summary": summary.to_dict("records"),
                "val_levers": val_levers.to_dict("records"),
            },
        )
        print(readable_table(summary, floatfmt=".3f", max_columns=None))
        print(f"benchmark run folder: {run.dir}")
    return run
