"""Sweeps on Ray Tune: the space file, and a tiny 4-trial sweep on synthetic images with a local Ray."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from medassist.cli import main
from medassist.config import from_dict, load_yaml, merge
from medassist.errors import MedAssistError
from medassist.studies.image_config import ImageStudyConfig
from medassist.studies.tune import TuneConfig, best_config, check_config, study_keys
from medassist.studies.tune_space import load_space, split_params


def _space(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_space_maps_each_distribution_and_refuses_unknown_keys(tmp_path: Path) -> None:
    from ray.tune.search.sample import Categorical, Float, Integer

    keys = study_keys(TuneConfig())
    space = load_space(
        _space(
            tmp_path,
            "train.lr: {loguniform: [1.0e-4, 1.0e-2]}\ndropout: {uniform: [0.0, 0.5]}\n"
            "train.batch_size: {choice: [32, 64]}\nmodel_kwargs.width: {randint: [8, 32]}\ntrain.epochs: 3\n",
        ),
        study_keys=keys,
    )
    assert isinstance(space["train.lr"], Float) and isinstance(space["dropout"], Float)
    assert isinstance(space["train.batch_size"], Categorical) and isinstance(space["model_kwargs.width"], Integer)
    assert space["train.epochs"] == 3
    with pytest.raises(MedAssistError, match="unknown key 'train.lrr'"):
        load_space(_space(tmp_path, "train.lrr: {uniform: [0, 1]}\n"), study_keys=keys)
    with pytest.raises(MedAssistError, match="loguniform needs low > 0"):
        load_space(_space(tmp_path, "train.lr: {loguniform: [0, 1]}\n"), study_keys=keys)
    with pytest.raises(MedAssistError, match="one distribution"):
        load_space(_space(tmp_path, "train.lr: {normal: [0, 1]}\n"), study_keys=keys)
    with pytest.raises(MedAssistError, match="empty"):
        load_space(_space(tmp_path, ""), study_keys=keys)


def test_best_config_is_an_image_study_config_file() -> None:
    params = {"train.lr": np.float64(0.003), "train.augment": True, "dropout": 0.25, "model": "resnet18"}
    own, nested = split_params(params)
    assert own == {"dropout": 0.25, "model": "resnet18"} and nested == {"train": {"lr": 0.003, "augment": True}}
    out = best_config(params, TuneConfig())
    cfg = from_dict(ImageStudyConfig, yaml.safe_load(yaml.safe_dump(out)))
    assert cfg.train.lr == 0.003 and cfg.train.augment and cfg.models == ["resnet18"]
    assert cfg.regularisation.dropout == 0.25


def test_check_config_refuses_a_sweep_that_cannot_run(tmp_path: Path) -> None:
    space = _space(tmp_path, "train.lr: {loguniform: [1.0e-4, 1.0e-2]}\n")
    with pytest.raises(MedAssistError, match="give the search space"):
        check_config(TuneConfig())
    with pytest.raises(MedAssistError, match="unknown scheduler 'hyperband'"):
        check_config(TuneConfig(space=str(space), scheduler="hyperband"))
    with pytest.raises(MedAssistError, match="unknown metric"):
        check_config(TuneConfig(space=str(space), metric="test_auc"))


def _image_folder(root: Path, n: int = 160) -> Path:
    """Two classes that only some learning rates separate within three epochs (a faint square in class 1)."""
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, n)
    images = rng.integers(0, 200, (n, 16, 16)).astype(np.uint8)
    images[labels == 1, :8, :8] //= 2
    images[labels == 1, :8, :8] += 60
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / ("positive" if label else "negative")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    return root


@pytest.mark.long
def test_a_four_trial_sweep_chooses_the_best_validation_trial_and_writes_a_config_that_loads(tmp_path: Path) -> None:
    images = _image_folder(tmp_path / "images")
    space = _space(tmp_path, "train.lr: {loguniform: [1.0e-5, 3.0e-2]}\ntrain.weight_decay: {choice: [0.0, 1.0e-3]}\n")
    code = main(
        [
            "tune",
            "image",
            "--profile",
            "debug",
            "--space",
            str(space),
            "--samples",
            "4",
            "--num-cpus",
            "2",
            "--progress",
            "false",
            "--out",
            str(tmp_path / "runs"),
            "--image.images",
            str(images),
            "--image.image-size",
            "16",
            "--image.subsample",
            "0",
        ]
    )
    assert code == 0
    (run,) = (tmp_path / "runs").glob("tune-image-*")
    m = json.loads((run / "metrics.json").read_text())
    assert json.loads((run / "status.json").read_text())["status"] == "complete"
    # Every trial's own record of its epochs, as Ray wrote it: the best is the one with the highest val AUC.
    best_by_trial = {}
    for result in (run / "trials" / "ray").glob("*/result.json"):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        best_by_trial[rows[0]["trial_id"]] = (max(r["val_auc"] for r in rows), rows[0]["config"])
    assert len(best_by_trial) == 4
    top = max(score for score, _ in best_by_trial.values())
    trial = m["best"]["trial"]
    score, config = best_by_trial[trial]
    assert score == pytest.approx(top) and m["best"]["score"] == pytest.approx(top)
    trials = pd.read_csv(run / "tables" / "trials.csv")
    assert len(trials) == 4 and trials["best_score"].is_monotonic_decreasing
    # best.yaml is a config the image study takes, holding the best trial's settings.
    best = load_yaml(run / "best.yaml")
    cfg = from_dict(ImageStudyConfig, merge(load_yaml(Path("src/medassist/configs/image/debug.yaml")), best))
    assert cfg.train.lr == pytest.approx(config["train.lr"])
    assert cfg.train.weight_decay == pytest.approx(config["train.weight_decay"])
    assert main(["image", "--config", str(run / "best.yaml"), "--print-config"]) == 0
    report = (run / "report.md").read_text()
    assert f"Best trial: {trial}" in report and (run / "figures" / "trials.png").is_file()


@pytest.mark.slow  # a second Ray start and Open-i tokenisation: the image sweep covers the machinery by default
def test_a_text_sweep_trains_the_text_studys_model_and_writes_a_text_config(tmp_path: Path) -> None:
    from medassist.studies.text_setup import TextStudyConfig

    space = _space(tmp_path, "rnn_train.lr: {choice: [1.0e-3, 3.0e-3]}\ndropout: {choice: [0.1]}\n")
    argv = ["tune", "text", "--profile", "debug", "--space", str(space), "--samples", "2", "--num-cpus", "2"]
    argv += ["--progress", "false", "--out", str(tmp_path / "runs"), "--metric", "val_macro_f1"]
    assert main(argv) == 0
    (run,) = (tmp_path / "runs").glob("tune-text-*")
    m = json.loads((run / "metrics.json").read_text())
    trials = pd.read_csv(run / "tables" / "trials.csv")
    assert len(trials) == 2 and m["best"]["score"] == pytest.approx(trials["best_score"].max())
    best = load_yaml(run / "best.yaml")
    cfg = from_dict(TextStudyConfig, best)
    assert cfg.recurrent == "bilstm" and cfg.base_dropout == 0.1 and cfg.rnn_train.lr in (1e-3, 3e-3)
