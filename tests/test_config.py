"""Configs: YAML, dotted overrides, type checks, and every shipped profile loads."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from medassist.config import TrainConfig, apply_overrides, from_dict, load_yaml
from medassist.errors import MedAssistError
from medassist.studies.image import ImageStudyConfig
from medassist.studies.pipeline import expand_profiles
from medassist.studies.table import STUDIES, load
from medassist.studies.text import TextStudyConfig

SHIPPED = sorted(Path(str(resources.files("medassist") / "configs")).rglob("*.yaml"))
CLASSES = {s.profile_folder: load(s.config) for s in STUDIES}  # the study table: every profile folder's class


def test_every_profile_folder_is_a_study_of_the_table() -> None:
    assert {p.parent.name for p in SHIPPED} == set(CLASSES)


def test_profiles_are_shipped() -> None:
    assert {p.parent.name + "/" + p.stem for p in SHIPPED} >= {
        "image/debug",
        "image/quick",
        "image/full",
        "bench/default",
        "bench/debug",
        "deploy/debug",
        "deploy/quick",
    }


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_shipped_config_loads(path: Path) -> None:
    data = load_yaml(path)
    if path.parent.name == "all":  # the pipeline's sections name the studies' own profiles
        data = expand_profiles(data)
    cfg = from_dict(CLASSES[path.parent.name], data)
    assert cfg is not None


def test_overrides_and_types() -> None:
    data = apply_overrides({"train": {"epochs": 3}}, ["train.lr=3e-4", "models=mlp,cnn", "train.augment=true"])
    cfg = from_dict(ImageStudyConfig, data)
    assert cfg.train.lr == 3e-4 and cfg.train.epochs == 3 and cfg.train.augment is True
    assert cfg.models == ["mlp", "cnn"]


def test_errors_name_the_key() -> None:
    with pytest.raises(MedAssistError, match="unknown config key 'train.lrr'"):
        from_dict(ImageStudyConfig, {"train": {"lrr": 1}})
    with pytest.raises(MedAssistError, match="'epochs' must be int"):
        from_dict(TrainConfig, {"epochs": "many"})
    with pytest.raises(MedAssistError, match="must look like key.sub=value"):
        apply_overrides({}, ["train.lr"])


def test_bad_yaml_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(MedAssistError, match="not valid YAML"):
        load_yaml(bad)
    with pytest.raises(MedAssistError, match="config file not found"):
        load_yaml(tmp_path / "missing.yaml")


def test_partial_section_updates_the_fields_own_default() -> None:
    """A YAML that sets only transfer_train.epochs keeps the other settings of that section's default."""
    cfg = from_dict(TextStudyConfig, {"rnn_train": {"epochs": 2}})
    assert cfg.rnn_train.epochs == 2
    assert cfg.rnn_train.grad_norms is True and cfg.rnn_train.optimizer == "adamw"  # the text recipe, not bare defaults
