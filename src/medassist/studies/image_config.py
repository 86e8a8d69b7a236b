"""The image study's configuration: the dataclasses behind ``medassist image`` and its YAML profiles.

Kept apart from :mod:`medassist.studies.image` so that the study and its test evaluation
(:mod:`medassist.studies.image_eval`) both import it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from medassist.config import DeviceOptions, RunOptions, TrainConfig, option

ABLATIONS = ("none", "augmentation", "weight_decay", "dropout", "early_stopping", "all")
TRANSFER_MODES = ("scratch", "finetune", "frozen")


@dataclass
class DiagnosisConfig:
    """Thresholds of the bias-variance rule (stated in the report)."""

    variance_gap: float = option(0.05, "train-minus-validation accuracy above which variance is called high")
    loss_rise: float = option(
        0.2, "relative rise of validation loss from its minimum to the last epochs that counts as overfitting"
    )
    tail_epochs: int = option(3, "last epochs whose median validation loss is compared with the minimum")
    bias_accuracy: float = option(0.9, "training accuracy below which bias is called high")


@dataclass
class RegularisationConfig:
    """Strengths used by the ablation."""

    weight_decay: float = option(1e-4, "L2 weight decay of the 'weight_decay' row")
    dropout: float = option(0.3, "dropout of the 'dropout' row")
    patience: int = option(5, "patience of the 'early_stopping' row")


@dataclass
class ImageStudyConfig(DeviceOptions, RunOptions):
    """The image study: which data, which models, how long to train, where to write."""

    dataset: str = option("pneumoniamnist", "MedMNIST v2 data set name (ignored when `images` is set)")
    images: str = option("", "your own images: a folder with one subfolder per class, or a CSV (path,label,...)")
    path_column: str = option("path", "CSV images: the column with each image's path (relative to the CSV's folder)")
    label_column: str = option("label", "CSV images: the column with each image's class")
    image_size: int = option(
        28, "input size in pixels: MedMNIST's release at 28, 64, 128 or 224 px; your own images are resized to it"
    )
    channels: int = option(
        0,
        "your own images: 1 (grayscale) or 3 (RGB; grayscale repeated); 0 keeps the files' own, and a set mixing "
        "them is converted to the channels most files have",
    )
    cache: bool = option(
        True,
        "your own images: decode once (by every core) into the per-user cache ($MEDASSIST_CACHE_DIR) and train from "
        "it on disk; false decodes into memory on every run",
    )
    decode_workers: int = option(0, "your own images: processes that decode them (0 = every core)")
    skip_bad_files: bool = option(
        False, "your own images: leave out files that cannot be read (the report counts them) instead of stopping"
    )
    data_dir: str = option("", "data directory (default: $MEDASSIST_DATA_DIR, else a per-user cache)")
    download: bool = option(True, "download a missing MedMNIST file from Zenodo (checked against its MD5)")
    resume: str = option("", "an unfinished run folder to continue (finished models are reused)")
    subsample: int = option(
        0,
        "keep at most this many train and validation images, a class-stratified draw (0 = all): the quick profile's "
        "way to give every model the same epochs in minutes",
    )
    models: list[str] = option(["mlp", "cnn", "cnn_gap", "resnet18", "resnet50"], "models compared for capacity")
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "training of every model"})
    size_fractions: list[float] = option([0.1, 0.25, 0.5, 1.0], "training-set fractions of the size learning curve")
    regularisation: RegularisationConfig = field(
        default_factory=RegularisationConfig, metadata={"help": "ablation strengths"}
    )
    ablations: list[str] = option(list(ABLATIONS), "rows of the regularisation ablation")
    transfer: list[str] = option(list(TRANSFER_MODES), "EfficientNet-Lite0 modes compared (empty to skip)")
    transfer_train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=10), metadata={"help": "training of the EfficientNet-Lite0 runs"}
    )
    transfer_input_size: int = option(
        0,
        "EfficientNet-Lite0 input size, images resized to it (0 = 224, its ImageNet size, for your own images and "
        "MedMNIST at 224 px; MedMNIST's smaller sizes at their own, at least 64)",
    )
    diagnosis: DiagnosisConfig = field(default_factory=DiagnosisConfig, metadata={"help": "bias-variance rule"})
    train_eval_samples: int = option(2000, "training images evaluated in eval mode for the train metrics")
    n_boot: int = option(1000, "bootstrap resamples for the 95% confidence intervals")
    n_examples: int = option(10, "test images drawn with predictions and Grad-CAM")
