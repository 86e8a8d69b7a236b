"""The deployment study's options: which run's model, which compressions, how to time them and how to choose.

They sit apart from the study (:mod:`medassist.studies.deploy`, which re-exports them) so that the measurement
(:mod:`medassist.deploy.variants`), which the study imports, reads them without importing the study back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from medassist.config import DeviceOptions, RunOptions, TrainConfig, option


def _finetune() -> TrainConfig:
    return TrainConfig(epochs=5, batch_size=128, optimizer="adamw", lr=5e-4, scheduler="cosine", augment=True)


def _student_train() -> TrainConfig:
    return TrainConfig(epochs=30, batch_size=128, optimizer="adamw", lr=2e-3, weight_decay=1e-4, scheduler="onecycle")


def _text_finetune() -> TrainConfig:
    return TrainConfig(epochs=3, batch_size=32, optimizer="adamw", lr=5e-4, scheduler="cosine")


@dataclass
class DeployConfig(DeviceOptions, RunOptions):
    """The deployment study: which run's model, which compressions, how to time them."""

    run: str = option("", "a finished image or text study run folder whose model is deployed (required)")
    data_dir: str = option("", "data directory for MedMNIST (default: the source run's, else $MEDASSIST_DATA_DIR)")
    threads: int = option(
        0, "CPU threads of every variant, PyTorch and ONNX Runtime alike (0 = every core this process may use)"
    )
    calibration_images: int = option(512, "training images that calibrate static int8 quantization")
    channel_ratio: float = option(0.5, "fraction of channels removed by structured pruning")
    magnitude_amount: float = option(0.8, "fraction of weights zeroed by unstructured magnitude pruning")
    finetune: TrainConfig = field(default_factory=_finetune, metadata={"help": "fine-tuning after image pruning"})
    text_finetune: TrainConfig = field(
        default_factory=_text_finetune, metadata={"help": "fine-tuning after text pruning"}
    )
    student: str = option("cnn_gap", "the distillation student (a registered image model)")
    student_width: int = option(16, "first-stage channels of the student (when it is cnn_gap)")
    n_teachers: int = option(3, "teachers: the source run's best models by validation AUC, averaged")
    temperature: float = option(4.0, "distillation temperature")
    alpha: float = option(0.7, "weight of the teacher's soft targets (1 - alpha for the true labels)")
    student_train: TrainConfig = field(
        default_factory=_student_train, metadata={"help": "training of the student, alone and distilled"}
    )
    max_accuracy_drop: float = option(0.005, "selection tolerance: largest validation accuracy drop (0.005 = 0.5 pt)")
    max_auc_drop: float = option(0.005, "selection tolerance: largest validation AUC drop")
    max_dice_drop: float = option(0.01, "selection tolerance of a segmentation run: largest validation Dice drop")
    max_map_drop: float = option(0.01, "selection tolerance of a detection run: largest validation mAP@0.5 drop")
    target_error: float = option(
        0.02, "case-level abstention, reported for comparison: accepted validation cases err at most this"
    )
    target_miss: float = option(
        0.05, "per-finding abstention: among answered cases, at most this share of a finding's positives missed"
    )
    target_false: float = option(
        0.05, "per-finding abstention: among answered cases, at most this share of a finding's negatives flagged"
    )
    min_positives: int = option(
        10, "per-finding abstention: a finding with fewer validation positives is not assessed (always referred)"
    )
    warmup: int = option(20, "untimed calls per variant before timing")
    rounds: int = option(5, "timing rounds (every variant in turn each round)")
    repeats: int = option(40, "timed calls per variant and round at batch 1")
    throughput_batch: int = option(64, "batch size of the throughput measurement")
    n_boot: int = option(1000, "bootstrap resamples for the 95% confidence intervals")
    seed: int = option(0, "random seed")
