"""The detection study: ``medassist detect``, from images and boxes to a tested detector, counts and a report.

1. Data: BCCD (its own 205/87/72 split), a Pascal VOC folder, a COCO JSON file, a YOLO folder or a CSV of boxes
   (:mod:`medassist.data.boxes`); a seeded split by image (or by ``--group-column``) where the source gives none.
2. Capacity: MONAI's RetinaNet at two widths of its feature pyramid and heads, on the ImageNet-pretrained
   backbone, trained by the one engine (:func:`medassist.train.fit`) with the detector's step
   (:class:`~medassist.train.detection.DetectionStep`) and box-aware augmentation; validation mAP@0.5 selects the
   epoch. Each is diagnosed by the image study's bias-variance rule, read on mAP@0.5.
3. Ablation at the smaller width: no augmentation, no pretraining (the same detector from scratch).
4. Size: the training-image fractions of the learning curve.
5. Test (the detector with the best validation mAP@0.5, chosen before test is read): COCO mAP@0.5 and
   mAP@[.5:.95] and per-class AP with 95% bootstrap intervals over images, FROC, per-image count errors at score
   thresholds chosen on validation, and test images drawn with their boxes (:mod:`medassist.studies.detect_eval`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from medassist.config import TrainConfig, to_dict
from medassist.errors import MedAssistError
from medassist.models import count_parameters, create_model
from medassist.models.detection import BACKBONES, DETECTION_MODELS
from medassist.run import Run
from medassist.studies.detect_config import DETECT_ABLATIONS, DetectStudyConfig
from medassist.studies.segment import diagnose, training_fraction
from medassist.studies.units import reload_unit, save_unit
from medassist.train import fit
from medassist.train.device import on_device
from medassist.train.engine import Labelled, seed_everything
from medassist.utils.steps import step

if TYPE_CHECKING:
    from medassist.data.boxes import BoxSet


def _stage(cfg: DetectStudyConfig, text: str) -> None:
    step("detect", text, show=cfg.progress)


def _source_name(cfg: DetectStudyConfig) -> str:
    """The boxes' name: the user's source when one is given (it wins over --data), else the data set's."""
    for given in (cfg.voc, cfg.coco, cfg.yolo, cfg.boxes):
        if given:
            return Path(given).stem or Path(given).name
    return cfg.data


def read_boxes(cfg: DetectStudyConfig) -> BoxSet:
    """The images and boxes ``cfg`` names, checked (:func:`medassist.data.boxes.assemble`)."""
    from medassist.data import boxes as b
    from medassist.data.paths import resolve_data_dir

    given = [k for k in ("voc", "coco", "yolo", "boxes") if getattr(cfg, k)]
    if len(given) > 1:
        raise MedAssistError(f"give one source of boxes, not {' and '.join('--' + k for k in given)}")
    classes: list[str] | None = list(cfg.classes) or None
    if cfg.voc:
        records, source = b.read_voc(cfg.voc), {"format": "voc", "path": cfg.voc}
    elif cfg.coco:
        if not cfg.images:
            raise MedAssistError("--coco needs --images, the folder that the COCO file's file names are relative to")
        records, found = b.read_coco(cfg.coco, cfg.images)
        classes = classes or found
        source = {"format": "coco", "path": cfg.coco, "images": cfg.images}
    elif cfg.yolo:
        records, found = b.read_yolo(cfg.yolo)
        classes = classes or found
        source = {"format": "yolo", "path": cfg.yolo}
    elif cfg.boxes:
        if len(cfg.box_columns) != 4:
            raise MedAssistError(f"--box-columns names 4 columns (x_min, y_min, x_max, y_max), got {cfg.box_columns}")
        records = b.read_box_csv(
            cfg.boxes,
            path_column=cfg.path_column,
            box_columns=tuple(cfg.box_columns),  # type: ignore[arg-type]
            label_column=cfg.label_column,
            split_column=cfg.split_column,
            group_column=cfg.group_column,
        )
        source = {"format": "csv", "path": cfg.boxes}
    elif cfg.data.lower() == "bccd":
        root = resolve_data_dir(cfg.data_dir or None) / "bccd"
        if not (root / "Annotations").is_dir():
            raise MedAssistError(
                f"BCCD is not at {root}; put the BCCD folder (Annotations/, JPEGImages/, ImageSets/) there, or set "
                "--data-dir / MEDASSIST_DATA_DIR to the folder that holds bccd/"
            )
        records, source = b.read_voc(root), {"format": "voc", "name": "bccd", "path": str(root)}
        classes = classes or list(b.BCCD_CLASSES)
    else:
        raise MedAssistError(
            f"unknown data '{cfg.data}'; use --data bccd, or name your boxes with --voc, --coco, --yolo or --boxes"
        )
    return b.assemble(
        records,
        classes=classes,
        source=source,
        image_size=cfg.image_size,
        channels=cfg.channels,
        strict=cfg.strict_boxes,
    )


