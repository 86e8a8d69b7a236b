"""The medical image study: capacity and bias-variance, regularisation, transfer learning, test evaluation,
Grad-CAM, and a report generated from the measurements.

Every choice (which model, which regularisation) is made on the validation split; the test split is only
evaluated, never used to choose.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medassist.config import TrainConfig, to_dict
from medassist.data.types import ImageData, Split, validate_image_data
from medassist.errors import MedAssistError
from medassist.evaluate.metrics import CHANCE_RULE
from medassist.evaluate.training import UNDER_TRAINED_RULE, legend_label
from medassist.models import image_models
from medassist.run import Run
from medassist.studies import image_eval
from medassist.studies.image_config import (
    ABLATIONS,
    TRANSFER_MODES,
    DiagnosisConfig,
    ImageStudyConfig,
    RegularisationConfig,
)
from medassist.studies.units import (
    UnitResult,
    load_history,
    split_metrics,
    stratified_fraction,
    train_unit,
)
from medassist.train.device import on_device
from medassist.utils.steps import step

__all__ = [
    "ABLATIONS",
    "TRANSFER_MODES",
    "DiagnosisConfig",
    "ImageStudyConfig",
    "RegularisationConfig",
    "ablation_config",
    "choose_architecture",
    "diagnose",
    "diagnosis_rule",
    "load_data",
    "run_image_study",
    "transfer_input_size",
]


def load_data(cfg: ImageStudyConfig) -> ImageData:
    """The study's data: the user's own images if given, else a MedMNIST data set."""
    if cfg.channels not in (0, 1, 3):
        raise MedAssistError(f"channels must be 1 (grayscale), 3 (RGB) or 0 (the files' own); got {cfg.channels}")
    if cfg.images:
        from medassist.data.images import ImageFiles, read_image_csv, read_image_folder

        files = ImageFiles(cache=cfg.cache, workers=cfg.decode_workers, skip_bad_files=cfg.skip_bad_files)
        path = Path(cfg.images)
        if not path.exists():
            raise MedAssistError(f"images not found: {path} (give a folder with one subfolder per class, or a CSV)")
        if path.suffix.lower() == ".csv":
            data = read_image_csv(
                path,
                size=cfg.image_size,
                seed=cfg.train.seed,
                progress=cfg.progress,
                path_column=cfg.path_column,
                label_column=cfg.label_column,
                files=files,
                channels=cfg.channels or None,
            )
        else:
            data = read_image_folder(
                path,
                size=cfg.image_size,
                seed=cfg.train.seed,
                progress=cfg.progress,
                files=files,
                channels=cfg.channels or None,
            )
    else:
        from medassist.data.medmnist import load_medmnist

        data = load_medmnist(
            cfg.dataset,
            data_dir=cfg.data_dir or None,
            download=cfg.download,
            progress=cfg.progress,
            size=cfg.image_size,
        )
    if data.task != "multi-class":
        raise MedAssistError(
            f"{data.name}: the image study handles single-label tasks; '{data.task}' is not yet supported"
        )
    validate_image_data(data)
    if cfg.subsample:
        rng_seed = cfg.train.seed
        for name in ("train", "val"):
            s = data.splits[name]
            if len(s) > cfg.subsample:
                data.info = {**(data.info or {})}
                data.info.setdefault("subsampled_from", {})[name] = len(s)
                data.splits[name] = stratified_fraction(s, cfg.subsample / len(s), rng_seed)
    return data


CHOICE_RULE = (
    "the smallest model (by parameters) whose validation AUC is not clearly below the best one's: the paired "
    "bootstrap interval of the best model's advantage over it includes zero; models under-trained or at chance are "
    "not candidates unless no other is left"
)


def choose_architecture(
    run: Run, units: dict[str, UnitResult], y_val: np.ndarray, *, n_boot: int, seed: int
) -> dict[str, Any]:
    """The capacity sweep's chosen architecture by :data:`CHOICE_RULE`, and each model's difference from the best.

    A larger model is chosen only when validation shows it clearly better: the same reading of a difference as
    everywhere in the reports, and it keeps the studies that follow (the size curve, the ablation) on the cheapest
    model that is as good as any.
    """
    from medassist.evaluate.metrics import METRICS, paired_bootstrap_difference

    pool = [u for u in units.values() if u.usable] or list(units.values())
    best = max(pool, key=lambda u: (_nan0(u.val["auc"]), -u.params))
    p_best = np.load(run.dir / "units" / best.name / "val_probs.npy")
    rows: dict[str, dict[str, Any]] = {}
    for m, u in units.items():
        if u is best:
            rows[m] = {"val_auc_vs_best": 0.0, "val_auc_vs_best_lo": 0.0, "val_auc_vs_best_hi": 0.0}
            continue
        p = np.load(run.dir / "units" / u.name / "val_probs.npy")
        d, lo, hi = paired_bootstrap_difference(y_val, p, p_best, METRICS["auc"], n_boot=n_boot, seed=seed)
        rows[m] = {"val_auc_vs_best": d, "val_auc_vs_best_lo": lo, "val_auc_vs_best_hi": hi}
    # "Not clearly below": the upper end of (model - best) reaches zero; NaN intervals (undefined AUC) never do.
    as_good = [u for u in pool if u is best or rows[u.model]["val_auc_vs_best_hi"] >= 0]
    chosen = min(as_good, key=lambda u: (u.params, -_nan0(u.val["auc"])))
    return {"chosen": chosen.model, "best": best.model, "rule": CHOICE_RULE, "rows": rows}


def diagnose(history: pd.DataFrame, unit: UnitResult, rule: DiagnosisConfig) -> dict[str, Any]:
    """Bias-variance diagnosis from a model's curves, by the rule stated in :func:`diagnosis_rule`."""
    gap = unit.train["accuracy"] - unit.val["accuracy"]
    vl = history["val_loss"].to_numpy()
    # The median of the last epochs, so that one noisy epoch (a BatchNorm spike) does not decide the diagnosis.
    tail = float(np.median(vl[-max(1, rule.tail_epochs) :]))
    rise = float((tail - vl.min()) / max(vl.min(), 1e-12))
    high_variance = gap > rule.variance_gap or rise > rule.loss_rise
    high_bias = unit.train["accuracy"] < rule.bias_accuracy
    label = (
        "high bias and high variance"
        if high_bias and high_variance
        else "high variance"
        if high_variance
        else "high bias"
        if high_bias
        else "good fit"
    )
    return {
        "label": label,
        "train_accuracy": unit.train["accuracy"],
        "val_accuracy": unit.val["accuracy"],
        "gap_accuracy": gap,
        "val_loss_rise": rise,
        "high_bias": high_bias,
        "high_variance": high_variance,
    }


