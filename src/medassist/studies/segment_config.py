"""The segmentation study's configuration: the dataclass behind ``medassist segment`` and its YAML profiles."""

from __future__ import annotations

from dataclasses import dataclass, field

from medassist.config import DeviceOptions, RunOptions, TrainConfig, option
from medassist.studies.image_config import DiagnosisConfig, RegularisationConfig

SEG_ABLATIONS = ("none", "augmentation", "weight_decay", "dropout", "all")


def _train() -> TrainConfig:
    return TrainConfig(
        epochs=30, batch_size=16, optimizer="adam", lr=2e-3, scheduler="cosine", augment=True, monitor="val_dice"
    )


def _diagnosis() -> DiagnosisConfig:
    # The image study's rule read on Dice: a gap of train over validation Dice, a rise of the validation loss.
    return DiagnosisConfig(variance_gap=0.05, loss_rise=0.2, tail_epochs=3, bias_accuracy=0.75)


@dataclass
class SegmentStudyConfig(DeviceOptions, RunOptions):
    """The segmentation study: which images and masks, which networks, how long to train, where to write."""

    images: str = option(
        "drive", "drive (DRIVE retinal vessels), or your own: a folder with images/ and masks/ (and fov/), or a CSV"
    )
    path_column: str = option("path", "CSV: the column with each image's path (relative to the CSV's folder)")
    mask_column: str = option("mask", "CSV: the column with each mask's path")
    split_column: str = option("split", "CSV: the optional column with train/val/test per image")
    fov_column: str = option("", "CSV: the optional column with a field-of-view mask per image (metrics inside it)")
    image_size: int = option(0, "resize images and masks to this square size (0: keep the native size)")
    channels: int = option(0, "1 (grayscale) or 3 (RGB); 0 keeps the files' own (a set mixing them becomes RGB)")
    mask_threshold: float = option(
        -1, "read lossy masks (e.g. JPEG) as binary: foreground where value >= T, e.g. 128 (-1: masks hold classes)"
    )
    data_dir: str = option("", "data directory holding drive/ (default: $MEDASSIST_DATA_DIR, else a per-user cache)")
    val_fraction: float = option(0.2, "share of the training images held out for validation (when not given)")
    test_fraction: float = option(0.2, "share of the images held out for test (when the data gives no split)")
    model: str = option("unet", "the network: unet | attention_unet | segresnet")
    widths: list[int] = option([8, 16], "two capacities side by side: the network's first-stage channels")
    patch: int = option(64, "training patch side in pixels (random crops of images and masks together)")
    patches_per_epoch: int = option(1000, "patches drawn per epoch")
    train: TrainConfig = field(default_factory=_train, metadata={"help": "training of every network"})
    regularisation: RegularisationConfig = field(
        default_factory=RegularisationConfig, metadata={"help": "ablation strengths"}
    )
    ablations: list[str] = option(list(SEG_ABLATIONS), "rows of the augmentation and regularisation ablation")
    size_fractions: list[float] = option([0.25, 0.5, 1.0], "training-image fractions of the size learning curve")
    diagnosis: DiagnosisConfig = field(default_factory=_diagnosis, metadata={"help": "bias-variance rule, on Dice"})
    n_boot: int = option(1000, "bootstrap resamples (over images) for the 95% confidence intervals")
    n_examples: int = option(6, "test images drawn with their predicted and true outlines")
    resume: str = option("", "an unfinished run folder to continue (finished networks are reused)")
