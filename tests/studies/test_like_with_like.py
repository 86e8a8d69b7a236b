"""Like with like: every model of a comparison gets the same epochs and steps whatever it costs; a model cut by a
time budget or at chance level is marked, and no conclusion rests on it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from medassist.cli import profile_path
from medassist.config import from_dict, load_yaml
from medassist.data.types import Split
from medassist.evaluate import at_chance
from medassist.evaluate.training import legend_label, training_status, under_trained, usable
from medassist.models import create_model
from medassist.report.analysis import image_analysis
from medassist.report.text_analysis import text_explanation
from medassist.run import Run
from medassist.studies.image import choose_architecture
from medassist.studies.image_config import ImageStudyConfig
from medassist.studies.units import train_unit
from medassist.train.engine import for_data_size


def _quick() -> ImageStudyConfig:
    return from_dict(ImageStudyConfig, load_yaml(profile_path("image", "quick")))


# --- the schedule depends on the data, never on a model's cost ---


def test_quick_profiles_compare_by_epochs_not_by_wall_clock() -> None:
    cfg = _quick()
    for tcfg in (cfg.train, cfg.transfer_train):
        assert tcfg.time_budget == 0  # no shared wall-clock budget decides how far a model gets
        assert tcfg.min_steps > 0 and tcfg.min_batches > 0  # small data sets still get enough steps
    from medassist.studies.text_setup import TextStudyConfig

    text = from_dict(TextStudyConfig, load_yaml(profile_path("text", "quick")))
    assert text.transformer_train.epochs == 3  # the full profile's best epochs for MiniLM
    assert text.transformer_train.time_budget == 0 and text.rnn_train.time_budget == 0


@pytest.mark.parametrize(
    ("n", "batch", "epochs"),
    [
        (800, 32, 4),  # enough data: the profile's batch and epochs (25 steps x 4 = 100)
        (140, 17, 12),  # a user's 140 images: 8 batches an epoch, at least 100 steps
        (40, 8, 20),  # never below a batch of 8
    ],
)
def test_small_data_gets_a_small_batch_and_enough_steps(n: int, batch: int, epochs: int) -> None:
    cfg = for_data_size(_quick().train, n)
    assert (cfg.batch_size, cfg.epochs) == (batch, epochs)
    assert cfg.epochs * -(-n // cfg.batch_size) >= _quick().train.min_steps


@pytest.mark.long
def test_two_models_of_very_different_cost_get_the_same_epochs(tmp_path: Path) -> None:
    """mlp and resnet50 (about 2,000x the compute per image) trained under the quick profile's rules."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(48, 1, 16, 16), dtype=np.uint8)
    y = (x[:, 0, :8].mean(axis=(1, 2)) > x[:, 0, 8:].mean(axis=(1, 2))).astype(np.int64).reshape(-1, 1)
    train, val = Split(x[:32], y[:32]), Split(x[32:], y[32:])
    # The quick profile's rules, with fewer steps so that the test stays fast.
    cfg = dataclasses.replace(_quick().train, min_steps=12, epochs=2)
    run = Run.create(tmp_path, "like", {})
    units = {}
    with run:
        for name in ("mlp", "resnet50"):
            units[name], _ = train_unit(
                run,
                f"capacity-{name}",
                model_name=name,
                model_kwargs={"image_size": 16},
                train=train,
                val=val,
                cfg=cfg,
                num_classes=2,
                progress=False,
            )
    mlp, big = units["mlp"], units["resnet50"]
    assert big.train_time > 5 * mlp.train_time  # very different costs ...
    assert (mlp.batch_size, mlp.planned_epochs, mlp.epochs_run) == (big.batch_size, big.planned_epochs, big.epochs_run)
    assert mlp.epochs_run == 3  # ... the same schedule: 32 images at batch 8 is 4 steps, 12 steps is 3 epochs
    assert not big.budget_reached and not big.under_trained


# --- the rules that mark a model ---


@pytest.mark.parametrize(
    ("budget", "best", "run", "planned", "expected"),
    [
        (True, 1, 1, 5, True),  # cut after one epoch: still improving
        (True, 3, 3, 5, True),
        (True, 2, 3, 5, False),  # the best epoch was not the last: validation had stopped improving
        (False, 1, 1, 5, False),  # no budget: early stopping or the epochs ended it
        (True, 5, 5, 5, False),  # the budget ran out with the last planned epoch
    ],
)
def test_under_trained_rule(budget: bool, best: int, run: int, planned: int, expected: bool) -> None:
    assert under_trained(budget_reached=budget, best_epoch=best, epochs_run=run, planned_epochs=planned) is expected


