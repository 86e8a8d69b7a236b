"""Read the user's own images listed in a CSV file: one row per image with its path, label, optional split and any
metadata (sex, age, site, ...)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from medassist.data.image_file import check_size_channels
from medassist.data.image_set import (
    ImageFiles,
    build_image_data,
    check_nonempty_splits,
    load_many,
    random_split,
)
from medassist.data.types import SPLITS, ImageData
from medassist.errors import DataError

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
    files: ImageFiles | None = None,
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
        channels: see :func:`~medassist.data.image_file.load_image`.
        path_column: column with image paths.
        label_column: column with class labels.
        split_column: optional column with train/val/test; None to always split at random.
        class_names: the classes in index order; by default the sorted unique labels.
        val_fraction: share of all rows for "val" when splitting at random.
        test_fraction: share of all rows for "test" when splitting at random.
        seed: seed of the random split.
        name: data set name; the CSV file name without extension by default.
        progress: show a progress bar while reading.
        files: the decode's cache, workers and bad-file rule (:class:`~medassist.data.image_set.ImageFiles`).

    Returns:
        The data set with per-split metadata.

    Raises:
        DataError: a missing or malformed CSV, column, label, split value or image, mixed channel counts, or
            splits unfit for a study.
    """
    check_size_channels(size, channels)
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
                f"Rename the column or pass {role}_column=... (`medassist image --{role}-column NAME`)."
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
        check_nonempty_splits(name, split_index, f"give it rows in column '{split_column}' of {csv_path}.")
    else:
        split_index = random_split(
            labels, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, source=str(csv_path)
        )
        check_nonempty_splits(name, split_index, "raise val_fraction/test_fraction or add rows.")

    where = [f"listed in {csv_path} row {i + 2}" for i in range(len(paths))]
    images, split_index, decode = load_many(
        paths,
        split_index,
        size=size,
        channels=channels,
        progress=progress,
        name=name,
        source=str(csv_path),
        files=files,
        where=where,
    )
    dropped = [label_column, path_column] + ([split_column] if has_split else [])
    # A second column named "path" (when path_column differs) would clash with the resolved paths, which win.
    metadata = df.drop(columns=[*dropped, "path"], errors="ignore")
    metadata.insert(0, "path", [str(p) for p in paths])
    info = {"source": str(csv_path), "layout": "csv", "seed": seed, **decode}
    return build_image_data(
        name=name,
        class_names=names,
        images=images,
        labels=labels,
        metadata=metadata,
        split_index=split_index,
        info=info,
    )