def load_detect_data(cfg: DetectStudyConfig) -> dict[str, BoxSet]:
    """Train, val and test sets: the source's split where it gives one, else seeded by image (or group)."""
    from medassist.data.boxes import split_by_group

    data = read_boxes(cfg)
    if data.split is not None:
        split = np.asarray(data.split)
    else:
        split = split_by_group(
            len(data), data.groups, val=cfg.val_fraction, test=cfg.test_fraction, seed=cfg.train.seed
        )
    rng = np.random.default_rng(cfg.train.seed)
    sets = {}
    for s in ("train", "val", "test"):
        idx = np.flatnonzero(split == s)
        if 0 < cfg.max_images < len(idx):
            idx = np.sort(rng.choice(idx, cfg.max_images, replace=False))
        sets[s] = data.subset(idx)
    for s, d in sets.items():
        if len(d) == 0:
            raise MedAssistError(f"the {s} split of {_source_name(cfg)} is empty; give more images or other fractions")
    return sets


def map_validator(val: BoxSet) -> Any:
    """The engine's validation: COCO mAP@0.5 and mAP@[.5:.95] on whole validation images, and the held-out loss."""
    from medassist.evaluate.detection import evaluate_set
    from medassist.train.detection import losses_and_predictions

    def validate(model: torch.nn.Module) -> dict[str, float]:
        loss, preds = losses_and_predictions(model, val)
        ap = evaluate_set(val, preds)[1]
        model.train()
        return {"map50": ap["map50"] or 0.0, "map": ap["map"] or 0.0, "loss": loss}

    return validate


def _map50(model: torch.nn.Module, d: BoxSet) -> float:
    from medassist.evaluate.detection import evaluate_set
    from medassist.train.detection import predict_boxes

    return float(evaluate_set(d, predict_boxes(model, d.images))[1]["map50"] or 0.0)


def build_detector(cfg: DetectStudyConfig, *, width: int, pretrained: bool, num_classes: int, channels: int) -> Any:
    return create_model(
        cfg.model,
        num_classes=num_classes,
        in_channels=channels,
        backbone=cfg.backbone,
        pretrained=pretrained,
        width=width,
        anchor_sizes=tuple(cfg.anchor_sizes),
    )


def train_detector(
    run: Run,
    name: str,
    *,
    cfg: DetectStudyConfig,
    tcfg: TrainConfig,
    width: int,
    pretrained: bool,
    train: BoxSet,
    val: BoxSet,
    done: dict[str, str],
) -> tuple[dict[str, Any], torch.nn.Module]:
    """Train (or, if done in this run folder, reload) one detector; write its history and result. A row with the
    settings of an earlier one (the size curve's last point is the first capacity row) reuses it."""
    from medassist.train.detection import BoxBatcher, DetectionStep

    key = json.dumps([cfg.model, cfg.backbone, width, pretrained, to_dict(tcfg), train.names], sort_keys=True)
    if key in done and done[key] != name:
        same = done[key]
        record, model = train_detector(
            run, same, cfg=cfg, tcfg=tcfg, width=width, pretrained=pretrained, train=train, val=val, done=done
        )
        return {**record, "name": name, "same_as": same}, model
    done[key] = name
    seed_everything(tcfg.seed, tcfg.threads)
    model = build_detector(
        cfg, width=width, pretrained=pretrained, num_classes=train.num_classes, channels=train.channels
    )
    reloaded = reload_unit(run, name, model)
    if reloaded is not None:
        return reloaded, model
    t0 = time.perf_counter()
    unlabelled = lambda d, aug: Labelled(BoxBatcher(d, augment=aug, seed=tcfg.seed), np.zeros(len(d), np.int64))  # noqa: E731
    result = fit(
        model,
        unlabelled(train, tcfg.augment),
        unlabelled(val, False),
        tcfg,
        num_classes=train.num_classes,
        checkpoint=run.path(f"units/{name}/checkpoint.pt"),
        resume=True,
        progress=cfg.progress,
        desc=name,
        step_fn=DetectionStep(),
        validate=map_validator(val),
    )
    best = result.history.loc[result.history.epoch == result.best_epoch].iloc[0]
    record = {
        "name": name,
        "model": cfg.model,
        "backbone": cfg.backbone,
        "pretrained": pretrained,
        "width": width,
        "params": count_parameters(model),
        "best_epoch": int(result.best_epoch),
        "epochs_run": len(result.history),
        "train_time": result.train_time,
        "wall_time": time.perf_counter() - t0,
        "n_train": len(train),
        "augment": tcfg.augment,
        "train_map50": _map50(model, train),  # whole training images, no augmentation, best epoch
        "val_map50": float(best["val_map50"]),
        "val_map": float(best["val_map"]),
        "under_trained": bool(result.under_trained),
        "config": to_dict(tcfg),
    }
    save_unit(run, name, result, record)
    return record, model