def test_chance_level() -> None:
    assert at_chance(0.497)
    assert not at_chance(0.93, np.zeros(10, dtype=int))  # ranks well even if every prediction is one class
    assert at_chance(float("nan"), np.zeros(10, dtype=int))  # undefined AUC and one class predicted
    assert not at_chance(None, np.array([0, 1, 0]))
    assert training_status(True, True) == "under-trained, at chance"
    assert legend_label("resnet50", {"under_trained": True}) == "resnet50 (under-trained)"
    assert legend_label("mlp", {"under_trained": False, "at_chance": False}) == "mlp"
    assert usable({}) and not usable({"at_chance": True})


# --- the written analyses draw no conclusion from a marked model ---


def _cap_row(model: str, params: int, val_auc: float, **kw) -> dict:
    return {
        "name": f"capacity-{model}",
        "model": model,
        "params": params,
        "val_auc": val_auc,
        "val_accuracy": val_auc - 0.1,
        "train_accuracy": val_auc - 0.05,
        "train_time_s": 10.0,
        "epochs_run": kw.pop("epochs_run", 4),
        "planned_epochs": 4,
        "batch_size": 32,
        "under_trained": False,
        "at_chance": False,
        **kw,
    }


def _image_metrics(capacity: list[dict], chosen: str) -> tuple[dict, dict]:
    h = {k: {"value": 0.9, "ci_low": 0.88, "ci_high": 0.92} for k in ("auc", "accuracy", "macro_f1", "ece")}
    m = {
        "capacity": capacity,
        "chosen_architecture": chosen,
        "diagnosis": {
            "label": "good fit",
            "train_accuracy": 0.95,
            "val_accuracy": 0.93,
            "gap_accuracy": 0.02,
            "val_loss_rise": 0.01,
        },
        "size_curve": [],
        "ablation": [],
        "transfer": [],
        "selected": {
            "label": f"{chosen} + none",
            "val_accuracy": 0.9,
            "headline": h,
            "metrics": {
                "class_names": ["normal", "pneumonia"],
                "per_class": {c: {"recall": 0.9} for c in ("normal", "pneumonia")},
                "confusion_matrix": [[90, 10], [5, 95]],
            },
        },
    }
    data = {"name": "pneumoniamnist", "sizes": {"train": 800, "val": 524, "test": 624}, "class_names": ["a", "b"]}
    return m, data


def test_no_capacity_conclusion_from_a_budget_cut_model_at_chance(tmp_path: Path) -> None:
    cap = [
        _cap_row("cnn_gap", 287_138, 0.96),
        _cap_row("mlp", 533_762, 0.93),
        # ResNet-50 as the issue found it: one epoch of five, then the budget; validation AUC at chance.
        _cap_row("resnet50", 23_500_000, 0.497, epochs_run=1, under_trained=True, at_chance=True),
    ]
    m, data = _image_metrics(cap, "cnn_gap")
    text = image_analysis(m, data, tmp_path, None)
    assert "resnet50 was under-trained" in text and "at chance level (validation AUC 0.497)" in text
    assert "No conclusion about capacity rests on it" in text
    assert "budget was too short to decide" in text
    # resnet50 is neither the lowest-scoring model nor one that "did not help": it was never judged
    assert "resnet50 the lowest" not in text
    assert "Larger models did not help" not in text or "resnet50" not in text.split("Larger models did not help")[1]
    assert "mlp the lowest (0.930" in text


def test_every_model_cut_leaves_capacity_undecided(tmp_path: Path) -> None:
    cap = [
        _cap_row("resnet18", 11_000_000, 0.938, epochs_run=1, under_trained=True),
        _cap_row("resnet50", 23_500_000, 0.497, epochs_run=1, under_trained=True, at_chance=True),
    ]
    m, data = _image_metrics(cap, "resnet18")
    text = image_analysis(m, data, tmp_path, None)
    assert "resnet18 and resnet50 were under-trained" in text
    assert "Larger models" not in text and "highest validation AUC" not in text


