"""The MedMNIST v2 2D data sets at 28x28, read from the official release files (Zenodo record 10519652).

Files live at ``<data_dir>/medmnist/<name>.npz``; see :func:`medassist.data.paths.resolve_data_dir`.
Cite: Yang, J. et al. "MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical image
classification." Scientific Data 10, 41 (2023).
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medassist.data.download import download_file, md5sum
from medassist.data.paths import DATA_DIR_ENV, resolve_data_dir
from medassist.data.types import SPLITS, ImageData, Split, validate_image_data
from medassist.errors import ChecksumError, DataError

# Module constant (not inlined) so tests can point downloads at a local server.
ZENODO_URL = "https://zenodo.org/records/10519652/files/{name}.npz?download=1"
SUBDIR = "medmnist"
MULTI_LABEL_TASK = "multi-label, binary-class"


@dataclass(frozen=True)
class MedMNISTInfo:
    """Facts about one MedMNIST 2D data set, as in the official ``medmnist.info.INFO``.

    Attributes:
        name: the file stem, e.g. "pneumoniamnist".
        task: the official task string: "binary-class", "multi-class", "multi-label, binary-class" or
            "ordinal-regression".
        n_channels: 1 (grayscale) or 3 (RGB).
        labels: class index as a string -> class name.
        n_samples: number of images in "train", "val" and "test".
        md5: the MD5 of the 28x28 file, or None when no official value is known (then it is not checked).
        license: the data licence.
    """

    name: str
    task: str
    n_channels: int
    labels: dict[str, str]
    n_samples: dict[str, int]
    md5: str | None
    license: str

    @property
    def url(self) -> str:
        """The official download address of the 28x28 file."""
        return ZENODO_URL.format(name=self.name)

    @property
    def filename(self) -> str:
        """The file name inside ``<data_dir>/medmnist``."""
        return f"{self.name}.npz"

    @property
    def class_names(self) -> list[str]:
        """Class names ordered by class index."""
        return [self.labels[str(i)] for i in range(len(self.labels))]


_ORGAN_LABELS = {
    "0": "bladder",
    "1": "femur-left",
    "2": "femur-right",
    "3": "heart",
    "4": "kidney-left",
    "5": "kidney-right",
    "6": "liver",
    "7": "lung-left",
    "8": "lung-right",
    "9": "pancreas",
    "10": "spleen",
}

# Values copied from the official medmnist/info.py of MedMNIST 3.0.2, the release whose files are on Zenodo
# record 10519652. Note that release re-issued organ{a,c,s}mnist: their sizes and MD5s differ from medmnist 2.x.
INFO: dict[str, MedMNISTInfo] = {
    info.name: info
    for info in (
        MedMNISTInfo(
            name="pathmnist",
            task="multi-class",
            n_channels=3,
            labels={
                "0": "adipose",
                "1": "background",
                "2": "debris",
                "3": "lymphocytes",
                "4": "mucus",
                "5": "smooth muscle",
                "6": "normal colon mucosa",
                "7": "cancer-associated stroma",
                "8": "colorectal adenocarcinoma epithelium",
            },
            n_samples={"train": 89996, "val": 10004, "test": 7180},
            md5="a8b06965200029087d5bd730944a56c1",
            license="CC BY 4.0",
        ),
        MedMNISTInfo(
            name="chestmnist",
            task=MULTI_LABEL_TASK,
            n_channels=1,
            labels={
                "0": "atelectasis",
                "1": "cardiomegaly",
                "2": "effusion",
                "3": "infiltration",
                "4": "mass",
                "5": "nodule",
                "6": "pneumonia",
                "7": "pneumothorax",
                "8": "consolidation",
                "9": "edema",
                "10": "emphysema",
                "11": "fibrosis",
                "12": "pleural",
                "13": "hernia",
            },
            n_samples={"train": 78468, "val": 11219, "test": 22433},
            md5="02c8a6516a18b556561a56cbdd36c4a8",
            license="CC BY 4.0",
        ),
        MedMNISTInfo(
            name="dermamnist",
            task="multi-class",
            n_channels=3,
            labels={
                "0": "actinic keratoses and intraepithelial carcinoma",
                "1": "basal cell carcinoma",
                "2": "benign keratosis-like lesions",
                "3": "dermatofibroma",
                "4": "melanoma",
                "5": "melanocytic nevi",
                "6": "vascular lesions",
            },
            n_samples={"train": 7007, "val": 1003, "test": 2005},
            md5="0744692d530f8e62ec473284d019b0c7",
            license="CC BY-NC 4.0",
        ),
        MedMNISTInfo(
            name="octmnist",
            task="multi-class",
            n_channels=1,
            labels={
                "0": "choroidal neovascularization",
                "1": "diabetic macular edema",
                "2": "drusen",
                "3": "normal",
            },
            n_samples={"train": 97477, "val": 10832, "test": 1000},
            md5="c68d92d5b585d8d81f7112f81e2d0842",
            license="CC BY 4.0",
        ),
        MedMNISTInfo(
            name="pneumoniamnist",
            task="binary-class",
            n_channels=1,
            labels={"0": "normal", "1": "pneumonia"},
            n_samples={"train": 4708, "val": 524, "test": 624},
            md5="28209eda62fecd6e6a2d98b1501bb15f",
            license="CC BY 4.0",
        ),
        MedMNISTInfo(
            name="retinamnist",
            task="ordinal-regression",
            n_channels=3,
            labels={"0": "0", "1": "1", "2": "2", "3": "3", "4": "4"},
            n_samples={"train": 1080, "val": 120, "test": 400},
            md5="bd4c0672f1bba3e3a89f0e4e876791e4",
            license="CC BY 4.0",
        ),
        MedMNISTInfo(
            name="breastmnist",
            task="binary-class",
            n_channels=1,
            labels={"0": "malignant", "1": "normal, benign"},
            n_samples={"train": 546, "val": 78, "test": 156},
            md5="750601b1f35ba3300ea97c75c52ff8f6",
            license="CC BY 4.0",
        ),
        MedMNISTInfo(
            name="bloodmnist",
            task="multi-class",
            n_channels=3,
            labels={
                "0": "basophil",
                "1": "eosinophil",
                "2": "erythroblast",
                "3": "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)",
                "4": "lymphocyte",
                "5": "monocyte",
                "6": "neutrophil",
                "7": "platelet",
            },
            n_samples={"train": 11959, "val": 1712, "test": 3421},
            md5="7053d0359d879ad8a5505303e11de1dc",
            license="CC BY 4.0",
        ),
        MedMNISTInfo(
            name="tissuemnist",
            task="multi-class",
            n_channels=1,
            labels={
                "0": "Collecting Duct, Connecting Tubule",
                "1": "Distal Convoluted Tubule",
                "2": "Glomerular endothelial cells",
                "3": "Interstitial endothelial cells",
                "4": "Leukocytes",
                "5": "Podocytes",
                "6": "Proximal Tubule Segments",
                "7": "Thick Ascending Limb",
            },
            n_samples={"train": 165466, "val": 23640, "test": 47280},
            md5="ebe78ee8b05294063de985d821c1c34b",
            license="CC BY 4.0",
        ),
        MedMNISTInfo(
            name="organamnist",
            task="multi-class",
            n_channels=1,
            labels=dict(_ORGAN_LABELS),
            n_samples={"train": 34561, "val": 6491, "test": 17778},
            md5="68e3f8846a6bd62f0c9bf841c0d9eacc",
            license="CC BY 4.0",
        ),
        MedMNISTInfo(
            name="organcmnist",
            task="multi-class",
            n_channels=1,
            labels=dict(_ORGAN_LABELS),
            n_samples={"train": 12975, "val": 2392, "test": 8216},
            md5="b9ceb9546e10131b32923c5bbeaea2b1",
            license="CC BY 4.0",
        ),
        MedMNISTInfo(
            name="organsmnist",
            task="multi-class",
            n_channels=1,
            labels=dict(_ORGAN_LABELS),
            n_samples={"train": 13932, "val": 2452, "test": 8827},
            md5="9ab87b696fb54e2a387ebe992d6ed5f1",
            license="CC BY 4.0",
        ),
    )
}


def _get_info(name: str) -> MedMNISTInfo:
    """Return the INFO entry for ``name``; raise DataError listing the known names if there is none."""
    key = str(name).strip().lower()
    if key not in INFO:
        raise DataError(f"Unknown MedMNIST data set '{name}'. Known 2D data sets: {', '.join(sorted(INFO))}.")
    return INFO[key]


SIZES = (28, 64, 128, 224)
"""The resolutions of the release: 28 px (MedMNIST v2) and 64, 128 and 224 px (MedMNIST+, the same record)."""
MD5_LARGER = {  # the official MD5s of the 64, 128 and 224 px files (medmnist.INFO's MD5_64, MD5_128, MD5_224)
    "pathmnist": (
        "55aa9c1e0525abe5a6b9d8343a507616",
        "ac42d08fb904d92c244187169d1fd1d9",
        "2c51a510bcdc9cf8ddb2af93af1eadec",
    ),
    "chestmnist": (
        "9de6cd0b934ebb5b7426cfba5efbae16",
        "db107e5590b27930b62dbaf558aebee3",
        "45bd33e6f06c3e8cdb481c74a89152aa",
    ),
    "dermamnist": (
        "b70a2f5635c6199aeaa28c31d7202e1f",
        "2defd784463fa5243564e855ed717de1",
        "8974907d8e169bef5f5b96bc506ae45d",
    ),
    "octmnist": (
        "e229e9440236b774d9f0dfef9d07bdaf",
        "0a97e76651ace45c5d943ee3f65b63ae",
        "abc493b6d529d5de7569faaef2773ba3",
    ),
    "pneumoniamnist": (
        "8f4eceb4ccffa70c672198ea285246c6",
        "05b46931834c231683c68f40c47b2971",
        "d6a3c71de1b945ea11211b03746c1fe1",
    ),
    "retinamnist": (
        "afda852cc34dcda56f86ad2b2457dbcc",
        "e48e916a24454daf90583d4e6efb1a18",
        "eae7e3b6f3fcbda4ae613ebdcbe35348",
    ),
    "breastmnist": (
        "742edef2a1fd1524b2efff4bd7ba9364",
        "363e4b3f8d712e9b5de15470a2aaadf1",
        "b56378a6eefa9fed602bb16d192d4c8b",
    ),
    "bloodmnist": (
        "2b94928a2ae4916078ca51e05b6b800b",
        "adace1e0ed228fccda1f39692059dd4c",
        "b718ff6835fcbdb22ba9eacccd7b2601",
    ),
    "tissuemnist": (
        "123ece2eba09d0aa5d698fda57103344",
        "61b955355d7425a89687b06cca3ce0c2",
        "b077128c4a949f0a4eb01517f9037b9c",
    ),
    "organamnist": (
        "2dcccc29b88e6da5a01161ef20cda288",
        "eeae80d0a227a8d099027e1b3cfd3b60",
        "50747347e05c87dd3aaf92c49f9f3170",
    ),
    "organcmnist": (
        "3ce34a8724ea6f548e6db4744d03b6a9",
        "773c1f009daa3fe5d9a2a201b2a7ed94",
        "050f5e875dc056f6768abf94ec9995d1",
    ),
    "organsmnist": (
        "53a6d115339d874c25e309a994ff46d3",
        "ded0c5fa01a95dc4978b956f613e9b8e",
        "b354719e553fbbb2513d5533f52a4cb1",
    ),
}


def _check_size(size: int) -> int:
    if size not in SIZES:
        raise DataError(f"MedMNIST ships images of {', '.join(map(str, SIZES))} px, not {size}; choose one of them")
    return int(size)


def release_file(info: MedMNISTInfo, size: int = 28) -> tuple[str, str, str | None]:
    """(file name, official address, official MD5) of data set ``info`` at ``size`` px."""
    size = _check_size(size)
    if size == 28:
        return info.filename, info.url, info.md5
    stem = f"{info.name}_{size}"
    md5 = MD5_LARGER.get(info.name, (None, None, None))[SIZES.index(size) - 1]
    return f"{stem}.npz", ZENODO_URL.format(name=stem), md5


def medmnist_path(name: str, data_dir: str | os.PathLike[str] | None = None, size: int = 28) -> Path:
    """Return where the file of data set ``name`` at ``size`` px lives: ``<data_dir>/medmnist/<name>.npz`` (28 px)
    or ``<name>_<size>.npz``."""
    return resolve_data_dir(data_dir) / SUBDIR / release_file(_get_info(name), size)[0]


def available(data_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Return the names of the data sets whose file is present in ``data_dir`` (not checked), sorted."""
    return sorted(name for name in INFO if medmnist_path(name, data_dir).is_file())


