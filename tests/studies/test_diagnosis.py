"""The bias-variance rule of the image study."""

import pandas as pd

from medassist.studies.image import DiagnosisConfig, diagnose
from medassist.studies.units import UnitResult


def _unit(train_acc: float, val_acc: float) -> UnitResult:
    return UnitResult(
        name="u",
        model="cnn",
        model_kwargs={},
        params=1,
        trainable_params=1,
        best_epoch=1,
        epochs_run=6,
        train_time=1.0,
        stopped_early=False,
        budget_reached=False,
        n_train=10,
        train={"accuracy": train_acc},
        val={"accuracy": val_acc},
    )


def _history(val_loss: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"epoch": range(1, len(val_loss) + 1), "val_loss": val_loss})


def test_one_spike_in_the_last_epoch_does_not_decide():
    d = diagnose(_history([0.5, 0.3, 0.25, 0.24, 0.25, 5.0]), _unit(0.95, 0.93), DiagnosisConfig())
    assert d["label"] == "good fit"
    assert abs(d["val_loss_rise"] - (0.25 - 0.24) / 0.24) < 1e-9


def test_a_sustained_rise_is_high_variance():
    d = diagnose(_history([0.5, 0.3, 0.25, 0.4, 0.45, 0.5]), _unit(0.95, 0.93), DiagnosisConfig())
    assert d["label"] == "high variance"


def test_gap_and_low_train_accuracy():
    flat = _history([0.5, 0.4, 0.4])
    assert diagnose(flat, _unit(0.99, 0.80), DiagnosisConfig())["label"] == "high variance"
    assert diagnose(flat, _unit(0.70, 0.69), DiagnosisConfig())["label"] == "high bias"
    assert diagnose(flat, _unit(0.70, 0.60), DiagnosisConfig())["label"] == "high bias and high variance"
    # with a tail of one epoch the old rule (last epoch against the minimum) is back
    spike = _history([0.5, 0.3, 0.25, 0.24, 0.25, 5.0])
    assert diagnose(spike, _unit(0.95, 0.93), DiagnosisConfig(tail_epochs=1))["label"] == "high variance"