def test_chosen_architecture_is_never_a_marked_model(tmp_path: Path) -> None:
    """The smallest usable model not clearly below the best; a budget-cut model is not a candidate."""
    from medassist.studies.units import UnitResult

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    run = Run.create(tmp_path, "choice", {})

    def unit(model: str, params: int, noise: float, **kw) -> UnitResult:
        p1 = np.clip(y + rng.normal(0, noise, y.size), 0, 1)
        run.path(f"units/capacity-{model}/x").parent.mkdir(parents=True, exist_ok=True)
        np.save(run.dir / "units" / f"capacity-{model}" / "val_probs.npy", np.stack([1 - p1, p1], 1))
        from medassist.evaluate.metrics import auc

        return UnitResult(
            name=f"capacity-{model}",
            model=model,
            model_kwargs={},
            params=params,
            trainable_params=params,
            best_epoch=1,
            epochs_run=1,
            train_time=1.0,
            stopped_early=False,
            budget_reached=kw.get("under_trained", False),
            n_train=100,
            train={"accuracy": 0.9},
            val={"auc": auc(y, np.stack([1 - p1, p1], 1)), "accuracy": 0.9},
            **kw,
        )

    with run:
        units = {
            "cnn_gap": unit("cnn_gap", 300_000, 0.60),  # a little worse than resnet18, not clearly
            "resnet18": unit("resnet18", 11_000_000, 0.55),
            "resnet50": unit("resnet50", 23_000_000, 0.05, under_trained=True),  # best AUC, but cut by its budget
        }
        choice = choose_architecture(run, units, y, n_boot=300, seed=0)
    assert choice["best"] == "resnet18"  # the marked resnet50 is not the yardstick
    assert choice["chosen"] == "cnn_gap"
    assert choice["rows"]["cnn_gap"]["val_auc_vs_best_hi"] >= 0


def test_text_explanation_says_the_transformer_was_under_trained() -> None:
    def row(model: str, f1: float, **kw) -> dict:
        return {
            "model": model,
            "run": model,
            "params": 1000,
            "train_time_s": 5.0,
            "infer_ms_batch1": 1.0,
            "val_auc": 0.9,
            "gap_macro_f1": 0.1,
            "epochs_run": 1,
            "planned_epochs": 3,
            **{f"test_macro_f1_t{s}": f1 + d for s, d in (("", 0), ("_lo", -0.02), ("_hi", 0.02))},
            **{f"test_macro_auc{s}": 0.9 for s in ("", "_lo", "_hi")},
            **kw,
        }

    vs = {"vs_tfidf_macro_f1_t": -0.11, "vs_tfidf_macro_f1_t_lo": -0.14, "vs_tfidf_macro_f1_t_hi": -0.09}
    m = {
        "task": "multi-label",
        "comparison": [
            row("bilstm", 0.80, **vs),
            row("minilm", 0.78, under_trained=True, **vs),
            row("tfidf_logreg", 0.89),
        ],
    }
    data = {"name": "openi", "mean_words": {"train": 40.0}, "sizes": {"train": 2683, "val": 383, "test": 766}}
    data["label_names"] = ["a", "b"]
    text = text_explanation(m, data, {"recurrent": "bilstm", "transformer": "minilm"})
    assert "minilm was under-trained" in text and "1 of 3 epochs" in text
    assert "too short to decide between the architectures" in text
    assert "advantages" not in text  # no reasoning about attention or pretraining from a cut model


