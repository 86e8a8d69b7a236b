"""The segmentation study: ``medassist segment``, from images and masks to a tested network and its report.

1. Data: DRIVE, a folder (``images/`` and ``masks/``) or a CSV (:mod:`medassist.data.segmentation`); split seeded
   and stratified by lesion size where the data gives no split; a field of view limits every metric.
2. Capacity: the network at two widths, trained by the one engine (:func:`medassist.train.fit`) on random patches
   (:class:`~medassist.train.patches.PatchBatcher`) with MONAI's Dice + cross-entropy
   (:class:`~medassist.train.patches.SegmentationStep`); validation Dice on whole images selects the epoch. Each is
   diagnosed by the image study's bias-variance rule, read on Dice.
3. Ablation: no augmentation, augmentation, weight decay, dropout, all (the smaller width).
4. Size: the training-image fractions of the learning curve.
5. Test (the network with the best validation Dice, chosen before test is read): Dice, IoU, sensitivity,
   specificity, HD95 and area error per image, means with 95% bootstrap intervals over images, the pixel AUC, the
   second grader's agreement where the data has one, and overlays of outlines.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from medassist.config import TrainConfig, to_dict
from medassist.errors import MedAssistError
from medassist.models import count_parameters, create_model
from medassist.models.segmentation import SEGMENTATION_MODELS
from medassist.run import Run
from medassist.studies.segment_config import SEG_ABLATIONS, SegmentStudyConfig
from medassist.studies.units import reload_unit, save_unit
from medassist.train import fit
from medassist.train.device import on_device
from medassist.train.engine import Labelled, seed_everything
from medassist.utils.steps import step

if TYPE_CHECKING:
    from medassist.data.segmentation import SegSet


def _stage(cfg: SegmentStudyConfig, text: str) -> None:
    step("segment", text, show=cfg.progress)


def load_segment_data(cfg: SegmentStudyConfig) -> dict[str, SegSet]:
    """The data's train, val and test sets: the data's own split where it has one, else seeded and stratified by
    lesion size; validation is drawn from training when the data names none."""
    from medassist.data.segmentation import load_segmentation, split_by_size

    data = load_segmentation(
        cfg.images,
        data_dir=cfg.data_dir or None,
        image_size=cfg.image_size,
        channels=cfg.channels or None,
        mask_threshold=cfg.mask_threshold if cfg.mask_threshold >= 0 else None,
        path_column=cfg.path_column,
        mask_column=cfg.mask_column,
        split_column=cfg.split_column,
        fov_column=cfg.fov_column,
    )
    split = np.asarray(data.split) if data.split is not None else None
    if split is None:
        split = split_by_size(data.masks, val=cfg.val_fraction, test=cfg.test_fraction, seed=cfg.train.seed)
    if not (split == "val").any():
        train_idx = np.flatnonzero(split == "train")
        inner = split_by_size(data.masks[train_idx], val=cfg.val_fraction, test=0.0, seed=cfg.train.seed)
        split = split.copy()
        split[train_idx[inner == "val"]] = "val"
    sets = {s: data.subset(np.flatnonzero(split == s)) for s in ("train", "val", "test")}
    for s, d in sets.items():
        if len(d) == 0:
            raise MedAssistError(f"the {s} split of {cfg.images} is empty; give more images or change the fractions")
    return sets


def patch_data(d: SegSet, cfg: SegmentStudyConfig, tcfg: TrainConfig) -> Labelled:
    """The engine's training data of a set: random patches of its images and masks."""
    from medassist.train.patches import PatchBatcher

    batcher = PatchBatcher(
        d.images,
        d.masks,
        patch=cfg.patch,
        patches_per_epoch=cfg.patches_per_epoch,
        augment=tcfg.augment,
        seed=tcfg.seed,
    )
    return Labelled(batcher, np.zeros(len(batcher), dtype=np.int64))  # no per-patch label: the masks are inputs


def dice_validator(val: SegSet) -> Any:
    """The engine's validation: mean Dice over whole validation images and the Dice + cross-entropy loss."""
    from monai.losses import DiceCELoss

    from medassist.evaluate.segmentation import per_image, predict_probabilities

    loss = DiceCELoss(to_onehot_y=True, softmax=False)

    def validate(model: torch.nn.Module) -> dict[str, float]:
        probs = predict_probabilities(model, val.images)
        rows = per_image(probs, val.masks, val.fov, val.names)
        logp = torch.from_numpy(probs)
        value = float(loss(logp, torch.from_numpy(val.masks.astype(np.int64))[:, None]))
        model.train()
        return {"dice": float(np.nanmean([r["dice"] for r in rows])), "loss": value}

    return validate