def _check(cfg: DetectStudyConfig) -> None:
    if cfg.model not in DETECTION_MODELS:
        raise MedAssistError(f"unknown detector '{cfg.model}'; choose one of {', '.join(DETECTION_MODELS)}")
    if cfg.backbone not in BACKBONES:
        raise MedAssistError(f"unknown backbone '{cfg.backbone}'; choose one of {', '.join(BACKBONES)}")
    if not cfg.widths or any(w < 1 for w in cfg.widths):
        raise MedAssistError(f"widths must be positive channel counts, got {cfg.widths}")
    bad = [a for a in cfg.ablations if a not in DETECT_ABLATIONS]
    if bad:
        raise MedAssistError(f"unknown ablation '{bad[0]}'; choose from {', '.join(DETECT_ABLATIONS)}")
    if any(not 0 < f <= 1 for f in cfg.size_fractions):
        raise MedAssistError(f"size_fractions must lie in (0, 1]; got {cfg.size_fractions}")
    if cfg.train.monitor not in ("val_map50", "val_map", "val_loss"):
        raise MedAssistError(f"the detector's monitor is val_map50, val_map or val_loss, not {cfg.train.monitor}")


@on_device
def run_detect_study(cfg: DetectStudyConfig) -> Path:
    """Run the whole detection study and return its run folder."""
    _check(cfg)
    sets = load_detect_data(cfg)
    name = _source_name(cfg)
    run = Run.create(cfg.out, f"detect-{name}", to_dict(cfg), kind="detect", resume=cfg.resume or None)
    with run:
        _study(run, cfg, sets, name)
        from medassist.report.detect import write_detect_report

        write_detect_report(run.dir)
    return run.dir


def _study(run: Run, cfg: DetectStudyConfig, sets: dict[str, BoxSet], name: str) -> None:
    from medassist.studies.detect_eval import evaluate_test

    train, val = sets["train"], sets["val"]
    run.write_json(
        "data.json",
        {
            "name": name,
            "source": train.source,
            "classes": train.classes,
            "channels": train.channels,
            "image_shapes": sorted({"x".join(map(str, im.shape[-2:])) for d in sets.values() for im in d.images}),
            "sizes": {s: len(d) for s, d in sets.items()},
            "boxes": {s: dict(zip(d.classes, d.counts().sum(0).tolist(), strict=True)) for s, d in sets.items()},
            "images": {s: d.names for s, d in sets.items()},
            "issues": train.issues,
        },
    )
    common = {"cfg": cfg, "train": train, "val": val, "done": {}}
    units: dict[str, dict[str, Any]] = {}
    models: dict[str, torch.nn.Module] = {}
    _stage(cfg, f"1. capacity: {cfg.model} on {cfg.backbone} at widths {', '.join(map(str, cfg.widths))}")
    for w in cfg.widths:
        n = f"capacity-w{w}"
        units[n], models[n] = train_detector(run, n, tcfg=cfg.train, width=w, pretrained=cfg.pretrained, **common)
    capacity = list(units)
    diagnosis = {
        n: diagnose(pd.read_csv(run.path(f"history/{n}.csv")), units[n], cfg.diagnosis, metric="map50")
        for n in capacity
    }
    small = min(cfg.widths)
    _stage(cfg, f"2. ablation at width {small}: {', '.join(cfg.ablations) or 'none'}")
    for a in cfg.ablations:
        tcfg = dataclasses.replace(cfg.train, augment=False) if a == "no_augmentation" else cfg.train
        pretrained = cfg.pretrained and a != "no_pretraining"
        units[f"ablation-{a}"], _ = train_detector(
            run, f"ablation-{a}", tcfg=tcfg, width=small, pretrained=pretrained, **common
        )
    _stage(cfg, f"3. training-set size at width {small}: {', '.join(map(str, cfg.size_fractions))}")
    for f in cfg.size_fractions:
        part = training_fraction(train, f, cfg.train.seed)
        units[f"size-{f:g}"], _ = train_detector(
            run, f"size-{f:g}", tcfg=cfg.train, width=small, pretrained=cfg.pretrained, **{**common, "train": part}
        )
    run.write_table("units", pd.DataFrame([{k: v for k, v in u.items() if k != "config"} for u in units.values()]))
    chosen = max(capacity, key=lambda n: units[n]["val_map50"])  # chosen on validation, before test is read
    _stage(cfg, f"4. test: {chosen} (best validation mAP@0.5)")
    test_summary = evaluate_test(run, cfg, models[chosen], sets)
    run.save_model(
        models[chosen],
        {
            "model": cfg.model,
            "backbone": cfg.backbone,
            "width": units[chosen]["width"],
            "anchor_sizes": list(cfg.anchor_sizes),
            "num_classes": train.num_classes,
            "classes": train.classes,
            "in_channels": train.channels,
            "image_size": cfg.image_size,
            "unit": chosen,
        },
    )
    run.write_metrics(
        {
            "kind": "detect",
            "dataset": name,
            "model": cfg.model,
            "backbone": cfg.backbone,
            "classes": train.classes,
            "chosen": chosen,
            "units": units,
            "diagnosis": diagnosis,
            "diagnosis_rule": to_dict(cfg.diagnosis),
            "test": test_summary,
        }
    )