def diagnosis_rule(rule: DiagnosisConfig) -> str:
    return (
        f"high variance if train accuracy (eval mode, best epoch) exceeds validation accuracy by more than "
        f"{rule.variance_gap:.2f}, or the median validation loss of the last {rule.tail_epochs} epochs is more than "
        f"{rule.loss_rise:.0%} above its minimum; high bias if train accuracy is below {rule.bias_accuracy:.2f}; "
        "good fit otherwise"
    )


def ablation_config(name: str, base: TrainConfig, reg: RegularisationConfig) -> tuple[TrainConfig, float]:
    """Training settings and dropout of one ablation row."""
    if name not in ABLATIONS:
        raise MedAssistError(f"unknown ablation '{name}'; choose from {', '.join(ABLATIONS)}")

    def on(kind: str) -> bool:
        return name in (kind, "all")

    cfg = dataclasses.replace(
        base,
        augment=base.augment or on("augmentation"),
        weight_decay=reg.weight_decay if on("weight_decay") else base.weight_decay,
        early_stopping=base.early_stopping or on("early_stopping"),
        patience=reg.patience if on("early_stopping") else base.patience,
    )
    return cfg, (reg.dropout if on("dropout") else 0.0)


def _test_row(model: torch.nn.Module, test: Split) -> dict[str, float]:
    from medassist.evaluate.metrics import METRICS

    return {f"test_{k}": v for k, v in split_metrics(model, test, METRICS).items()}


