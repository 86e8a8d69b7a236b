"""Read images with segmentation masks: DRIVE by name, a folder of images/ and masks/, or a CSV listing both.

Every reader returns a :class:`SegSet`: images as uint8 (N, C, H, W), masks as uint8 class indices (N, H, W) where a
binary 0/255 mask becomes 0/1, an optional field of view (where metrics count), names, splits when the source gives
them, and DICOM pixel spacing. Masks are only ever resized with nearest neighbour, so they keep their class values.
Every problem the user can fix is raised as a :class:`~medassist.errors.DataError` that names the file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
from PIL import Image, ImageOps

from medassist.data.image_file import check_size_channels, is_dicom, pixel_spacing, read_pixels
from medassist.data.paths import resolve_data_dir
from medassist.data.types import SPLITS
from medassist.errors import DataError

SEG_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp", ".dcm", ".dicom")
MASK_SUFFIXES = ("_mask", "_manual1")
"""A mask or field-of-view file matches the image of the same stem, or of its stem without one of these suffixes."""
MAX_CLASSES = 64
"""Class-index masks hold values 0..MAX_CLASSES-1; more distinct levels mean a lossy or non-label image."""
UNKNOWN = 255
"""The mask value of a pixel without a label (rows of ``SegSet.second`` for images the second grader did not see)."""

_DRIVE_HINT = "see the DRIVE section of README.md in the data directory for the expected layout"


@dataclass
class SegSet:
    """Images with their segmentation masks, one row per image.

    Attributes:
        images: uint8 (N, C, H, W), C = 1 or 3.
        masks: uint8 (N, H, W) class indices, 0 = background.
        fov: bool (N, H, W), True where metrics count (the field of view), or None (everywhere).
        names: one name per image (its file stem).
        split: per image "train", "val" or "test" when the source gives one, else None.
        meta: the metadata columns of a CSV (one row per image, RangeIndex), else None.
        num_classes: 2 for binary masks, else the largest class index + 1.
        source: provenance, e.g. ``{"kind": "drive", "path": "...", "image_size": 0, "channels": None}``.
        second: a second grader's masks, uint8 (N, H, W), where the source has one (DRIVE test); rows of images
            without one are all 255 (unknown); None when no image has one.
        spacing: per image the DICOM pixel spacing in mm (between rows, between columns) after any resize, None for
            images without one; None when no image has one.
    """

    images: np.ndarray
    masks: np.ndarray
    fov: np.ndarray | None
    names: list[str]
    split: list[str] | None
    meta: pd.DataFrame | None
    num_classes: int
    source: dict[str, Any]
    second: np.ndarray | None = None
    spacing: list[tuple[float, float] | None] | None = None

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx: np.ndarray | list[int]) -> SegSet:
        """The images at positions ``idx`` (integers or a boolean mask), every per-image field indexed alike."""
        index = np.asarray(idx)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        index = index.astype(np.int64).reshape(-1)
        second = None if self.second is None else self.second[index]
        if second is not None and not _has_rows(second):
            second = None
        spacing = None if self.spacing is None else [self.spacing[i] for i in index]
        if spacing is not None and all(s is None for s in spacing):
            spacing = None
        return SegSet(
            images=self.images[index],
            masks=self.masks[index],
            fov=None if self.fov is None else self.fov[index],
            names=[self.names[i] for i in index],
            split=None if self.split is None else [self.split[i] for i in index],
            meta=None if self.meta is None else self.meta.iloc[index].reset_index(drop=True),
            num_classes=self.num_classes,
            source=dict(self.source),
            second=second,
            spacing=spacing,
        )


@dataclass
class _Item:
    """The files of one image: the image, its mask, and optional field of view and second grader's mask."""

    image: Path
    mask: Path
    fov: Path | None = None
    second: Path | None = None
    split: str | None = None