def _missing_file_message(info: MedMNISTInfo, path: Path, size: int = 28) -> str:
    """Say which file is missing, where to put it, and where to get it."""
    filename, url, _ = release_file(info, size)
    return (
        f"MedMNIST file {filename} is not at {path}. Download it from {url} and put it at {path}, "
        f"or point --data-dir / {DATA_DIR_ENV} at a folder holding {SUBDIR}/{filename}, "
        "or allow the download (download=True)."
    )


def _to_nchw_uint8(images: np.ndarray, info: MedMNISTInfo, split: str, path: Path) -> np.ndarray:
    """Return images as uint8 (N, C, H, W): add the channel axis of grayscale, move RGB channels first."""
    if images.ndim == 3:
        images = images[:, None, :, :]
    elif images.ndim == 4 and images.shape[-1] in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    else:
        raise DataError(
            f"{path}: '{split}_images' has shape {images.shape}; expected (N, H, W) or (N, H, W, channels). "
            "The file is not a MedMNIST 2D file; delete it and run again to re-download."
        )
    if images.shape[1] != info.n_channels:
        raise DataError(
            f"{path}: '{split}_images' has {images.shape[1]} channels; {info.name} has {info.n_channels}. "
            "Delete the file and run again to re-download."
        )
    if images.dtype != np.uint8:
        if images.size and (images.min() < 0 or images.max() > 255):
            raise DataError(
                f"{path}: '{split}_images' has values outside 0-255 (dtype {images.dtype}); expected uint8 pixels."
            )
        images = images.astype(np.uint8)
    # Contiguous so later batching does not pay for the transposed view on every access.
    return np.ascontiguousarray(images)