@on_device
def run_image_study(cfg: ImageStudyConfig) -> Path:
    """Run the whole image study and return its run folder."""
    unknown = [m for m in cfg.models if m not in image_models()]
    if unknown:
        raise MedAssistError(f"unknown image model '{unknown[0]}'; image models: {', '.join(image_models())}")
    if not cfg.models:
        raise MedAssistError("give at least one model in `models`")
    for value, known, what in ((cfg.ablations, ABLATIONS, "ablation"), (cfg.transfer, TRANSFER_MODES, "transfer mode")):
        bad = [v for v in value if v not in known]
        if bad:
            raise MedAssistError(f"unknown {what} '{bad[0]}'; choose from {', '.join(known)}")
    if any(not 0 < f <= 1 for f in cfg.size_fractions):
        raise MedAssistError(f"size_fractions must lie in (0, 1]; got {cfg.size_fractions}")
    data = load_data(cfg)
    name = f"image-{data.name}"
    run = Run.create(cfg.out, name, to_dict(cfg), kind="image", resume=cfg.resume or None)
    with run:
        _study(run, cfg, data)
        from medassist.report.image import write_image_report

        write_image_report(run.dir)
    return run.dir


class _Units:
    """Trains (or reloads) the study's models, each on the training split unless given another, validated on the
    validation split, with the study's progress and train-evaluation settings."""

    def __init__(self, run: Run, cfg: ImageStudyConfig, data: ImageData) -> None:
        self.run, self.cfg, self.data = run, cfg, data

    def train(
        self, name: str, model: str, kwargs: dict[str, Any], tcfg: TrainConfig, train: Any = None
    ) -> tuple[UnitResult, Any]:
        return train_unit(
            self.run,
            name,
            model_name=model,
            model_kwargs=kwargs,
            train=self.data.splits["train"] if train is None else train,
            val=self.data.splits["val"],
            cfg=tcfg,
            num_classes=self.data.num_classes,
            in_channels=self.data.n_channels,
            progress=self.cfg.progress,
            train_eval_samples=self.cfg.train_eval_samples,
        )