def _has_rows(second: np.ndarray) -> bool:
    """True when some row of a second grader's masks is not all unknown."""
    return bool((second != UNKNOWN).reshape(len(second), -1).any(axis=1).any()) if len(second) else False


# ---------------------------------------------------------------------------------------------------------------------
# One mask


def _describe_values(values: np.ndarray) -> str:
    shown = ", ".join(str(int(v)) if float(v).is_integer() else f"{v:g}" for v in values[:10])
    more = f", ... {values[-1]:g} ({len(values)} distinct values)" if len(values) > 10 else ""
    return shown + more


def _mask_values(path: Path) -> np.ndarray:
    """The raw values of a mask file as a 2-D array (palette indices for palette images, gray levels otherwise)."""
    if is_dicom(path):
        try:
            ds = pydicom.dcmread(path, force=True)
            raw = np.asarray(ds.pixel_array)
        except Exception as e:  # pydicom raises many types for bad files and unsupported compression.
            raise DataError(
                f"{path} is not a readable mask ({type(e).__name__}: {e}); replace it with a PNG of class indices."
            ) from e
        if raw.ndim != 2:
            raise DataError(
                f"{path} is a DICOM mask of shape {raw.shape}; a mask must be one grayscale frame of class indices."
            )
        return raw
    try:
        with Image.open(path) as im:
            im.seek(0)  # The first frame of an animated GIF or multi-page TIFF.
            im.load()
            image = ImageOps.exif_transpose(im)  # As the image is read, so mask and image stay aligned.
    except Exception as e:  # Pillow raises many types (OSError, SyntaxError, ValueError, DecompressionBombError).
        raise DataError(
            f"{path} is not a readable mask image ({type(e).__name__}: {e}); replace it with a PNG of class indices."
        ) from e
    mode = image.mode
    if mode == "1":
        return np.asarray(image.convert("L"))
    if mode in ("L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return np.asarray(image)
    if mode in ("LA", "La", "PA"):
        return np.asarray(image)[..., 0]
    rgb = np.asarray(image if mode == "RGB" else image.convert("RGB"))
    if not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()):
        raise DataError(
            f"{path} is a colour mask (its red, green and blue channels differ); a mask must hold one class index "
            "per pixel: save it as a grayscale or palette PNG with values 0..K-1 (or 0/255 for two classes)."
        )
    return rgb[..., 0]