def test_text_explanation_says_why_in_numbers_when_the_transformer_loses() -> None:
    base = {"train_time_s": 5.0, "infer_ms_batch1": 1.0, "val_auc": 0.9, "gap_macro_f1": 0.1, "params": 1000}
    ci = {f"test_macro_f1{s}": 0.8 for s in ("", "_lo", "_hi")} | {
        f"test_macro_auc{s}": 0.9 for s in ("", "_lo", "_hi")
    }
    vs = {"vs_tfidf_macro_f1": -0.03, "vs_tfidf_macro_f1_lo": -0.05, "vs_tfidf_macro_f1_hi": -0.01}
    m = {
        "task": "multi-class",
        "comparison": [
            {"model": "bilstm", **base, **ci, **vs},
            {"model": "minilm", **base, **ci, **vs, "planned_epochs": 3, "batch_size": 16, "steps": 450},
            {"model": "tfidf_logreg", **base, **ci},
        ],
        "per_label": [
            {"class": "rare", "minilm AUC": 0.80, "tfidf_logreg AUC": 0.90},
            {"class": "rarer", "minilm AUC": 0.70, "tfidf_logreg AUC": 0.85},
            {"class": "common", "minilm AUC": 0.97, "tfidf_logreg AUC": 0.95},
        ],
    }
    data = {
        "name": "notes",
        "mean_words": {"train": 40.0},
        "sizes": {"train": 2400, "val": 300, "test": 300},
        "label_names": ["rare", "rarer", "common"],
        "label_counts": {"train": [40, 20, 2340]},
    }
    text = text_explanation(m, data, {"recurrent": "bilstm", "transformer": "minilm"})
    assert "trained to the end of its 3 epochs (450 steps at batch 16) on 2,400 reports" in text
    assert "worse than TF-IDF (test AUC) on 2 of 3 classes" in text
    assert "median number of training examples was 30, against 2340" in text


def test_stems_never_carry_full_resolution_feature_maps() -> None:
    """At 64 px and more, the first stage of every convolutional model runs at 32 px or less."""
    for name in ("cnn", "cnn_gap", "resnet18", "resnet50"):
        for size in (28, 64, 224):
            model = create_model(name, num_classes=3, in_channels=3, image_size=size).eval()
            largest: list[int] = []
            hooks = [
                m.register_forward_hook(lambda _m, _i, out, seen=largest: seen.append(out.shape[-1]))
                for m in model.modules()
                if isinstance(m, torch.nn.Conv2d) and m.stride == (1, 1)
            ]
            with torch.no_grad():
                assert model(torch.zeros(2, 3, size, size)).shape == (2, 3)
            for h in hooks:
                h.remove()
            limit = 28 if size == 28 else 32 if size == 64 else 56
            assert max(largest) <= limit, (name, size, max(largest))


# --- memory: prediction and transfer batches sized to the pixels the model works at ---


def test_prediction_batches_shrink_with_the_pixels_the_model_works_at() -> None:
    from medassist.train.data import ImageBatcher, TokenBatcher, predict_batch_size

    small = ImageBatcher(np.zeros((4, 1, 28, 28), dtype=np.uint8))
    large = ImageBatcher(np.zeros((4, 3, 64, 64), dtype=np.uint8))
    cnn = create_model("cnn_gap", num_classes=2)
    effnet = create_model("efficientnet_lite0", num_classes=2, mode="frozen", input_size=224)
    assert predict_batch_size(cnn, small) == 512  # the 28-pixel default is unchanged
    assert predict_batch_size(cnn, large) == 128
    assert predict_batch_size(effnet, large) == 10  # it upsamples to 224 px inside: 10 at a time, not 512
    assert predict_batch_size(cnn, TokenBatcher([[1, 2, 3]])) == 512


def test_transfer_at_224_trains_at_a_batch_that_fits_in_memory() -> None:
    from medassist.studies.image import transfer_input_size, transfer_train

    cfg = dataclasses.replace(_quick(), images="my_photos/")
    assert transfer_input_size(cfg) == 224  # your own images: EfficientNet-Lite0's ImageNet size
    assert transfer_train(cfg).batch_size == 16
    assert transfer_input_size(_quick()) == 64  # MedMNIST's 28-px images
    assert transfer_train(_quick()).batch_size == 32  # no cap needed at 64 px
    assert transfer_input_size(dataclasses.replace(_quick(), image_size=128)) == 128  # MedMNIST+ at its own size
    assert transfer_input_size(dataclasses.replace(_quick(), image_size=224)) == 224


def test_each_deploy_variant_is_measured_against_its_own_model() -> None:
    """A text run ships MiniLM variants beside the recurrent model's: MiniLM int8 is compared with MiniLM fp32."""
    from medassist.deploy.variants import BASELINE, reference_of

    names = [BASELINE, "int8 dynamic (ONNX Runtime)", "minilm fp32 (PyTorch)", "minilm int8 dynamic (ONNX Runtime)"]
    assert reference_of("minilm int8 dynamic (ONNX Runtime)", names) == "minilm fp32 (PyTorch)"
    assert reference_of("int8 dynamic (ONNX Runtime)", names) == BASELINE
    assert reference_of("distilled student int8 (ONNX Runtime)", [BASELINE]) == BASELINE
