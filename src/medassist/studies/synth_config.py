"""The synthetic-data study's configuration: the dataclasses behind ``medassist synth`` and its YAML profiles."""

from __future__ import annotations

from dataclasses import dataclass, field

from medassist.config import DeviceOptions, RunOptions, TrainConfig, option

GENERATORS = ("vae", "gan", "diffusion")
RECORD_GENERATORS = ("gaussian_copula", "tvae", "ctgan")


def _train(**kw: object) -> TrainConfig:
    return TrainConfig(**{"epochs": 20, "batch_size": 128, "monitor": "val_loss", **kw})  # type: ignore[arg-type]


@dataclass
class VAEConfig:
    """The class-conditional convolutional VAE."""

    latent_dim: int = option(32, "latent dimensions")
    width: int = option(32, "channels of the first convolution (doubled at the second)")
    kl_schedule: str = option("warmup", "KL weight schedule: none | warmup (linear) | cyclical")
    warmup_fraction: float = option(0.3, "warmup: share of the training steps over which the KL weight rises to 1")
    cycles: int = option(4, "cyclical: number of cycles")
    free_bits: float = option(0.05, "free bits: nats per latent dimension below which its KL is not pushed down")
    train: TrainConfig = field(default_factory=lambda: _train(lr=2e-3), metadata={"help": "training of the VAE"})


@dataclass
class GANConfig:
    """The conditional GAN (spectral norm, projection discriminator, hinge loss)."""

    latent_dim: int = option(64, "noise dimensions")
    width: int = option(64, "channels of the networks")
    d_lr: float = option(2e-4, "discriminator learning rate (Adam, betas 0.0/0.9)")
    minibatch_std: bool = option(True, "a minibatch standard-deviation feature in the discriminator")
    diffaugment: list[str] = option([], "DiffAugment transforms of every image D sees: translation, cutout")
    val_samples: int = option(1000, "generated images whose Fréchet distance to validation images selects the epoch")
    train: TrainConfig = field(
        default_factory=lambda: _train(
            batch_size=64, lr=2e-4, betas=[0.0, 0.9], monitor="val_frechet_distance", ema=0.99
        ),
        metadata={
            "help": "training of the generator (its moving average is validated and kept; the epoch is chosen by "
            "the validation Fréchet distance)"
        },
    )


@dataclass
class DiffusionConfig:
    """The class-conditional diffusion model (MONAI DiffusionModelUNet, DDPM training, DDIM sampling)."""

    channels: list[int] = option([32, 64, 64], "channels per UNet level")
    attention: bool = option(False, "self-attention at the lowest level (7x7): about 7x slower on CPU")
    ddim_steps: int = option(25, "DDIM sampling steps")
    n_samples: int = option(1000, "images sampled (sampling costs about 0.1 s per image at 25 steps on 2 cores)")
    train: TrainConfig = field(
        default_factory=lambda: _train(batch_size=64, lr=1e-3), metadata={"help": "training of the diffusion model"}
    )


@dataclass
class DPConfig:
    """DP-SGD (Opacus) for the VAE."""

    epsilons: list[float] = option([8.0, 1.0], "privacy budgets; delta is 1/N (N training images); empty to skip")
    max_grad_norm: float = option(1.0, "per-sample gradient clipping norm")
    width: int = option(16, "channels of the DP-SGD VAE (per-sample gradients cost memory and time)")
    train: TrainConfig = field(
        default_factory=lambda: _train(batch_size=256, lr=2e-3), metadata={"help": "DP-SGD training of the VAE"}
    )


@dataclass
class RecordsConfig:
    """Patient records (tabular): PadChest studies or a user's CSV, generated with SDV."""

    path: str = option("", "a CSV of records (one row per patient record); empty = the PadChest studies")
    columns: list[str] = option([], "CSV columns to model (empty: every column with 2+ values, ids dropped)")
    target: str = option("", "the 0/1 or categorical column TSTR predicts (empty: PadChest's most frequent finding)")
    split_column: str = option("", "CSV column with train/val/test per row (empty: a seeded 70/15/15 split)")
    findings: int = option(8, "PadChest: the most frequent findings kept as 0/1 columns")
    max_train: int = option(5000, "training records the generators see (a seeded subsample; 0 = all)")
    max_eval: int = option(3000, "held-out records used for DCR and TSTR (0 = all)")
    generators: list[str] = option(["gaussian_copula", "tvae"], "SDV synthesizers: gaussian_copula | tvae | ctgan")
    epochs: int = option(100, "TVAE/CTGAN epochs")
    n_show: int = option(15, "synthetic records shown beside real ones in the report")


@dataclass
class SynthStudyConfig(DeviceOptions, RunOptions):
    """The synthetic-data study: which data, which generators, how long to train, where to write."""

    data: str = option(
        "images", "images | padchest-records | heart_disease (UCI, four hospitals) | records (a CSV in records.path)"
    )
    dataset: str = option("pneumoniamnist", "MedMNIST v2 data set (ignored when `images` is set)")
    images: str = option("", "your own images: a folder with one subfolder per class, or a CSV (path,label,...)")
    path_column: str = option("path", "CSV images: the column with each image's path")
    label_column: str = option("label", "CSV images: the column with each image's class")
    image_size: int = option(28, "input size in pixels (a multiple of 4; your own images are resized to it)")
    data_dir: str = option("", "data directory (default: $MEDASSIST_DATA_DIR, else a per-user cache)")
    download: bool = option(True, "download a missing MedMNIST file from Zenodo (checked against its MD5)")
    resume: str = option("", "an unfinished run folder to continue (finished models are reused)")
    subsample: int = option(0, "keep at most this many train and validation images (0 = all; for debug runs)")
    seed: int = option(0, "seed of every model, sample and resample")
    generators: list[str] = option(list(GENERATORS), "image generators: vae | gan | diffusion")
    vae: VAEConfig = field(default_factory=VAEConfig, metadata={"help": "the VAE"})
    gan: GANConfig = field(default_factory=GANConfig, metadata={"help": "the GAN"})
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig, metadata={"help": "the diffusion model"})
    dp: DPConfig = field(default_factory=DPConfig, metadata={"help": "DP-SGD"})
    classifier: str = option("cnn_gap", "registered model used as domain classifier (features), for TRTR and TSTR")
    classifier_width: int = option(16, "cnn_gap classifier: channels of its first stage (ignored by other models)")
    classifier_train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=10, batch_size=128, time_budget=60.0),
        metadata={"help": "training of every classifier (real, synthetic, augmented: the same budget)"},
    )
    n_synthetic: int = option(0, "synthetic images per generator for TSTR (0 = as many as real training images)")
    augment: bool = option(True, "binary data: also train on real + synthetic minority-class images (to balance)")
    eval_samples: int = option(2000, "real training images in the feature, DCR and attack measurements")
    n_show: int = option(10, "samples per class in each grid")
    n_boot: int = option(1000, "bootstrap resamples for the 95% confidence intervals")
    records: RecordsConfig = field(default_factory=RecordsConfig, metadata={"help": "patient records"})
