"""Read the user's own images (PNG, JPEG, DICOM) from a folder of class subfolders or from a CSV file.

Every reader returns an :class:`~medassist.data.types.ImageData` with uint8 images of shape (N, C, size, size) and
raises :class:`~medassist.errors.DataError` for anything the user can fix. Readers never write files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from PIL import Image, ImageOps
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut
from tqdm.auto import tqdm

from medassist.data.types import SPLITS, ImageData, Split, validate_image_data
from medassist.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")
DICOM_EXTENSIONS = (".dcm", ".dicom")
_NOT_AN_IMAGE = "is not a readable PNG, JPEG or DICOM image"
# Folders that tools create next to real data; they are never classes.
_IGNORED_DIRS = ("__MACOSX",)


# ----------------------------------------------------------------------------------------------------------------
# One image
# ----------------------------------------------------------------------------------------------------------------


def load_image(path: str | os.PathLike[str], *, size: int, channels: int | None = None) -> np.ndarray:
    """Read one PNG, JPEG or DICOM file as a uint8 array of shape (C, size, size).

    DICOM pixels get the modality LUT (RescaleSlope/RescaleIntercept), then the first WindowCenter/WindowWidth
    (min-max of the image when absent), and MONOCHROME1 is inverted so bright always means high values.
    16-bit and float grayscale PNGs are min-max scaled. The image is resized to a square with bilinear resampling.

    Args:
        path: the image file.
        size: output height and width in pixels.
        channels: None keeps the file's own (1 for grayscale, 3 for colour), 1 converts to grayscale,
            3 repeats grayscale into RGB.

    Returns:
        uint8 array of shape (C, size, size).

    Raises:
        DataError: the file is missing, unreadable, not an image, or holds NaN pixel values.
    """
    _check_size_channels(size, channels)
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    pixels = _read_dicom(path) if _is_dicom(path) else _read_pil(path)
    image = Image.fromarray(pixels)
    if channels == 1 and image.mode != "L":
        image = image.convert("L")
    elif channels == 3 and image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    arr = np.asarray(image, dtype=np.uint8)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr)


def _check_size_channels(size: int, channels: int | None) -> None:
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise DataError(f"image size must be a positive whole number of pixels, got {size!r}.")
    if channels not in (None, 1, 3):
        raise DataError(f"channels must be 1 (grayscale), 3 (RGB) or None (keep the file's own), got {channels!r}.")


def _is_dicom(path: Path) -> bool:
    """True for DICOM by extension, or by the 'DICM' magic at byte 128 (files often lack an extension)."""
    if path.suffix.lower() in DICOM_EXTENSIONS:
        return True
    try:
        with path.open("rb") as f:
            head = f.read(132)
    except OSError as e:
        raise DataError(f"{path} {_NOT_AN_IMAGE}: {e}") from e
    return head[128:132] == b"DICM"


def _read_pil(path: Path) -> np.ndarray:
    """Decode a Pillow-readable file to uint8 (H, W) or (H, W, 3)."""
    try:
        with Image.open(path) as im:
            im.load()
            # Phone and camera JPEGs store rotation in EXIF; apply it so the pixels are upright.
            image = ImageOps.exif_transpose(im)
    except Exception as e:  # Pillow raises many types (OSError, SyntaxError, ValueError, DecompressionBombError).
        raise DataError(f"{path} {_NOT_AN_IMAGE} ({type(e).__name__}: {e}); replace or remove it.") from e
    mode = image.mode
    if mode in ("L", "RGB"):
        return np.asarray(image)
    if mode in ("1", "LA", "La"):
        return np.asarray(image.convert("L"))
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # High-bit-depth grayscale (e.g. 12-bit X-rays saved as 16-bit PNG) rarely fills the full range.
        values = np.asarray(image).astype(np.float64)
        return _min_max_uint8(values, path)
    if mode in ("P", "PA"):
        # Via RGBA so palettes with transparency convert without Pillow warnings; alpha is then dropped.
        return np.asarray(image.convert("RGBA").convert("RGB"))
    return np.asarray(image.convert("RGB"))  # RGBA, CMYK, YCbCr, LAB, HSV, ...


def _read_dicom(path: Path) -> np.ndarray:
    """Decode a DICOM file to uint8 (H, W) for grayscale or (H, W, 3) for colour."""
    try:
        ds = pydicom.dcmread(path, force=True)
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            raise DataError(f"{path} is a DICOM file without pixel data; it is not an image. Remove it.")
        raw = ds.pixel_array
    except DataError:
        raise
    except Exception as e:  # pydicom raises many types for bad files and unsupported compression.
        raise DataError(f"{path} {_NOT_AN_IMAGE} ({type(e).__name__}: {e}); replace or remove it.") from e

    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DataError(f"{path} is a multi-frame DICOM ({frames} frames); save one frame per file.")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if int(ds.get("SamplesPerPixel", 1) or 1) > 1:
        # Colour DICOM (RGB, or YBR that pydicom already converted to RGB): no windowing applies.
        if raw.dtype == np.uint8:
            return raw
        return _min_max_uint8(raw.astype(np.float64), path)
    if photometric == "PALETTE COLOR":
        raise DataError(f"{path} is a PALETTE COLOR DICOM, which is not supported; convert it to RGB or grayscale.")

    values = apply_modality_lut(raw, ds).astype(np.float64)
    _check_finite(values, path)
    center, width = _first_value(ds.get("WindowCenter")), _first_value(ds.get("WindowWidth"))
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    scaled = None
    if center is not None and width is not None:
        scaled = _window(values, center, width, function)
    out = _min_max_uint8(values, path) if scaled is None else _to_uint8(scaled)
    if photometric == "MONOCHROME1":
        out = 255 - out  # MONOCHROME1 shows the lowest value as white.
    return out


def _first_value(value: object) -> float | None:
    """The first of a possibly multi-valued DICOM number, or None when absent or empty."""
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if len(value) else None
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray | None:
    """Apply a DICOM VOI window (PS3.3 C.11.2.1.2); values in [0, 1], or None when the width is invalid."""
    if function == "SIGMOID":
        if width <= 0:
            return None
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        if width <= 0:
            return None
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    if width < 1:
        return None  # Invalid for LINEAR; the caller falls back to min-max.
    if width == 1:
        return (values > center - 0.5).astype(np.float64)
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _check_finite(values: np.ndarray, path: Path | str) -> None:
    if not np.isfinite(values).all():
        raise DataError(f"{path} has NaN or infinite pixel values; fix or remove this image.")


def _min_max_uint8(values: np.ndarray, path: Path | str) -> np.ndarray:
    """Scale ``values`` linearly so the image minimum becomes 0 and its maximum 255."""
    _check_finite(values, path)
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)  # A constant image has no contrast to keep.
    return _to_uint8((values - lo) / (hi - lo))


def _to_uint8(unit: np.ndarray) -> np.ndarray:
    return np.round(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------------
# Many images
# ----------------------------------------------------------------------------------------------------------------


def _load_many(
    paths: Sequence[Path],
    *,
    size: int,
    channels: int | None,
    progress: bool,
    desc: str,
    where: Sequence[str] | None = None,
) -> np.ndarray:
    """Load ``paths`` into one uint8 (N, C, size, size) array; ``where`` adds e.g. the CSV row to errors."""
    images: np.ndarray | None = None
    first_with: dict[int, Path] = {}
    for i, path in enumerate(tqdm(paths, desc=desc, unit="img", disable=not progress)):
        try:
            image = load_image(path, size=size, channels=channels)
        except DataError as e:
            if where is None:
                raise
            raise DataError(f"{e} ({where[i]})") from e
        n_channels = image.shape[0]
        if n_channels not in first_with:
            first_with[n_channels] = path
        if images is None:
            images = np.empty((len(paths), *image.shape), dtype=np.uint8)
        elif n_channels != images.shape[1]:
            first = first_with[images.shape[1]]
            raise DataError(
                f"images have different channel counts: {first} has {images.shape[1]} and {path} has {n_channels}; "
                "pass channels=1 (grayscale) or channels=3 (RGB) to convert every image to one."
            )
        images[i] = image
    assert images is not None  # Callers never pass an empty list.
    return images


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for label, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise DataError(f"{label} must be at least 0 and below 1, got {value!r}.")
    if val_fraction + test_fraction >= 1.0:
        raise DataError(
            f"val_fraction ({val_fraction}) + test_fraction ({test_fraction}) must be below 1 to leave training images."
        )


def _random_split(
    labels: np.ndarray, *, val_fraction: float, test_fraction: float, seed: int, source: str
) -> dict[str, np.ndarray]:
    """Stratified, seeded indices for train/val/test; a zero fraction gives an empty split."""
    # Imported here: scikit-learn is slow to import and only needed when no split is given.
    from sklearn.model_selection import train_test_split

    _check_fractions(val_fraction, test_fraction)
    index = np.arange(labels.shape[0])
    empty = np.array([], dtype=np.int64)
    try:
        if test_fraction > 0:
            rest, test = train_test_split(index, test_size=test_fraction, random_state=seed, stratify=labels)
        else:
            rest, test = index, empty
        if val_fraction > 0:
            # The val share of what is left, so val_fraction stays a fraction of all images.
            share = val_fraction / (1.0 - test_fraction)
            train, val = train_test_split(rest, test_size=share, random_state=seed, stratify=labels[rest])
        else:
            train, val = rest, empty
    except ValueError as e:
        counts = ", ".join(str(c) for c in np.bincount(labels))
        raise DataError(
            f"{source}: cannot split {labels.shape[0]} images (per class: {counts}) into train/val/test with "
            f"val_fraction={val_fraction} and test_fraction={test_fraction} while keeping every class in each "
            f"split ({e}). Add images to the small classes, change the fractions, or give the splits yourself."
        ) from e
    # Sorted so each split keeps the files' order, which makes metadata easy to follow.
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def _build(
    *,
    name: str,
    class_names: list[str],
    images: np.ndarray,
    labels: np.ndarray,
    metadata: pd.DataFrame,
    split_index: dict[str, np.ndarray],
    info: dict,
) -> ImageData:
    splits = {
        key: Split(
            images=np.ascontiguousarray(images[idx]),
            labels=labels[idx].astype(np.int64),
            metadata=metadata.iloc[idx].reset_index(drop=True),
        )
        for key, idx in split_index.items()
    }
    data = ImageData(name=name, class_names=class_names, splits=splits, task="multi-class", info=info)
    return validate_image_data(data)


def _check_nonempty_splits(name: str, split_index: dict[str, np.ndarray], hint: str) -> None:
    """Name an empty split before loading any image, so the user does not wait for a certain failure.

    ``hint`` may contain ``{split}``, replaced by the split's name.
    """
    for key in SPLITS:
        if split_index[key].size == 0:
            raise DataError(f"{name}: the '{key}' split has no samples; {hint.replace('{split}', key)}")


# ----------------------------------------------------------------------------------------------------------------
# Folder reader
# ----------------------------------------------------------------------------------------------------------------


def _subdirs(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in _IGNORED_DIRS
    )


def _image_files(folder: Path) -> list[Path]:
    """Image files anywhere under ``folder`` (nested folders, e.g. per patient, belong to the same class)."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def read_image_folder(
    root: str | os.PathLike[str],
    *,
    size: int = 28,
    channels: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    name: str | None = None,
    progress: bool = True,
) -> ImageData:
    """Read images from ``root/<class>/...`` or ``root/{train,val,test}/<class>/...``.

    Class names are the sorted class folder names. Files ending in .png, .jpg, .jpeg, .dcm or .dicom (any case) are
    read, also from nested folders; other files are ignored. Without train/val/test folders the images are split at
    random, stratified by class and seeded.

    Args:
        root: the data folder.
        size: output height and width in pixels.
        channels: see :func:`load_image`.
        val_fraction: share of all images for "val" when splitting at random.
        test_fraction: share of all images for "test" when splitting at random.
        seed: seed of the random split.
        name: data set name; the folder name by default.
        progress: show a progress bar while reading.

    Returns:
        The data set, with a "path" column in each split's metadata.

    Raises:
        DataError: a missing folder, no images, a bad file, mixed channel counts, or splits unfit for a study.
    """
    _check_size_channels(size, channels)
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"folder not found: {root}")
    name = name or root.resolve().name
    top = _subdirs(root)
    split_dirs = [p for p in top if p.name in SPLITS]

    if split_dirs:
        others = [p.name for p in top if p.name not in SPLITS]
        if others:
            raise DataError(
                f"{root} has split folders ({', '.join(p.name for p in split_dirs)}) and also {others}; "
                "with given splits every class folder must sit inside train/, val/ and test/."
            )
        missing = [s for s in SPLITS if not (root / s).is_dir()]
        if missing:
            raise DataError(
                f"{root} has no {', '.join(s + '/' for s in missing)} folder; with given splits it needs train/, "
                "val/ and test/, each with one subfolder per class (or use one subfolder per class and no split "
                "folders to split at random)."
            )
        class_names = sorted({d.name for s in SPLITS for d in _subdirs(root / s)})
        if not class_names:
            raise DataError(f"{root}: train/, val/ and test/ have no class subfolders; add one subfolder per class.")
        paths: list[Path] = []
        labels_list: list[int] = []
        split_of: list[str] = []
        for s in SPLITS:
            for d in _subdirs(root / s):
                files = _image_files(d)
                paths += files
                labels_list += [class_names.index(d.name)] * len(files)
                split_of += [s] * len(files)
        split_arr = np.array(split_of, dtype=object)
        split_index = {s: np.flatnonzero(split_arr == s) for s in SPLITS}
        _check_nonempty_splits(name, split_index, f"add images under {root}/{{split}}/<class>/.")
        labels = np.array(labels_list, dtype=np.int64)
    else:
        if not top:
            raise DataError(f"{root} has no class subfolders; put the images of each class in its own subfolder.")
        class_names = [d.name for d in top]
        paths, labels_list = [], []
        for i, d in enumerate(top):
            files = _image_files(d)
            if not files:
                raise DataError(
                    f"class folder {d} has no images ({', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder."
                )
            paths += files
            labels_list += [i] * len(files)
        labels = np.array(labels_list, dtype=np.int64)
        split_index = _random_split(
            labels, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, source=str(root)
        )
        _check_nonempty_splits(name, split_index, "raise val_fraction/test_fraction or add images.")

    images = _load_many(paths, size=size, channels=channels, progress=progress, desc=f"Reading {name}")
    metadata = pd.DataFrame({"path": [str(p) for p in paths]})
    info = {"source": str(root), "layout": "folder-splits" if split_dirs else "folder", "seed": seed}
    return _build(
        name=name,
        class_names=class_names,
        images=images,
        labels=labels,
        metadata=metadata,
        split_index=split_index,
        info=info,
    )


