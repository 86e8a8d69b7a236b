"""The synthetic-data study: bad input refused before anything is written, patient records end to end on a small
CSV, and a short run on the real PneumoniaMNIST file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import tiny_data
from medassist.config import from_dict
from medassist.data.types import Split
from medassist.errors import DataError, MedAssistError
from medassist.studies import synth as study
from medassist.studies.synth_config import SynthStudyConfig


def _cfg(tmp_path: Path, **kw) -> SynthStudyConfig:
    return from_dict(SynthStudyConfig, {"out": str(tmp_path / "runs"), "progress": False, **kw})


def _refused(tmp_path: Path, cfg: SynthStudyConfig, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        study.run_synth_study(cfg)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_one_class_is_refused_for_a_conditional_generator(tmp_path, monkeypatch) -> None:
    data = tiny_data(size=12)
    s = data.splits["train"]
    data.splits["train"] = Split(s.images, np.zeros_like(s.labels))
    monkeypatch.setattr(study, "_load", lambda cfg: data)
    _refused(tmp_path, _cfg(tmp_path), DataError, "class-conditional generator needs at least two classes")


def test_an_image_size_the_networks_cannot_take_is_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(study, "_load", lambda cfg: tiny_data(size=10))
    _refused(tmp_path, _cfg(tmp_path), DataError, "image size 10 cannot be taken")


def test_an_unreachable_epsilon_is_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(study, "_load", lambda cfg: tiny_data(size=12))
    _refused(tmp_path, _cfg(tmp_path, dp={"epsilons": [8.0, 0.01]}), MedAssistError, "cannot reach epsilon 0.01")


def test_a_records_csv_without_usable_columns_is_refused(tmp_path) -> None:
    path = tmp_path / "notes.csv"
    pd.DataFrame(
        {"id": [f"p{i}" for i in range(60)], "note": [f"free text number {i}" for i in range(60)], "site": ["A"] * 60}
    ).to_csv(path, index=False)
    _refused(tmp_path, _cfg(tmp_path, data="records", records={"path": str(path)}), DataError, "no usable columns")


def test_records_from_a_csv_end_to_end(tmp_path) -> None:
    rng = np.random.default_rng(0)
    n = 240
    age = rng.integers(20, 90, n)
    path = tmp_path / "patients.csv"
    pd.DataFrame(
        {
            "age": age,
            "sex": rng.choice(["F", "M"], n),
            "smoker": rng.choice(["yes", "no"], n),
            "finding": (age + rng.normal(0, 10, n) > 60).astype(int),
        }
    ).to_csv(path, index=False)
    cfg = _cfg(
        tmp_path,
        data="records",
        n_boot=50,
        records={"path": str(path), "target": "finding", "generators": ["gaussian_copula"], "n_show": 10},
    )
    run = study.run_synth_study(cfg)
    m = json.loads((run / "metrics.json").read_text())
    g = m["generators"]["gaussian_copula"]
    assert 0 < g["quality_score"] <= 1 and {"Column Shapes", "Column Pair Trends"} <= set(g["properties"])
    assert 0.5 < m["trtr"]["test"]["auc"]["value"] <= 1 and "tstr_minus_trtr_auc" in g
    fake = pd.read_csv(run / "synthetic" / "gaussian_copula_synthetic.csv")
    assert fake["synthetic"].all() and len(fake) == m["data"]["sizes"]["train"]
    assert "SYNTHETIC" in (run / "SYNTHETIC.md").read_text()
    report = (run / "report.md").read_text()
    assert "quality score" in report.lower() and report.count("(synthetic)") == 10
    assert json.loads((run / "status.json").read_text())["status"] == "complete"


@pytest.mark.realdata
def test_debug_study_on_real_pneumoniamnist(real_data_dir: Path, tmp_path: Path) -> None:
    from medassist.cli import main

    argv = [
        "synth",
        "--profile",
        "debug",
        "--data-dir",
        str(real_data_dir),
        "--out",
        str(tmp_path),
        "--progress",
        "false",
        "--generators",
        "vae,gan",
        "--set",
        "dp.epsilons=[]",
    ]
    assert main(argv) == 0
    (run,) = list(tmp_path.iterdir())
    m = json.loads((run / "metrics.json").read_text())
    assert set(m["generators"]) == {"vae", "gan"}
    for g in m["generators"].values():
        assert 0 <= g["privacy"]["attack_distance_feature"]["auc"] <= 1 and g["frechet_distance"] >= 0
        assert (
            g["tstr"]["test"]["auc"]["ci_low"]
            <= g["tstr"]["test"]["auc"]["value"]
            <= g["tstr"]["test"]["auc"]["ci_high"]
        )
    with np.load(run / "synthetic" / "gan_synthetic.npz") as z:
        assert z["synthetic"].all() and z["images"].dtype == np.uint8 and set(np.unique(z["labels"])) == {0, 1}
    report = (run / "report.md").read_text()
    assert "## Reflection" in report and (run / "figures" / "samples_gan.png").is_file()
    assert (run / "figures" / "reconstructions_vae.png").is_file() and (run / "figures" / "closest_vae.png").is_file()


@pytest.mark.slow
def test_resume_reuses_the_trained_models_and_gives_the_same_numbers(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(study, "_load", lambda cfg: tiny_data(n=64, size=12))
    tiny = {"epochs": 1, "batch_size": 32}
    cfg = _cfg(
        tmp_path,
        generators=["vae"],
        n_boot=20,
        eval_samples=32,
        n_show=2,
        augment=False,
        dp={"epsilons": []},
        classifier_train=tiny,
        vae={"latent_dim": 4, "width": 8, "train": tiny},
    )
    run = study.run_synth_study(cfg)
    first = json.loads((run / "metrics.json").read_text())
    (run / "status.json").write_text(json.dumps({"status": "failed"}))
    mtime = (run / "units" / "vae" / "model.safetensors").stat().st_mtime_ns
    again = study.run_synth_study(from_dict(SynthStudyConfig, {**vars_of(cfg), "resume": str(run)}))
    assert again == run and (run / "units" / "vae" / "model.safetensors").stat().st_mtime_ns == mtime
    second = json.loads((run / "metrics.json").read_text())
    for key in ("frechet_distance", "coverage", "conditional_accuracy"):
        assert second["generators"]["vae"][key] == first["generators"]["vae"][key]
    assert second["generators"]["vae"]["tstr"]["test"] == first["generators"]["vae"]["tstr"]["test"]


def vars_of(cfg: SynthStudyConfig) -> dict:
    from medassist.config import to_dict

    return to_dict(cfg)