def _study(run: Run, cfg: ImageStudyConfig, data: ImageData) -> None:
    units = _Units(run, cfg, data)
    _write_data_json(run, data)
    val_labels = data.splits["val"].labels.reshape(-1)
    pd.DataFrame({"y_true": val_labels}).to_csv(run.path("tables/val_labels.csv"), index=False)

    # 1. capacity: every model with the same plain recipe
    _stage(cfg, 1, f"capacity: {', '.join(cfg.models)}")
    size = {"image_size": data.image_size}
    capacity = {m: units.train(f"capacity-{m}", m, size, cfg.train)[0] for m in cfg.models}
    choice = choose_architecture(run, capacity, val_labels, n_boot=cfg.n_boot, seed=cfg.train.seed)
    cap_df = pd.DataFrame([{**u.row(), **choice["rows"][m]} for m, u in capacity.items()])
    run.write_table("capacity", cap_df)
    chosen = choice["chosen"]
    diag = diagnose(load_history(run, f"capacity-{chosen}"), capacity[chosen], cfg.diagnosis)

    _stage(cfg, 2, f"size learning curve of {chosen} (diagnosis: {diag['label']})")
    size_df = _size_curve(units, capacity[chosen])
    _stage(cfg, 3, f"regularisation ablation of {chosen}")
    ablated = _ablation(units, chosen)
    _stage(cfg, 4, "transfer learning (EfficientNet-Lite0)")
    transferred = _transfer(units)
    abl_rows, tr_rows = [r for r, _ in ablated], [r for r, _ in transferred]
    abl_df, tr_df = pd.DataFrame(abl_rows), pd.DataFrame(tr_rows)
    run.write_table("ablation", abl_df)
    if len(tr_df):
        run.write_table("transfer", tr_df)

    # 5. the selected model: best validation AUC over the ablation and transfer candidates (a model cut by its
    # budget or at chance level is selected only when no other candidate is left)
    _stage(cfg, 5, "test evaluation, Grad-CAM and report")
    candidates = {f"{chosen} + {r['regularisation']}": u for r, u in ablated}
    candidates |= {f"efficientnet_lite0 ({r['mode']})": u for r, u in transferred}
    ranked = sorted(
        candidates.items(),
        key=lambda kv: (not kv[1].usable, -_nan0(kv[1].val["auc"]), kv[1].params),
    )
    by_auc = sorted(capacity.values(), key=lambda u: -_nan0(u.val["auc"]))
    selected = image_eval.evaluate_selected(
        run, cfg, data, *ranked[0], others=ranked[1:] + [(u.model, u) for u in by_auc]
    )
    _figures(run, capacity, size_df, abl_rows, tr_rows)
    run.write_metrics(
        {
            "dataset": data.name,
            "chosen_architecture": chosen,
            "choice_rule": choice["rule"],
            "training_rules": {"under_trained": UNDER_TRAINED_RULE, "at_chance": CHANCE_RULE},
            "diagnosis": diag,
            "diagnosis_rule": diagnosis_rule(cfg.diagnosis),
            "capacity": cap_df.to_dict("records"),
            "size_curve": size_df.to_dict("records"),
            "train_subsample": _n_original(data, "train"),
            "ablation": abl_df.to_dict("records"),
            "transfer": tr_df.to_dict("records"),
            "transfer_input_size": transfer_input_size(cfg),
            "selected": selected,
        },
    )


def _write_data_json(run: Run, data: ImageData) -> None:
    k = data.num_classes
    run.write_json(
        "data.json",
        {
            "name": data.name,
            "class_names": data.class_names,
            "channels": data.n_channels,
            "image_size": data.image_size,
            "sizes": {s: len(data.splits[s]) for s in data.splits},
            "class_counts": {
                s: np.bincount(data.splits[s].labels.reshape(-1), minlength=k).tolist() for s in data.splits
            },
            "info": data.info,
        },
    )


def _size_curve(units: _Units, full: UnitResult) -> pd.DataFrame:
    """The learning curve over training-set size of the chosen model (each fraction with as many optimisation steps
    as the full set, so that a small set is not also under-trained)."""
    cfg, data = units.cfg, units.data
    full_steps = full.planned_epochs * math.ceil(full.n_train / max(1, full.batch_size))
    rows = []
    for frac in cfg.size_fractions:
        if frac >= 1.0:
            u = full
        else:
            size_cfg = (
                dataclasses.replace(cfg.train, epochs=1, min_steps=full_steps)
                if full_steps
                else dataclasses.replace(
                    cfg.train, epochs=min(math.ceil(cfg.train.epochs / frac), 10 * cfg.train.epochs)
                )
            )
            subset = stratified_fraction(data.splits["train"], frac, cfg.train.seed)
            u, _ = units.train(
                f"size-{full.model}-{frac:g}", full.model, {"image_size": data.image_size}, size_cfg, subset
            )
        rows.append(
            {
                "fraction": frac,
                "n_train": u.n_train,
                **{f"{s}_{m}": getattr(u, s)[m] for m in ("loss", "accuracy", "auc") for s in ("train", "val")},
            }
        )
    size_df = pd.DataFrame(rows)
    units.run.write_table("size_curve", size_df)
    return size_df