# ----------------------------------------------------------------------------------------------------------------
# CSV reader
# ----------------------------------------------------------------------------------------------------------------

_INT_RE = re.compile(r"^[+-]?\d+$")


def _cell_text(value: object) -> str:
    """A cell as stripped text; "" for empty cells (pandas reads them as NaN)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # A column with ints is read as float when pandas sees any NaN.
    return str(value).strip()


def _map_labels(
    texts: list[str], class_names: list[str] | None, csv_path: Path, label_column: str
) -> tuple[np.ndarray, list[str]]:
    """Class indices and class names for the label texts (rows already checked non-empty)."""
    all_int = all(_INT_RE.match(t) for t in texts)
    if class_names is None:
        if all_int:
            unique = sorted({int(t) for t in texts})  # Numeric order, so "10" comes after "9".
            names = [str(u) for u in unique]
            position = {u: i for i, u in enumerate(unique)}
            return np.array([position[int(t)] for t in texts], dtype=np.int64), names
        names = sorted(set(texts))
        position_s = {n: i for i, n in enumerate(names)}
        return np.array([position_s[t] for t in texts], dtype=np.int64), names

    names = [str(c) for c in class_names]
    if len(set(names)) != len(names):
        raise DataError(f"class_names has duplicates: {names}; give each class once.")
    position_s = {n: i for i, n in enumerate(names)}
    if all(t in position_s for t in texts):
        return np.array([position_s[t] for t in texts], dtype=np.int64), names
    # Whole-number labels that are not names are read as indices into class_names (e.g. 0/1 with two names).
    if all_int and not any(t in position_s for t in texts) and all(0 <= int(t) < len(names) for t in texts):
        return np.array([int(t) for t in texts], dtype=np.int64), names
    row = next(i for i, t in enumerate(texts) if t not in position_s)
    raise DataError(
        f"unknown class '{texts[row]}' in {csv_path} row {row + 2} (column '{label_column}'); known classes: "
        f"{', '.join(names)}. Fix the label or add it to class_names."
    )


def read_image_csv(
    csv_path: str | os.PathLike[str],
    *,
    size: int = 28,
    channels: int | None = None,
    path_column: str = "path",
    label_column: str = "label",
    split_column: str | None = "split",
    class_names: list[str] | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    name: str | None = None,
    progress: bool = True,
) -> ImageData:
    """Read images listed in a CSV file with one row per image.

    Paths are relative to the CSV's folder unless absolute. Labels (names or whole numbers) map to class indices in
    sorted order, or to the positions in ``class_names`` when given (whole-number labels that match no name are
    taken as indices into ``class_names``). When the split column exists its values must be train, val or test;
    otherwise the rows are split at random, stratified by class and seeded. Every other column (e.g. sex, age, site)
    is kept as metadata next to "path", which holds the resolved file path. Row numbers in messages count the
    header as row 1, as a spreadsheet shows them.

    Args:
        csv_path: the CSV file.
        size: output height and width in pixels.
        channels: see :func:`load_image`.
        path_column: column with image paths.
        label_column: column with class labels.
        split_column: optional column with train/val/test; None to always split at random.
        class_names: the classes in index order; by default the sorted unique labels.
        val_fraction: share of all rows for "val" when splitting at random.
        test_fraction: share of all rows for "test" when splitting at random.
        seed: seed of the random split.
        name: data set name; the CSV file name without extension by default.
        progress: show a progress bar while reading.

    Returns:
        The data set with per-split metadata.

    Raises:
        DataError: a missing or malformed CSV, column, label, split value or image, mixed channel counts, or
            splits unfit for a study.
    """
    _check_size_channels(size, channels)
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"file not found: {csv_path}")
    name = name or csv_path.stem
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark that would rename the first column.
        df = pd.read_csv(csv_path, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{csv_path} is not a readable CSV file ({e}); save it as comma-separated UTF-8 text.") from e
    present = ", ".join(repr(str(c)) for c in df.columns)
    for role, column in (("path", path_column), ("label", label_column)):
        if column not in df.columns:
            raise DataError(
                f"{csv_path} has no {role} column '{column}'; columns present: {present}. "
                f"Rename the column or pass {role}_column=..."
            )
    if len(df) == 0:
        raise DataError(f"{csv_path} has no rows; add one row per image.")

    path_texts = [_cell_text(v) for v in df[path_column]]
    label_texts = [_cell_text(v) for v in df[label_column]]
    for i, (p, lab) in enumerate(zip(path_texts, label_texts, strict=True)):
        if not p:
            raise DataError(f"{csv_path} row {i + 2} has an empty '{path_column}' cell; give the image file.")
        if not lab:
            raise DataError(f"{csv_path} row {i + 2} has an empty '{label_column}' cell; give its class.")
    labels, names = _map_labels(label_texts, class_names, csv_path, label_column)
    base = csv_path.parent
    paths = [Path(p) if Path(p).is_absolute() else base / p for p in path_texts]

    has_split = split_column is not None and split_column in df.columns
    if has_split:
        split_texts = [_cell_text(v).lower() for v in df[split_column]]
        for i, s in enumerate(split_texts):
            if s not in SPLITS:
                raise DataError(
                    f"{csv_path} row {i + 2}: split '{df[split_column].iloc[i]}' in column '{split_column}' is not "
                    f"one of {', '.join(SPLITS)}."
                )
        split_arr = np.array(split_texts, dtype=object)
        split_index = {s: np.flatnonzero(split_arr == s) for s in SPLITS}
        _check_nonempty_splits(name, split_index, f"give it rows in column '{split_column}' of {csv_path}.")
    else:
        split_index = _random_split(
            labels, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, source=str(csv_path)
        )
        _check_nonempty_splits(name, split_index, "raise val_fraction/test_fraction or add rows.")

    where = [f"listed in {csv_path} row {i + 2}" for i in range(len(paths))]
    images = _load_many(paths, size=size, channels=channels, progress=progress, desc=f"Reading {name}", where=where)
    dropped = [label_column, path_column] + ([split_column] if has_split else [])
    # A second column named "path" (when path_column differs) would clash with the resolved paths, which win.
    metadata = df.drop(columns=[*dropped, "path"], errors="ignore")
    metadata.insert(0, "path", [str(p) for p in paths])
    info = {"source": str(csv_path), "layout": "csv", "seed": seed}
    return _build(
        name=name,
        class_names=names,
        images=images,
        labels=labels,
        metadata=metadata,
        split_index=split_index,
        info=info,
    )