def _mean_dice(model: torch.nn.Module, d: SegSet) -> float:
    from medassist.evaluate.segmentation import per_image, predict_probabilities

    rows = per_image(predict_probabilities(model, d.images), d.masks, d.fov, d.names)
    return float(np.nanmean([r["dice"] for r in rows]))


def train_segmenter(
    run: Run,
    name: str,
    *,
    cfg: SegmentStudyConfig,
    tcfg: TrainConfig,
    width: int,
    dropout: float,
    train: SegSet,
    val: SegSet,
    num_classes: int,
    done: dict[str, str] | None = None,
) -> tuple[dict[str, Any], torch.nn.Module]:
    """Train (or, if done in this run folder, reload) one network; write its history and result. ``done`` maps the
    settings of every network trained so far to its name: a row of the study with the same settings as an earlier
    one (the ablation's augmentation row is the first capacity row, the size curve's last point too) reuses it."""
    import json

    from medassist.train.patches import SegmentationStep

    key = json.dumps([cfg.model, width, dropout, to_dict(tcfg), train.names], sort_keys=True)
    if done is not None and key in done and done[key] != name:
        same = done[key]
        record, model = train_segmenter(
            run, same, cfg=cfg, tcfg=tcfg, width=width, dropout=dropout, train=train, val=val, num_classes=num_classes
        )
        return {**record, "name": name, "same_as": same}, model
    if done is not None:
        done[key] = name

    unit_dir = run.path(f"units/{name}/x").parent
    seed_everything(tcfg.seed, tcfg.threads)
    kwargs = {"width": width}
    model = create_model(
        cfg.model, num_classes=num_classes, in_channels=train.images.shape[1], dropout=dropout, **kwargs
    )
    done = reload_unit(run, name, model)
    if done is not None:
        return done, model
    t0 = time.perf_counter()
    result = fit(
        model,
        patch_data(train, cfg, tcfg),
        patch_data(val, cfg, tcfg),
        tcfg,
        num_classes=num_classes,
        checkpoint=unit_dir / "checkpoint.pt",
        resume=True,
        progress=cfg.progress,
        desc=name,
        step_fn=SegmentationStep(num_classes),
        validate=dice_validator(val),
    )
    history = result.history
    best = history.loc[history.epoch == result.best_epoch].iloc[0]
    record = {
        "name": name,
        "model": cfg.model,
        "width": width,
        "dropout": dropout,
        "params": count_parameters(model),
        "best_epoch": int(result.best_epoch),
        "epochs_run": len(history),
        "train_time": result.train_time,
        "wall_time": time.perf_counter() - t0,
        "n_train": len(train),
        "augment": tcfg.augment,
        "weight_decay": tcfg.weight_decay,
        "train_dice": _mean_dice(model, train),  # whole training images, eval mode, best epoch
        "val_dice": float(best["val_dice"]),
        "under_trained": bool(result.under_trained),
        "config": to_dict(tcfg),
    }
    save_unit(run, name, result, record)
    return record, model


def diagnose(history: pd.DataFrame, unit: dict[str, Any], rule: Any, metric: str = "dice") -> dict[str, Any]:
    """The image study's bias-variance rule, read on ``metric`` (Dice; the detection study's mAP@0.5): high
    variance if its training value exceeds its validation value by more than the gap or the validation loss of the
    last epochs rose above its minimum; high bias below a training value."""
    gap = unit[f"train_{metric}"] - unit[f"val_{metric}"]
    vl = history["val_loss"].to_numpy()
    tail = float(np.median(vl[-max(1, rule.tail_epochs) :]))
    rise = float((tail - vl.min()) / max(vl.min(), 1e-12))
    high_variance = gap > rule.variance_gap or rise > rule.loss_rise
    high_bias = unit[f"train_{metric}"] < rule.bias_accuracy
    label = {
        (True, True): "high bias and high variance",
        (False, True): "high variance",
        (True, False): "high bias",
        (False, False): "good fit",
    }[(high_bias, high_variance)]
    return {
        "label": label,
        f"gap_{metric}": gap,
        "val_loss_rise": rise,
        "high_bias": high_bias,
        "high_variance": high_variance,
    }


def ablation_settings(name: str, base: TrainConfig, reg: Any) -> tuple[TrainConfig, float]:
    """Training settings and dropout of one ablation row (the base row has no augmentation)."""
    if name not in SEG_ABLATIONS:
        raise MedAssistError(f"unknown ablation '{name}'; choose from {', '.join(SEG_ABLATIONS)}")
    on = lambda kind: name in (kind, "all")  # noqa: E731
    tcfg = dataclasses.replace(
        base, augment=on("augmentation"), weight_decay=reg.weight_decay if on("weight_decay") else base.weight_decay
    )
    return tcfg, (reg.dropout if on("dropout") else 0.0)