def _to_labels(labels: np.ndarray, info: MedMNISTInfo, n: int, split: str, path: Path) -> np.ndarray:
    """Return labels as int64: (N,) class indices, or (N, K) 0/1 for the multi-label task."""
    n_classes = len(info.labels)
    if info.task == MULTI_LABEL_TASK:
        if labels.ndim != 2 or labels.shape != (n, n_classes):
            raise DataError(
                f"{path}: '{split}_labels' has shape {labels.shape}; expected ({n}, {n_classes}) for the "
                f"multi-label task of {info.name}. Delete the file and run again to re-download."
            )
        out = labels.astype(np.int64)
        if not np.isin(out, (0, 1)).all():
            raise DataError(f"{path}: '{split}_labels' has values other than 0 and 1; expected multi-label flags.")
        return out
    if labels.size != n or (labels.ndim == 2 and labels.shape[1] != 1) or labels.ndim > 2:
        raise DataError(
            f"{path}: '{split}_labels' has shape {labels.shape}; expected ({n}, 1) or ({n},). "
            "Delete the file and run again to re-download."
        )
    return labels.reshape(-1).astype(np.int64)


def _unreadable(path: Path, exc: BaseException) -> DataError:
    """The error for a file that numpy cannot read as an archive."""
    return DataError(
        f"{path} is not a readable .npz file ({type(exc).__name__}: {exc}); it is corrupt or incomplete. "
        "Delete it and run again to re-download."
    )