def _resize_nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a uint8 (H, W) mask to ``size`` = (height, width) with nearest neighbour."""
    if mask.shape == size:
        return mask
    out = Image.fromarray(mask).resize((size[1], size[0]), Image.Resampling.NEAREST)
    return np.asarray(out, dtype=np.uint8)


def _check_mask_size(size: object) -> tuple[int, int]:
    ok = isinstance(size, tuple | list) and len(size) == 2
    ok = ok and all(isinstance(v, int | np.integer) and not isinstance(v, bool) and v > 0 for v in size)
    if not ok:
        raise DataError(f"mask size must be (height, width) in whole pixels above 0, got {size!r}.")
    return int(size[0]), int(size[1])  # type: ignore[index]


def read_mask(
    path: str | os.PathLike[str], *, size: tuple[int, int] | None = None, threshold: float | None = None
) -> np.ndarray:
    """Read one segmentation mask as uint8 class indices.

    A mask whose values are only 0 and 255 (or 0 and 1) is binary and becomes 0/1. A grayscale or palette image
    (PNG, GIF, TIFF, BMP; a palette image gives its palette indices) with values below :data:`MAX_CLASSES` is a
    class-index mask and kept as it is. An RGB mask whose three channels are equal is read as grayscale. A DICOM mask
    gives its stored values (no window). Anything else, e.g. a JPEG mask whose compression spread the values over
    0..255, is refused.

    Args:
        path: the mask file.
        size: (height, width) to resize to with nearest neighbour (never interpolating classes); None keeps the
            file's own size.
        threshold: a binary mask is ``value >= threshold`` (for lossy masks, e.g. JPEG); None reads class indices.

    Returns:
        uint8 array of shape (H, W).

    Raises:
        DataError: the file is missing or unreadable, a colour mask, or its values are not class indices.
    """
    target = None if size is None else _check_mask_size(size)
    mask, _ = _read_mask(Path(path), threshold)
    return mask if target is None else _resize_nearest(mask, target)


def _read_mask(path: Path, threshold: float | None) -> tuple[np.ndarray, int]:
    """:func:`read_mask` at the file's size, and the pixels a threshold decided (values neither 0, 1 nor 255)."""
    if not path.is_file():
        raise DataError(f"mask file not found: {path}")
    values = _mask_values(path)
    if values.size == 0:
        raise DataError(f"{path} is an empty mask (no pixels); replace it.")
    unique = np.unique(values)
    if not np.isfinite(unique.astype(np.float64)).all():
        raise DataError(f"{path} has NaN or infinite mask values; a mask must hold class indices 0..K-1.")
    integral = bool(np.all(np.mod(unique, 1) == 0))
    if threshold is not None:
        return (values >= threshold).astype(np.uint8), int((~np.isin(values, (0, 1, 255))).sum())
    if integral and set(unique.tolist()) <= {0, 255}:
        mask = (values == 255).astype(np.uint8)
    elif integral and unique.min() >= 0 and unique.max() < MAX_CLASSES:
        mask = values.astype(np.uint8)
    else:
        raise DataError(
            f"{path} is not a mask of class indices: its values are {_describe_values(unique)}. A mask must hold "
            f"0/255 or 0/1 (two classes) or class indices 0..{MAX_CLASSES - 1}; save it losslessly (PNG or GIF, "
            "not JPEG, whose compression blurs the edges into many values), or pass --mask-threshold T to read a "
            "lossy binary mask as value >= T (e.g. 128)."
        )
    return mask, 0


# ---------------------------------------------------------------------------------------------------------------------
# A set of images with masks


def _check_image_size(image_size: int, channels: int | None) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int | np.integer) or image_size < 0:
        raise DataError(
            f"image size must be 0 (keep each image's own size) or a whole number of pixels, got {image_size!r}."
        )
    check_size_channels(int(image_size) or 1, channels)


def _hw(shape: tuple[int, ...]) -> str:
    return f"{shape[1]} wide x {shape[0]} high"


def _read_aligned(
    path: Path, image: Path, shape: tuple[int, int], role: str, threshold: float | None = None
) -> tuple[np.ndarray, int]:
    """A mask of ``image`` at its native size ``shape``, refused when the sizes differ, and the pixels a threshold
    decided."""
    mask, decided = _read_mask(path, threshold)
    if mask.shape != shape:
        raise DataError(
            f"{role} {path} is {_hw(mask.shape)} but its image {image} is {_hw(shape)}; a {role} must have its "
            "image's size: fix or replace one of the two files."
        )
    return mask, decided


