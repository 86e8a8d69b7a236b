"""The MedMNIST benchmark: its summary table, and a smoke run of the real machinery (debug profile)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn import metrics as skm

from medassist.bench.medmnist import PUBLISHED, BenchConfig, check_config, decide, lever_rows, summarise
from medassist.cli import main
from medassist.errors import MedAssistError
from medassist.evaluate.decision import (
    choose_threshold,
    leave_one_out_accuracy,
    predict_proba_flip,
    threshold_accuracy,
)
from medassist.train import predict_proba


def test_summary_mean_std_targets_and_published_rows() -> None:
    runs = pd.DataFrame(
        {
            "dataset": ["breastmnist"] * 3,
            "method": ["m"] * 3,
            "seed": [0, 1, 2],
            "test_auc": [0.90, 0.92, 0.94],
            "test_accuracy": [0.88, 0.88, 0.91],
            "train_time_s": [1.0, 2.0, 3.0],
            "peak_memory_mb": [100.0, 300.0, 200.0],
        }
    )
    s = summarise(runs)
    row = s[s.method == "m"].iloc[0]
    assert row.test_auc_mean == pytest.approx(0.92) and row.test_auc_std == pytest.approx(0.02)
    assert row.peak_memory_mb_max == 300.0
    assert row.target == "met"  # 0.92 >= 0.91 and 0.89 >= 0.87
    assert len(s) == 1 + len(PUBLISHED["breastmnist"])


def test_summary_verdict_is_met_missed_or_no_target() -> None:
    runs = pd.DataFrame(
        {
            "dataset": ["breastmnist", "breastmnist", "dermamnist"],
            "method": ["good", "low_accuracy", "m"],
            "seed": [0, 0, 0],
            "test_auc": [0.95, 0.95, 0.99],
            "test_accuracy": [0.90, 0.86, 0.99],
            "train_time_s": [1.0, 1.0, 1.0],
            "peak_memory_mb": [1.0, 1.0, 1.0],
        }
    )
    s = summarise(runs).set_index("method")
    assert s.loc["good", "target"] == "met"
    assert s.loc["low_accuracy", "target"] == "missed"  # AUC met, accuracy 0.86 < 0.87
    assert s.loc["m", "target"] == "no target"  # a data set without a target gets no verdict


def _probs(p1: list[float]) -> np.ndarray:
    p = np.asarray(p1, dtype=float)
    return np.stack([1 - p, p], 1)


def test_threshold_is_chosen_on_validation_when_test_disagrees() -> None:
    # Validation: positives sit above 0.75, so the best threshold is high. Test: positives at 0.55-0.65, which
    # a threshold chosen on test (or argmax) would get right and the validation threshold gets wrong.
    y_val, p_val = np.array([0, 0, 0, 0, 1, 1]), _probs([0.1, 0.6, 0.65, 0.7, 0.8, 0.9])
    y_test, p_test = np.array([0, 0, 1, 1]), _probs([0.1, 0.2, 0.55, 0.65])
    t, val_acc, test_acc = decide("val_accuracy", y_val, p_val, y_test, p_test)
    assert 0.7 < t < 0.8  # midway between the last negative and the first positive of validation
    assert val_acc == 1.0 and test_acc == 0.5  # applied unchanged to test, though 0.5 would score 1.0 there
    assert choose_threshold(y_test, p_test, "val_accuracy") < 0.55  # what the test split alone would have chosen
    t_arg, _, test_arg = decide("argmax", y_val, p_val, y_test, p_test)
    assert np.isnan(t_arg) and test_arg == 1.0


def test_threshold_rules_accuracy_youden_and_ties() -> None:
    y = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    p = _probs([0.1, 0.2, 0.3, 0.4, 0.45, 0.7, 0.6, 0.8])
    assert choose_threshold(y, p, "argmax") == 0.5
    t_acc = choose_threshold(y, p, "val_accuracy")
    assert threshold_accuracy(y, p, t_acc) == pytest.approx(7 / 8)  # one negative (0.7) above both positives
    assert t_acc == 0.5  # 0.5 and 0.65 both score 7/8 (and 0.75); the tie goes to the one nearest 0.5
    t_j = choose_threshold(y, p, "val_youden")
    fpr, tpr, thr = skm.roc_curve(y, p[:, 1])
    assert threshold_accuracy(y, p, t_j) == threshold_accuracy(y, p, t_acc)
    j = (p[:, 1][None] >= t_j)[0]
    assert j[y == 1].mean() - j[y == 0].mean() == pytest.approx((tpr - fpr).max())  # the ROC's best J
    with pytest.raises(MedAssistError, match="unknown threshold rule"):
        choose_threshold(y, p, "median")
    with pytest.raises(MedAssistError, match="binary probabilities"):
        choose_threshold(y[:2], np.full((2, 3), 1 / 3), "val_accuracy")


def test_leave_one_out_accuracy_is_not_the_optimistic_in_sample_accuracy() -> None:
    # Alternating labels on increasing probabilities: any threshold fitted on a case itself looks better than it is.
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    p = _probs(list(np.linspace(0.1, 0.9, 8)))
    in_sample = threshold_accuracy(y, p, choose_threshold(y, p, "val_accuracy"))
    loo = leave_one_out_accuracy(y, p, "val_accuracy")
    assert loo < in_sample
    sep_y, sep_p = np.array([0, 0, 0, 1, 1, 1]), _probs([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    assert leave_one_out_accuracy(sep_y, sep_p, "val_accuracy") == 1.0  # a separable set stays perfect


class _LeftHalf(torch.nn.Module):
    """Logits from the left half of the image only, so a horizontal flip changes the prediction."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, H, W)
        s = x[..., : x.shape[-1] // 2].mean((1, 2, 3))  # (B,)
        return torch.stack([-s, s], 1) * 4  # (B, 2)


def test_tta_averages_the_image_and_its_horizontal_flip() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 1, 6, 6), dtype=np.uint8)
    model = _LeftHalf()
    plain, flipped = predict_proba(model, images), predict_proba(model, images[..., ::-1].copy())
    assert not np.allclose(plain, flipped)  # the planted model is not flip-invariant
    np.testing.assert_allclose(predict_proba_flip(model, images), (plain + flipped) / 2, rtol=1e-6)
    np.testing.assert_allclose(predict_proba_flip(model, images, flip=False), plain)