def _read_npz(path: Path, info: MedMNISTInfo) -> dict[str, Split]:
    """Read the three splits from a MedMNIST .npz file; raise DataError naming the file on any problem."""
    read_errors = (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise DataError(f"Cannot read {path}: {exc}. Check the file's permissions.") from exc
    # Check the zip signature first: otherwise np.load treats unknown bytes as a pickle and its message suggests
    # loading the file unsafely, which is the wrong advice for a damaged download.
    if not magic.startswith(b"PK"):
        raise DataError(
            f"{path} is not an .npz (zip) archive; it is corrupt or not a MedMNIST file. "
            "Delete it and run again to re-download."
        )
    try:
        # allow_pickle=False: a data file must never run code.
        loaded = np.load(path, allow_pickle=False)
    except read_errors as exc:
        raise _unreadable(path, exc) from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):  # unreachable for zip bytes; kept as a type guard
        raise DataError(f"{path} is not an .npz archive. Delete it and run again to re-download.")
    wanted = [f"{split}_{kind}" for split in SPLITS for kind in ("images", "labels")]
    with loaded as npz:
        missing = [key for key in wanted if key not in npz.files]
        if missing:
            raise DataError(
                f"{path} lacks the array(s) {', '.join(missing)} (it has: {', '.join(npz.files) or 'none'}); "
                "the file is incomplete or not a MedMNIST file. Delete it and run again to re-download."
            )
        try:
            # Members are decompressed here, so a damaged archive can still fail at this point.
            arrays = {key: npz[key] for key in wanted}
        except read_errors as exc:
            raise _unreadable(path, exc) from exc

    splits: dict[str, Split] = {}
    for split in SPLITS:
        images = _to_nchw_uint8(arrays[f"{split}_images"], info, split, path)
        n = images.shape[0]
        if n != info.n_samples[split]:
            raise DataError(
                f"{path}: the '{split}' split has {n} images; the official {info.name} has "
                f"{info.n_samples[split]}. The file is not the official 28x28 release; delete it and run again "
                "to re-download."
            )
        labels = _to_labels(arrays[f"{split}_labels"], info, n, split, path)
        splits[split] = Split(images=images, labels=labels)
    return splits


