"""In-training mitigation of the fairness study: the audited run's selected model retrained once with group x label
balanced weights (:mod:`medassist.fairness.mitigate` holds the weights, the weighted batches and the weighted step)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medassist.config import TrainConfig, from_dict
from medassist.errors import MedAssistError
from medassist.fairness.groups import make_groupings
from medassist.fairness.mitigate import WeightedBatcher, balanced_weights, weighted_step
from medassist.models import create_model
from medassist.run import Run
from medassist.studies.runs import open_run
from medassist.train import ImageBatcher, Labelled, fit, predict_proba


def retrain_weighted(
    run_dir: Path,
    info: dict[str, Any],
    grouping: str,
    *,
    age_edges: list[float],
    work: Path,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Retrain the selected model of ``run_dir`` once with group x label balanced weights.

    Returns:
        Validation and test probabilities of the retrained model, and facts for the report (time, weights).

    Raises:
        MedAssistError: the selected model was not trained by the engine, or the data no longer match the run.
    """
    unit = info.get("unit")
    if not unit:
        raise MedAssistError(
            f"the selected model of {run_dir} ({info.get('model')}) is not trained by the training engine; "
            "in-training mitigation retrains engine models only"
        )
    run = open_run(run_dir)
    cfg = run.config
    data = run.data(cfg)
    task, k = info["task"], len(info["label_names"])
    if info["kind"] == "text":
        from medassist.studies.text_setup import Encoded

        splits = {s: (data.splits[s].labels, data.splits[s].metadata) for s in ("train", "val", "test")}
        sets = Encoded(data, Run(work), cfg.max_len).get(unit["model"])
        model_args: dict[str, Any] = {}
    else:
        splits = {s: (data.splits[s].labels.reshape(-1), data.splits[s].metadata) for s in ("train", "val", "test")}
        sets = {s: Labelled(ImageBatcher(data.splits[s].images), splits[s][0]) for s in splits}
        model_args = {"in_channels": data.n_channels}
    train_meta = splits["train"][1]
    if train_meta is None:
        raise MedAssistError(f"{run_dir}: the training split has no metadata, so no group weights can be made")
    (g_train,) = make_groupings(
        [grouping], train_meta, train_meta, age_edges=age_edges, where=f"{run_dir} (training split)"
    )
    w = balanced_weights(splits["train"][0], g_train.test, task == "multi-label")
    tcfg = from_dict(TrainConfig, unit["config"])
    torch.manual_seed(tcfg.seed)
    model = create_model(unit["model"], num_classes=k, **model_args, **unit["model_kwargs"])
    train = Labelled(WeightedBatcher(sets["train"].batcher, w), sets["train"].labels)
    t0 = time.perf_counter()
    fit(
        model,
        train,
        sets["val"],
        tcfg,
        num_classes=k,
        task=task,
        checkpoint=work / "checkpoint.pt",
        resume=True,
        progress=progress,
        desc=f"{unit['name']} (balanced by {grouping})",
        step_fn=weighted_step(task, tcfg.label_smoothing),
    )
    seconds = time.perf_counter() - t0
    (work / "checkpoint.pt").unlink(missing_ok=True)
    p_val = predict_proba(model, sets["val"].batcher, task=task)
    p_test = predict_proba(model, sets["test"].batcher, task=task)
    facts = {"unit": unit["name"], "train_seconds": seconds, "weight_min": float(w.min()), "weight_max": float(w.max())}
    return p_val, p_test, facts