def test_lever_rows_cover_flip_and_threshold_on_validation() -> None:
    y = np.array([0, 0, 1, 1])
    plain, flip = _probs([0.2, 0.6, 0.7, 0.9]), _probs([0.3, 0.4, 0.6, 0.8])
    rows = pd.DataFrame(lever_rows(y, plain, flip)).set_index(["tta_flip", "threshold_rule"])
    assert len(rows) == 6
    assert rows.loc[(False, "argmax"), "val_accuracy"] == 0.75 and rows.loc[(True, "argmax"), "val_accuracy"] == 1.0
    assert rows.loc[(False, "val_accuracy"), "val_accuracy"] == 1.0  # threshold between 0.6 and 0.7


def test_check_config_refuses_unknown_threshold_and_methods() -> None:
    with pytest.raises(MedAssistError, match="unknown threshold 'best'"):
        check_config(BenchConfig(threshold="best"))
    with pytest.raises(MedAssistError, match="methods must be"):
        check_config(BenchConfig(methods=["resnet"]))
    check_config(BenchConfig(threshold="val_youden", tta_flip=True))


def test_shipped_profiles_set_the_engine_min_steps() -> None:
    from medassist.cli import profile_path
    from medassist.config import from_dict, load_yaml

    assert BenchConfig().recipe.min_steps == 800
    debug = from_dict(BenchConfig, load_yaml(profile_path("bench", "debug")))
    assert debug.recipe.min_steps == 0 and debug.recipe.optimizer == "adamw"  # the rest of the recipe is kept


@pytest.mark.long
@pytest.mark.realdata
def test_benchmark_debug_profile_runs(real_data_dir: Path, tmp_path: Path, capsys) -> None:
    assert (
        main(
            [
                "bench",
                "medmnist",
                "--profile",
                "debug",
                "--data-dir",
                str(real_data_dir),
                "--out",
                str(tmp_path),
                "--progress",
                "false",
                "--tta-flip",
                "true",
                "--threshold",
                "val_accuracy",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "published: ResNet-18 (28)" in out and "ResNet-18 reference protocol" in out
    assert "+ flip TTA + val_accuracy threshold" in out
    (run,) = list(tmp_path.iterdir())
    m = json.loads((run / "metrics.json").read_text())
    assert len(m["runs"]) == 2
    for r in m["runs"]:
        assert 0.0 <= r["test_auc"] <= 1.0 and r["peak_memory_mb"] > 50 and r["train_time_s"] > 0
    recipe = next(r for r in m["runs"] if r["method"].startswith("cnn_gap"))
    assert 0.0 < recipe["threshold"] < 1.0  # chosen on validation
    assert len(m["val_levers"]) == 2 * 6  # per run: flip off/on x three threshold rules
    assert (run / "tables" / "val_levers.csv").is_file()