def _ablation(units: _Units, chosen: str) -> list[tuple[dict[str, Any], UnitResult]]:
    """The regularisation ablation of the chosen model (validation chooses; test only reported): each setting's
    row and unit."""
    cfg, data, test = units.cfg, units.data, units.data.splits["test"]
    rows = []
    for a in cfg.ablations:
        tcfg, dropout = ablation_config(a, cfg.train, cfg.regularisation)
        if a == "none" and tcfg == cfg.train:  # the capacity run itself
            u, model = units.train(f"capacity-{chosen}", chosen, {"image_size": data.image_size}, tcfg)
        else:
            kwargs = {"image_size": data.image_size, "dropout": dropout}
            u, model = units.train(f"ablation-{chosen}-{a}", chosen, kwargs, tcfg)
        rows.append(({"regularisation": a, **u.row(), **_test_row(model, test)}, u))
    return rows


def _transfer(units: _Units) -> list[tuple[dict[str, Any], UnitResult]]:
    """EfficientNet-Lite0 from ImageNet weights in each transfer mode: each mode's row and unit."""
    cfg, test = units.cfg, units.data.splits["test"]
    rows = []
    for mode in cfg.transfer:
        if mode not in TRANSFER_MODES:
            raise MedAssistError(f"unknown transfer mode '{mode}'; choose from {', '.join(TRANSFER_MODES)}")
        kwargs = {"mode": mode, "input_size": transfer_input_size(cfg)}
        u, model = units.train(f"transfer-{mode}", "efficientnet_lite0", kwargs, transfer_train(cfg))
        rows.append(({"mode": mode, **u.row(), **_test_row(model, test)}, u))
    return rows


def _figures(
    run: Run, capacity: dict[str, UnitResult], size_df: pd.DataFrame, abl_rows: list[dict], tr_rows: list[dict]
) -> None:
    from medassist.evaluate.plots import plot_learning_curves, plot_size_curve

    histories = {legend_label(m, u.row()): load_history(run, f"capacity-{m}") for m, u in capacity.items()}
    plot_learning_curves(histories, run.figure("capacity_curves"), metrics=("loss", "accuracy"))
    plot_size_curve(size_df, run.figure("size_curve"), metric="accuracy")
    abl_hist = {legend_label(r["regularisation"], r): load_history(run, r["name"]) for r in abl_rows}
    plot_learning_curves(abl_hist, run.figure("ablation_curves"), metrics=("loss", "auc"))
    if tr_rows:
        plot_learning_curves(
            {legend_label(r["mode"], r): load_history(run, r["name"]) for r in tr_rows},
            run.figure("transfer_curves"),
            metrics=("loss", "auc"),
        )


def transfer_input_size(cfg: ImageStudyConfig) -> int:
    """EfficientNet-Lite0's input size: as configured, or (0) its ImageNet size, 224, for a user's own images and
    MedMNIST's 224-px release; MedMNIST's smaller releases at their own size, at least 64 (upsampling 28-pixel
    images to 224 would cost 12x the time for no new detail)."""
    if cfg.transfer_input_size > 0:
        return cfg.transfer_input_size
    return 224 if cfg.images else max(64, min(224, cfg.image_size))


TRANSFER_PIXELS = 16 * 224 * 224
"""Pixels (per channel) of one EfficientNet-Lite0 training batch at most: 16 images at 224 px (a batch of 32 there
takes 3.7 GB of activations on a CPU)."""


def transfer_train(cfg: ImageStudyConfig) -> TrainConfig:
    """The transfer runs' training settings: ``transfer_train``, its batch capped at :data:`TRANSFER_PIXELS` (the
    same cap for every mode, which share the input size)."""
    side = transfer_input_size(cfg)
    cap = max(8, TRANSFER_PIXELS // (side * side))
    tcfg = cfg.transfer_train
    return dataclasses.replace(tcfg, batch_size=cap) if tcfg.batch_size > cap else tcfg


def _n_original(data: ImageData, split: str) -> int | None:
    """How many images a split held before ``subsample`` cut it (None when it was not cut)."""
    return (data.info or {}).get("subsampled_from", {}).get(split)


def _stage(cfg: ImageStudyConfig, i: int, text: str) -> None:
    step(f"{i}/5", text, show=cfg.progress)


def _nan0(x: float) -> float:
    return -1.0 if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)