def to_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """uint8 (H, W) or (H, W, 3) to (C, H, W) with C = ``channels``, converting as load_image does."""
    image = Image.fromarray(pixels)
    if channels == 1 and image.mode != "L":
        image = image.convert("L")
    elif channels == 3 and image.mode != "RGB":
        image = image.convert("RGB")
    arr = np.asarray(image, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _resize_bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """Resize (C, H, W) uint8 to (C, size, size) with bilinear resampling, as load_image does."""
    if image.shape[1:] == (size, size):
        return image
    planes = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    out = np.asarray(Image.fromarray(planes).resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
    return out[None] if out.ndim == 2 else out.transpose(2, 0, 1)


def _build(
    items: list[_Item],
    *,
    image_size: int,
    channels: int | None,
    source: dict[str, Any],
    meta: pd.DataFrame | None = None,
    mask_threshold: float | None = None,
) -> SegSet:
    """Read every item's files, check their sizes, convert and resize, and stack them into a SegSet.

    Each image is converted and resized as soon as it is read, so only the output size is held in memory.
    """
    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    fovs: list[np.ndarray | None] = []
    seconds: list[np.ndarray | None] = []
    spacings: list[tuple[float, float] | None] = []
    first: tuple[Path, tuple[int, int]] | None = None
    decided = 0
    for item in items:
        px = read_pixels(item.image)
        shape = (int(px.shape[0]), int(px.shape[1]))
        if first is None:
            first = (item.image, shape)
        elif image_size == 0 and shape != first[1]:
            raise DataError(
                f"{item.image} is {_hw(shape)} but {first[0]} is {_hw(first[1])}; at their own size all images "
                "of a set must share one size: pass image_size=N (--image-size N) to resize every image to N x N."
            )
        size = (image_size, image_size) if image_size else shape
        arr = to_channels(px, channels or (3 if px.ndim == 3 else 1))
        images.append(_resize_bilinear(arr, image_size) if image_size else arr)
        mask, changed = _read_aligned(item.mask, item.image, shape, "mask", mask_threshold)
        masks.append(_resize_nearest(mask, size))
        decided += changed
        fov = None
        if item.fov is not None:
            fov = _read_aligned(item.fov, item.image, shape, "field-of-view mask")[0]
            if fov.max() > 1:
                raise DataError(
                    f"field-of-view mask {item.fov} has values {_describe_values(np.unique(fov))}; it must be "
                    "binary (0/255 or 0/1, 1 where metrics count)."
                )
            fov = _resize_nearest(fov, size) > 0
        fovs.append(fov)
        second = None
        if item.second is not None:
            second = _resize_nearest(_read_aligned(item.second, item.image, shape, "second grader's mask")[0], size)
        seconds.append(second)
        spacing = pixel_spacing(item.image)
        if spacing is not None and image_size:
            spacing = (spacing[0] * shape[0] / image_size, spacing[1] * shape[1] / image_size)
        spacings.append(spacing)

    if channels is None:
        channels = max(len(a) for a in images)  # A set mixing grayscale and colour becomes RGB.
    # Pillow's grayscale to RGB repeats the plane, so repeating after the resize equals converting before it.
    image_arr = np.stack([np.repeat(a, channels, axis=0) if len(a) != channels else a for a in images])
    images.clear()
    mask_arr = np.stack(masks)
    size = mask_arr.shape[1:]
    fov_arr = None
    if any(f is not None for f in fovs):
        fov_arr = np.stack([np.ones(size, bool) if f is None else f for f in fovs])
    second_arr = None
    if any(s is not None for s in seconds):
        second_arr = np.stack([np.full(size, UNKNOWN, np.uint8) if s is None else s for s in seconds])
    splits = [item.split for item in items]
    return SegSet(
        images=image_arr,
        masks=mask_arr,
        fov=fov_arr,
        names=[item.image.stem for item in items],
        split=None if any(s is None for s in splits) else [str(s) for s in splits],
        meta=meta,
        num_classes=max(2, int(mask_arr.max()) + 1),
        source={
            **source,
            "image_size": int(image_size),
            "channels": channels,
            **({"mask_threshold": mask_threshold, "thresholded_pixels": decided} if mask_threshold is not None else {}),
        },
        second=second_arr,
        spacing=None if all(s is None for s in spacings) else spacings,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Folder


def _listed(names: Sequence[str]) -> str:
    """At most 10 names, then how many more."""
    more = f" and {len(names) - 10} more" if len(names) > 10 else ""
    return ", ".join(names[:10]) + more


def _files(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (hidden files and other extensions are ignored)."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in SEG_IMAGE_EXTENSIONS
    )


def _by_stem(files: list[Path], stems: set[str] | None, folder: Path) -> dict[str, Path]:
    """Files keyed by the image stem they belong to; ``stems`` None keys by their own stem."""
    out: dict[str, Path] = {}
    for p in files:
        key = p.stem
        if stems is not None and key not in stems:
            for suffix in MASK_SUFFIXES:
                if key.endswith(suffix) and len(key) > len(suffix):
                    key = key[: -len(suffix)]
                    break
        if key in out:
            raise DataError(
                f"{folder} has two files for '{key}': {out[key].name} and {p.name}; keep one (files match by name "
                "without extension)."
            )
        out[key] = p
    return out


def read_mask_folder(
    folder: str | os.PathLike[str],
    *,
    image_size: int = 0,
    channels: int | None = None,
    mask_threshold: float | None = None,
) -> SegSet:
    """Read ``folder/images/*`` with their masks from ``folder/masks/*`` and optional fields of view ``folder/fov/*``.

    Files in those folders ending in one of :data:`SEG_IMAGE_EXTENSIONS` (any case) are read; others are ignored. A
    mask (or field-of-view mask) belongs to the image with the same file stem, or with its stem less one trailing
    ``_mask`` or ``_manual1`` (``a.png`` <- ``a.png``, ``a_mask.png`` or ``a_manual1.gif``). When ``fov/`` exists every
    image needs one. Images come in the order of their file names; the set has no split.

    Args:
        folder: the data folder.
        image_size: 0 keeps the files' own size (then all images must share it); N > 0 resizes every image to N x N
            (bilinear) and its masks with nearest neighbour.
        channels: see :func:`~medassist.data.image_file.load_image`; None keeps the files' own, and a set mixing
            grayscale and colour becomes RGB.

    Returns:
        The set, with ``source = {"kind": "folder", "path": ..., ...}``.

    Raises:
        DataError: a missing or empty folder, files without a partner, a bad file, or sizes that differ.
    """
    _check_image_size(image_size, channels)
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"folder not found: {folder}")
    image_dir, mask_dir, fov_dir = folder / "images", folder / "masks", folder / "fov"
    exts = ", ".join(SEG_IMAGE_EXTENSIONS)
    if not image_dir.is_dir() or not _files(image_dir):
        raise DataError(
            f"{image_dir} is missing or holds no images ({exts}); a segmentation folder needs images/ with the "
            "images and masks/ with one mask per image."
        )
    if not mask_dir.is_dir():
        raise DataError(f"{folder} has no masks/ folder; put one mask per image there (same name as the image).")
    images = _by_stem(_files(image_dir), None, image_dir)
    stems = set(images)
    masks = _by_stem(_files(mask_dir), stems, mask_dir)
    fovs = _by_stem(_files(fov_dir), stems, fov_dir) if fov_dir.is_dir() else None

    unpaired = [
        (f"images without a mask in {mask_dir}", [images[s].name for s in sorted(stems - set(masks))]),
        (f"masks without an image in {image_dir}", [masks[s].name for s in sorted(set(masks) - stems)]),
    ]
    if fovs is not None:
        unpaired += [
            (f"images without a field-of-view mask in {fov_dir}", [images[s].name for s in sorted(stems - set(fovs))]),
            (f"field-of-view masks without an image in {image_dir}", [fovs[s].name for s in sorted(set(fovs) - stems)]),
        ]
    problems = [f"{len(names)} {what}: {_listed(names)}" for what, names in unpaired if names]
    if problems:
        raise DataError(
            f"{folder}: files do not pair up; " + "; ".join(problems) + ". A mask matches the image of the same "
            f"name, optionally with a suffix {' or '.join(MASK_SUFFIXES)}; rename or remove these files."
        )
    items = [_Item(images[s], masks[s], None if fovs is None else fovs[s]) for s in sorted(stems)]
    return _build(
        items,
        image_size=image_size,
        channels=channels,
        source={"kind": "folder", "path": str(folder)},
        mask_threshold=mask_threshold,
    )


# ---------------------------------------------------------------------------------------------------------------------
# CSV


def _cell_text(value: object) -> str:
    """A cell as stripped text; "" for empty cells (pandas reads them as NaN)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value).strip()


def read_mask_csv(
    path: str | os.PathLike[str],
    *,
    path_column: str = "path",
    mask_column: str = "mask",
    split_column: str = "split",
    fov_column: str = "",
    image_size: int = 0,
    channels: int | None = None,
    mask_threshold: float | None = None,
) -> SegSet:
    """Read the images and masks listed in a CSV file, one row per image.

    Paths are relative to the CSV's folder unless absolute. The split column is optional: when present every value
    must be train, val or test (any case); when absent the set has no split. ``fov_column`` names an optional column
    of field-of-view masks ("" for none; an empty cell means the whole image counts). Every other column goes to
    ``meta``. Row numbers in messages count the header as row 1, as a spreadsheet shows them.

    Args:
        path: the CSV file.
        path_column: column with image paths.
        mask_column: column with mask paths.
        split_column: column with train/val/test, used when present.
        fov_column: column with field-of-view mask paths; "" for none.
        image_size: 0 keeps the files' own size (then all images must share it); N > 0 resizes to N x N.
        channels: see :func:`~medassist.data.image_file.load_image`.

    Returns:
        The set, with ``source = {"kind": "csv", "path": ..., ...}``.

    Raises:
        DataError: a missing or malformed CSV, a missing column, an empty cell, a bad split value, a bad file, or
            sizes that differ.
    """
    _check_image_size(image_size, channels)
    csv_path = Path(path)
    if not csv_path.is_file():
        raise DataError(f"file not found: {csv_path}")
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark that would rename the first column.
        df = pd.read_csv(csv_path, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{csv_path} is not a readable CSV file ({e}); save it as comma-separated UTF-8 text.") from e
    present = ", ".join(repr(str(c)) for c in df.columns)
    roles = [("path", path_column), ("mask", mask_column)] + ([("fov", fov_column)] if fov_column else [])
    for role, column in roles:
        if column not in df.columns:
            raise DataError(
                f"{csv_path} has no {role} column '{column}'; columns present: {present}. "
                f"Rename the column or pass {role}_column=..."
            )
    if len(df) == 0:
        raise DataError(f"{csv_path} has no rows; add one row per image.")

    base = csv_path.parent

    def file_at(row: int, column: str, required: bool) -> Path | None:
        text = _cell_text(df[column].iloc[row])
        if not text:
            if required:
                raise DataError(f"{csv_path} row {row + 2} has an empty '{column}' cell; give the file.")
            return None
        p = Path(text)
        return p if p.is_absolute() else base / p

    has_split = bool(split_column) and split_column in df.columns
    items = []
    for i in range(len(df)):
        split = None
        if has_split:
            split = _cell_text(df[split_column].iloc[i]).lower()
            if split not in SPLITS:
                raise DataError(
                    f"{csv_path} row {i + 2}: split '{df[split_column].iloc[i]}' in column '{split_column}' is not "
                    f"one of {', '.join(SPLITS)}; fix the cell."
                )
        image, mask = file_at(i, path_column, True), file_at(i, mask_column, True)
        fov = file_at(i, fov_column, False) if fov_column else None
        items.append(_Item(image, mask, fov, split=split))  # type: ignore[arg-type]
    used = [path_column, mask_column] + ([split_column] if has_split else []) + ([fov_column] if fov_column else [])
    meta = df.drop(columns=used).reset_index(drop=True)
    source = {"kind": "csv", "path": str(csv_path)}
    return _build(
        items, image_size=image_size, channels=channels, source=source, meta=meta, mask_threshold=mask_threshold
    )


# ---------------------------------------------------------------------------------------------------------------------
# DRIVE


def _drive_file(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"DRIVE file {path} is missing; {_DRIVE_HINT}.")
    return path


def read_drive(root: str | os.PathLike[str], *, image_size: int = 0, channels: int | None = None) -> SegSet:
    """Read DRIVE (retinal vessel segmentation): 20 training and 20 test fundus photographs.

    ``training/images/NN_training.tif`` are split "train", ``test/images/NN_test.tif`` split "test"; masks from
    ``1st_manual/NN_manual1.gif``, the field of view from ``mask/NN_{training,test}_mask.gif`` and, for the test
    images, a second grader's masks from ``test/2nd_manual/NN_manual2.gif`` (training rows of ``second`` are 255).

    Args:
        root: the ``drive`` folder.
        image_size: 0 keeps the 565 x 584 photographs; N > 0 resizes to N x N.
        channels: see :func:`~medassist.data.image_file.load_image` (the photographs are RGB).

    Returns:
        The set, with ``source = {"kind": "drive", "path": ..., ...}``.

    Raises:
        DataError: a missing folder or file (named, with a pointer to the data README) or an unreadable file.
    """
    _check_image_size(image_size, channels)
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"DRIVE folder {root} is missing; {_DRIVE_HINT}.")
    items: list[_Item] = []
    for part, split, tag in (("training", "train", "training"), ("test", "test", "test")):
        image_dir = root / part / "images"
        if not image_dir.is_dir():
            raise DataError(f"DRIVE folder {image_dir} is missing; {_DRIVE_HINT}.")
        images = sorted(p for p in image_dir.glob(f"*_{tag}.tif") if p.is_file())
        if not images:
            raise DataError(f"DRIVE folder {image_dir} holds no NN_{tag}.tif images; {_DRIVE_HINT}.")
        for image in images:
            number = image.stem[: -len(tag) - 1]
            items.append(
                _Item(
                    image=image,
                    mask=_drive_file(root / part / "1st_manual" / f"{number}_manual1.gif"),
                    fov=_drive_file(root / part / "mask" / f"{number}_{tag}_mask.gif"),
                    second=_drive_file(root / part / "2nd_manual" / f"{number}_manual2.gif")
                    if part == "test"
                    else None,
                    split=split,
                )
            )
    return _build(items, image_size=image_size, channels=channels, source={"kind": "drive", "path": str(root)})


# ---------------------------------------------------------------------------------------------------------------------
# By name


def load_segmentation(
    source: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    image_size: int = 0,
    channels: int | None = None,
    path_column: str = "path",
    mask_column: str = "mask",
    split_column: str = "split",
    fov_column: str = "",
    mask_threshold: float | None = None,
) -> SegSet:
    """Read a segmentation set by name or path.

    Args:
        source: "drive" (read from ``<data dir>/drive``), a folder with images/ and masks/ (see
            :func:`read_mask_folder`), or a .csv file (see :func:`read_mask_csv`).
        data_dir: the data directory for "drive" (default: ``$MEDASSIST_DATA_DIR``, else the user cache).
        image_size: 0 keeps the files' own size; N > 0 resizes to N x N.
        channels: None keeps the files' own, 1 or 3 converts.
        path_column: CSV column with image paths.
        mask_column: CSV column with mask paths.
        split_column: CSV column with train/val/test, used when present.
        fov_column: CSV column with field-of-view masks; "" for none.
        mask_threshold: read each mask as binary ``value >= T`` (lossy masks, e.g. JPEG); None reads class
            indices. The set's ``source`` records how many pixels the threshold decided.

    Returns:
        The set.

    Raises:
        DataError: an unknown source, or any problem of the reader it names.
    """
    text = str(source).strip()
    if text.lower() == "drive":
        return read_drive(resolve_data_dir(data_dir) / "drive", image_size=image_size, channels=channels)
    path = Path(text).expanduser()
    if path.is_dir():
        return read_mask_folder(path, image_size=image_size, channels=channels, mask_threshold=mask_threshold)
    if path.suffix.lower() == ".csv":
        return read_mask_csv(
            path,
            path_column=path_column,
            mask_column=mask_column,
            split_column=split_column,
            fov_column=fov_column,
            image_size=image_size,
            channels=channels,
            mask_threshold=mask_threshold,
        )
    what = "does not exist" if not path.exists() else "is neither a folder nor a .csv file"
    raise DataError(
        f"segmentation data '{source}' {what}; give 'drive' (read from the data directory), a folder with images/ "
        "and masks/ subfolders, or a .csv file with image and mask columns."
    )


# ---------------------------------------------------------------------------------------------------------------------
# Splitting


def _allocate(total: int, sizes: np.ndarray, room: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Split ``total`` over strata in proportion to ``sizes`` (largest remainder, random ties), at most ``room``."""
    quota = total * sizes / sizes.sum()
    out = np.minimum(np.floor(quota).astype(np.int64), room)
    while out.sum() < total:
        open_ = np.flatnonzero(out < room)
        if not len(open_):
            break
        remainder = quota[open_] - out[open_] + rng.random(len(open_)) * 1e-9
        out[open_[np.argmax(remainder)]] += 1
    return out


def split_by_size(masks: np.ndarray, *, val: float, test: float, seed: int) -> np.ndarray:
    """Split images at random into train/val/test, stratified by the share of foreground pixels of their masks.

    The images are ranked by their share of non-zero mask pixels (ties broken at random) and cut into equal strata:
    tertiles, or as many strata as the smallest non-empty split has images when that is fewer than 3. Each stratum
    gives its share of images to each split, so every split gets small and large lesions. A fraction above 0 gives its
    split at least one image; a fraction of 0 leaves it empty.

    Args:
        masks: (N, H, W) class masks (0 = background).
        val: share of images for "val", in [0, 1).
        test: share of images for "test", in [0, 1).
        seed: seed of the split.

    Returns:
        Array of N strings "train", "val" or "test".

    Raises:
        DataError: fractions outside [0, 1) or summing to 1 or more, or too few images for them.
    """
    for name, value in (("val", val), ("test", test)):
        if isinstance(value, bool) or not isinstance(value, int | float | np.floating) or not 0 <= value < 1:
            raise DataError(f"the {name} fraction must be a number in [0, 1), got {value!r}.")
    if val + test >= 1:
        raise DataError(
            f"val ({val}) and test ({test}) fractions sum to {val + test:g}; they must leave images to train."
        )
    masks = np.asarray(masks)
    if masks.ndim < 2 or len(masks) == 0:
        raise DataError(f"split_by_size needs masks of shape (N, H, W) with N >= 1, got shape {masks.shape}.")
    n = len(masks)
    n_val = 0 if val == 0 else max(1, round(n * val))
    n_test = 0 if test == 0 else max(1, round(n * test))
    if n - n_val - n_test < 1:
        raise DataError(
            f"{n} images are too few for val {val:g} and test {test:g}: no image would be left to train; lower the "
            "fractions or add images."
        )
    rng = np.random.default_rng(seed)
    share = (masks.reshape(n, -1) != 0).mean(axis=1)
    strata = max(1, min(3, min(c for c in (n_val, n_test, n - n_val - n_test) if c > 0)))
    order = np.lexsort((rng.random(n), share))  # By foreground share, random among equals.
    stratum = np.empty(n, dtype=np.int64)
    stratum[order] = np.arange(n) * strata // n
    sizes = np.bincount(stratum, minlength=strata)
    val_per = _allocate(n_val, sizes, sizes, rng)
    test_per = _allocate(n_test, sizes, sizes - val_per, rng)
    out = np.full(n, "train", dtype=object)
    for s in range(strata):
        members = rng.permutation(np.flatnonzero(stratum == s))
        out[members[: val_per[s]]] = "val"
        out[members[val_per[s] : val_per[s] + test_per[s]]] = "test"
    return out
