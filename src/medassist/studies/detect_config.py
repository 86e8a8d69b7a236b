"""The detection study's configuration: the dataclass behind ``medassist detect`` and its YAML profiles."""

from __future__ import annotations

from dataclasses import dataclass, field

from medassist.config import DeviceOptions, RunOptions, TrainConfig, option
from medassist.studies.image_config import DiagnosisConfig

DETECT_ABLATIONS = ("no_augmentation", "no_pretraining")


def _train() -> TrainConfig:
    return TrainConfig(
        epochs=12,
        batch_size=4,
        min_batches=0,
        optimizer="adamw",
        lr=1e-3,
        weight_decay=1e-4,
        scheduler="cosine",
        augment=True,
        monitor="val_map50",
    )


def _diagnosis() -> DiagnosisConfig:
    # The image study's rule read on mAP@0.5: a gap of train over validation mAP, a rise of the validation loss.
    return DiagnosisConfig(variance_gap=0.1, loss_rise=0.2, tail_epochs=3, bias_accuracy=0.7)


@dataclass
class DetectStudyConfig(DeviceOptions, RunOptions):
    """The detection study: which images and boxes, which detector, how long to train, where to write."""

    data: str = option(
        "bccd",
        "bccd (BCCD blood cells, its own 205/87/72 split); --voc, --coco, --yolo or --boxes wins over it",
    )
    voc: str = option("", "a Pascal VOC folder (Annotations/, JPEGImages/, optional ImageSets/Main/ split)")
    coco: str = option("", "a COCO JSON file of boxes (with --images, the folder its file names are relative to)")
    images: str = option("", "COCO: the folder of the images")
    yolo: str = option("", "a YOLO folder with its data.yaml")
    boxes: str = option("", "a CSV with one row per box (an image without boxes: one row with empty box columns)")
    path_column: str = option("path", "CSV: the column with each image's path (relative to the CSV's folder)")
    box_columns: list[str] = option(["x_min", "y_min", "x_max", "y_max"], "CSV: the four box columns, in pixels")
    label_column: str = option("label", "CSV: the column with each box's class")
    split_column: str = option("split", "CSV: the optional column with train/val/test per image")
    group_column: str = option("", "CSV: the optional column whose groups (e.g. patients) stay in one split")
    classes: list[str] = option([], "the classes in order (default: the source's categories, else the names found)")
    strict_boxes: bool = option(False, "refuse a box that reaches outside its image instead of clipping it")
    image_size: int = option(320, "resize each image so that its longer side has this many pixels (0: native size)")
    channels: int = option(3, "3 (RGB; grayscale files repeated) or 1 (grayscale)")
    data_dir: str = option("", "data directory holding bccd/ (default: $MEDASSIST_DATA_DIR, else a per-user cache)")
    val_fraction: float = option(0.2, "share of the images held out for validation (when the source gives no split)")
    test_fraction: float = option(0.2, "share of the images held out for test (when the source gives no split)")
    max_images: int = option(0, "use at most this many images of each split, drawn with the seed (0: all)")
    model: str = option("retinanet", "the detector: retinanet (MONAI)")
    backbone: str = option("efficientnet_lite0", "efficientnet_lite0 (ImageNet weights shipped) | resnet10 | resnet18")
    pretrained: bool = option(True, "start the backbone from its ImageNet weights")
    widths: list[int] = option([32, 64], "two capacities side by side: the feature pyramid's and heads' channels")
    anchor_sizes: list[int] = option([16, 24, 32], "anchor sides in pixels at stride 8 (doubled at each level)")
    train: TrainConfig = field(default_factory=_train, metadata={"help": "training of every detector"})
    ablations: list[str] = option(list(DETECT_ABLATIONS), "rows of the ablation (at the smaller width)")
    size_fractions: list[float] = option([0.5, 1.0], "training-image fractions of the size learning curve")
    diagnosis: DiagnosisConfig = field(default_factory=_diagnosis, metadata={"help": "bias-variance rule, on mAP"})
    n_boot: int = option(1000, "bootstrap resamples (over images) for the 95% confidence intervals")
    n_examples: int = option(6, "test images drawn with their predicted and true boxes")
    resume: str = option("", "an unfinished run folder to continue (finished detectors are reused)")