def training_fraction(d: Any, fraction: float, seed: int) -> Any:
    """A seeded share of a set's images (anything with ``len`` and ``subset``; at least 2)."""
    if fraction >= 1.0:
        return d
    n = max(2, int(round(fraction * len(d))))
    return d.subset(np.sort(np.random.default_rng(seed).choice(len(d), min(n, len(d)), replace=False)))


@on_device
def run_segment_study(cfg: SegmentStudyConfig) -> Path:
    """Run the whole segmentation study and return its run folder."""
    if cfg.model not in SEGMENTATION_MODELS:
        raise MedAssistError(
            f"unknown segmentation model '{cfg.model}'; choose one of {', '.join(SEGMENTATION_MODELS)}"
        )
    if len(cfg.widths) < 1 or any(w < 1 for w in cfg.widths):
        raise MedAssistError(f"widths must be positive channel counts, got {cfg.widths}")
    bad = [a for a in cfg.ablations if a not in SEG_ABLATIONS]
    if bad:
        raise MedAssistError(f"unknown ablation '{bad[0]}'; choose from {', '.join(SEG_ABLATIONS)}")
    if any(not 0 < f <= 1 for f in cfg.size_fractions):
        raise MedAssistError(f"size_fractions must lie in (0, 1]; got {cfg.size_fractions}")
    sets = load_segment_data(cfg)
    name = Path(cfg.images).stem if cfg.images != "drive" else "drive"
    run = Run.create(cfg.out, f"segment-{name}", to_dict(cfg), kind="segment", resume=cfg.resume or None)
    with run:
        _study(run, cfg, sets, name)
        from medassist.report.segment import write_segment_report

        write_segment_report(run.dir)
    return run.dir


def _study(run: Run, cfg: SegmentStudyConfig, sets: dict[str, SegSet], name: str) -> None:
    from medassist.studies.segment_eval import evaluate_test

    train, val, test = sets["train"], sets["val"], sets["test"]
    k = train.num_classes
    run.write_json(
        "data.json",
        {
            "name": name,
            "source": train.source,
            "num_classes": k,
            "channels": int(train.images.shape[1]),
            "image_shape": list(train.images.shape[-2:]),
            "sizes": {s: len(d) for s, d in sets.items()},
            "images": {s: d.names for s, d in sets.items()},
            "foreground_share": {s: float((d.masks > 0).mean()) for s, d in sets.items()},
            "fov": train.fov is not None,
        },
    )
    common = {"cfg": cfg, "train": train, "val": val, "num_classes": k, "done": {}}
    units: dict[str, dict[str, Any]] = {}
    models: dict[str, torch.nn.Module] = {}

    _stage(cfg, f"1. capacity: {cfg.model} at widths {', '.join(map(str, cfg.widths))}")
    for w in cfg.widths:
        n = f"capacity-w{w}"
        units[n], models[n] = train_segmenter(run, n, tcfg=cfg.train, width=w, dropout=0.0, **common)
    capacity = [n for n in units if n.startswith("capacity-")]
    diagnosis = {n: diagnose(pd.read_csv(run.path(f"history/{n}.csv")), units[n], cfg.diagnosis) for n in capacity}

    small = min(cfg.widths)
    _stage(cfg, f"2. ablation at width {small}: {', '.join(cfg.ablations)}")
    for a in cfg.ablations:
        tcfg, dropout = ablation_settings(a, cfg.train, cfg.regularisation)
        n = f"ablation-{a}"
        units[n], _ = train_segmenter(run, n, tcfg=tcfg, width=small, dropout=dropout, **common)

    _stage(cfg, f"3. training-set size at width {small}: {', '.join(map(str, cfg.size_fractions))}")
    for f in cfg.size_fractions:
        n = f"size-{f:g}"
        part = training_fraction(train, f, cfg.train.seed)
        units[n], _ = train_segmenter(run, n, tcfg=cfg.train, width=small, dropout=0.0, **{**common, "train": part})

    run.write_table("units", pd.DataFrame([{k2: v for k2, v in u.items() if k2 != "config"} for u in units.values()]))
    chosen = max(capacity, key=lambda n: units[n]["val_dice"])  # chosen on validation, before test is read
    _stage(cfg, f"4. test: {chosen} (best validation Dice)")
    test_summary = evaluate_test(run, cfg, models[chosen], test)
    model = models[chosen]
    run.save_model(
        model,
        {
            "model": cfg.model,
            "width": units[chosen]["width"],
            "num_classes": k,
            "in_channels": int(train.images.shape[1]),
            "unit": chosen,
        },
    )
    run.write_metrics(
        {
            "kind": "segment",
            "dataset": name,
            "model": cfg.model,
            "chosen": chosen,
            "units": units,
            "diagnosis": diagnosis,
            "diagnosis_rule": to_dict(cfg.diagnosis),
            "test": test_summary,
        }
    )