def load_medmnist(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    verify: bool = True,
    progress: bool = True,
    size: int = 28,
) -> ImageData:
    """Load a MedMNIST 2D data set at ``size`` px (28, or MedMNIST+'s 64, 128 or 224), downloading the official file
    if it is missing.

    Args:
        name: one of :data:`INFO`, e.g. "pneumoniamnist".
        data_dir: the data directory; see :func:`resolve_data_dir`.
        download: fetch the file from Zenodo if it is not in the data directory.
        verify: check the MD5 of a file already present against the official value.
        progress: show a download progress bar.

    Returns:
        The splits "train", "val", "test" with uint8 (N, C, 28, 28) images and int64 labels.

    Raises:
        DataError: unknown name, missing or unreadable file, failed download, or sizes that differ from the release.
        ChecksumError: the file's MD5 differs from the official one.
    """
    info = _get_info(name)
    _, url, md5 = release_file(info, size)
    path = medmnist_path(info.name, data_dir, size)
    md5_verified = False
    if not path.is_file():
        if not download:
            raise DataError(_missing_file_message(info, path, size))
        # download_file checks the MD5 before moving the file into place, and its errors name file and target.
        download_file(url, path, md5=md5, progress=progress)
        md5_verified = md5 is not None
    elif verify and md5 is not None:
        actual = md5sum(path)
        if actual != md5:
            raise ChecksumError(
                f"{path} has md5 {actual}, expected md5 {md5} (official {info.name} {size}x{size} file); it is "
                "corrupt, incomplete or a different version. Delete it and run again to re-download."
            )
        md5_verified = True

    splits = _read_npz(path, info)
    for split, s in splits.items():
        if s.images.shape[-2:] != (size, size):
            raise DataError(
                f"{path}: '{split}_images' are {s.images.shape[-2]}x{s.images.shape[-1]} px, not the {size}x{size} "
                "of its name; delete it and run again to re-download"
            )
    data = ImageData(
        name=info.name,
        class_names=info.class_names,
        splits=splits,
        task="multi-label" if info.task == MULTI_LABEL_TASK else "multi-class",
        info={
            "source": "MedMNIST v2",
            "task": info.task,
            "md5": md5,
            "md5_verified": md5_verified,
            "license": info.license,
            "url": url,
            "size": size,
            "path": str(path),
        },
    )
    return validate_image_data(data)
