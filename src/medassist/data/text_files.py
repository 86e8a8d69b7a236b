"""Read the user's own labelled texts (e.g. radiology reports) from a CSV or JSON Lines file.

One row (or JSON object) per text. Either one label column (multi-class) or several 0/1 columns (multi-label); an
optional ``split`` column with train/val/test, else a seeded random split. Every other column is kept as metadata.
Errors name the file, the column and the row (counted like a spreadsheet: the header is row 1) and say what to do.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from medassist.data.text_types import SPLITS, TextData, TextSplit, validate_text_data
from medassist.errors import DataError

SUFFIXES = (".csv", ".jsonl")
DEFAULT_SPLIT_COLUMN = "split"
DEFAULT_LABEL_COLUMN = "label"
_SOURCE_ROW = "source_row"
_SHOW = 5  # at most this many offending rows are named in one message


def read_text_file(
    path: str | os.PathLike[str],
    *,
    text_column: str = "text",
    label_column: str | None = None,
    label_columns: list[str] | None = None,
    split_column: str | None = DEFAULT_SPLIT_COLUMN,
    id_column: str | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    name: str | None = None,
) -> TextData:
    """Read labelled texts from a ``.csv`` or ``.jsonl`` file.

    Args:
        path: the file; UTF-8 (a byte-order mark is fine).
        text_column: the column holding the text.
        label_column: one label per row (multi-class); class names are the sorted labels seen in training.
        label_columns: several 0/1 columns, one per label (multi-label). Give this or ``label_column``; with neither,
            a column named "label" is used as ``label_column``.
        split_column: a column of train/val/test. The default "split" is optional (absent: random split); any other
            name must exist. None always splits at random.
        id_column: a column identifying each row, named in error messages and kept in the metadata.
        val_fraction: fraction of rows for validation when splitting at random.
        test_fraction: fraction of rows for testing when splitting at random.
        seed: seed of the random split (stratified by class for multi-class labels where possible).
        name: data set name; default: the file name without its suffix.

    Returns:
        TextData whose metadata holds every other column plus ``source_row`` (the row or line in the file).

    Raises:
        DataError: the file is missing, not UTF-8, malformed, lacks a column, or has an empty text, a bad label value,
            an unknown split, an empty split or a label in val/test that training never sees.
    """
    path = Path(path)
    frame, rows, unit = _open_table(path, label_column, label_columns)
    label_column, label_cols, use_split = _columns(
        path, frame, text_column, label_column, label_columns, split_column, id_column
    )
    at = _Rows(unit, rows, frame[id_column].tolist() if id_column is not None else None, id_column)
    texts = _texts(path, frame, text_column, at)
    raw_labels = _class_cells(path, frame, label_column, at) if label_column is not None else None
    if use_split:
        assignment = _split_from_column(frame[split_column], path=path, column=str(split_column), where=at.one)
    else:
        assignment = _random_assignment(len(frame), raw_labels, val_fraction, test_fraction, seed, path=path)
    if raw_labels is not None:
        label_names, labels = _encode_classes(path, raw_labels, assignment, use_split)
    else:
        label_names, labels = _label_matrix(path, frame, label_cols, assignment, at)
    task = "multi-class" if raw_labels is not None else "multi-label"
    metadata = _metadata(frame, exclude={text_column, *label_cols, *([split_column] if use_split else [])})
    if _SOURCE_ROW not in metadata.columns:
        metadata[_SOURCE_ROW] = rows
    splits = {}
    for split in SPLITS:
        idx = np.flatnonzero(assignment == split)
        splits[split] = TextSplit(
            texts=[texts[i] for i in idx], labels=labels[idx], metadata=metadata.iloc[idx].reset_index(drop=True)
        )
    info = {
        "source": str(path),
        "format": path.suffix.lower().lstrip("."),
        "n_rows": len(frame),
        "split": f"column '{split_column}'" if use_split else "random",
        "split_sizes": {s: len(sp) for s, sp in splits.items()},
        "label_counts": _label_counts(splits, label_names, task),
        "seed": seed if not use_split else None,
        "val_fraction": val_fraction if not use_split else None,
        "test_fraction": test_fraction if not use_split else None,
    }
    data = TextData(name=name or path.stem, label_names=label_names, splits=splits, task=task, info=info)
    return validate_text_data(data)


def _open_table(
    path: Path, label_column: str | None, label_columns: list[str] | None
) -> tuple[pd.DataFrame, list[int], str]:
    """The file's rows, their row (CSV) or line (JSONL) numbers, and which of the two a number is."""
    if path.suffix.lower() not in SUFFIXES:
        raise DataError(
            f"{path}: files ending in '{path.suffix or '(no suffix)'}' are not supported; save the texts as "
            f"{' or '.join(SUFFIXES)}."
        )
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    if label_column is not None and label_columns is not None:
        raise DataError("give either label_column (multi-class) or label_columns (multi-label), not both.")
    frame, rows, unit = _read_csv(path) if path.suffix.lower() == ".csv" else _read_jsonl(path)
    if frame.empty:
        raise DataError(f"{path} has no data rows; add at least a few labelled texts.")
    return frame, rows, unit


def _columns(
    path: Path,
    frame: pd.DataFrame,
    text_column: str,
    label_column: str | None,
    label_columns: list[str] | None,
    split_column: str | None,
    id_column: str | None,
) -> tuple[str | None, list[str], bool]:
    """The label column (multi-class) or None, every label column, and whether a split column is used; refuses a
    column that is not there, naming the columns that are."""
    columns = [str(c) for c in frame.columns]
    if label_column is None and label_columns is None:
        if DEFAULT_LABEL_COLUMN not in columns:
            raise DataError(
                f"{path}: no label column given and no column named '{DEFAULT_LABEL_COLUMN}'; pass label_column "
                f"(one label per row) or label_columns (0/1 columns). Columns present: {columns}."
            )
        label_column = DEFAULT_LABEL_COLUMN
    if label_columns is not None and not label_columns:
        raise DataError("label_columns is empty; list the 0/1 columns, one per label.")
    label_cols = [label_column] if label_column is not None else list(label_columns or [])
    use_split = split_column is not None and (split_column in columns or split_column != DEFAULT_SPLIT_COLUMN)
    required = [text_column, *label_cols]
    required += [split_column] if use_split else []
    required += [id_column] if id_column is not None else []
    missing = [c for c in dict.fromkeys(required) if c not in columns]
    if missing:
        raise DataError(f"{path}: column(s) {missing} not found. Columns present: {columns}.")
    return label_column, label_cols, use_split


class _Rows:
    """Names rows in error messages: "row 7 (report_id 'a12')", and the first few of many."""

    def __init__(self, unit: str, rows: list[int], ids: list[Any] | None, id_column: str | None) -> None:
        self.unit, self.rows, self.ids, self.id_column = unit, rows, ids, id_column

    def one(self, i: int) -> str:
        return f"{self.unit} {self.rows[i]}" + (f" ({self.id_column} {self.ids[i]!r})" if self.ids is not None else "")

    def many(self, idx: list[int]) -> str:
        shown = ", ".join(self.one(i) for i in idx[:_SHOW])
        return shown + (f" and {len(idx) - _SHOW} more" if len(idx) > _SHOW else "")


def _texts(path: Path, frame: pd.DataFrame, text_column: str, at: _Rows) -> list[str]:
    texts = [_cell_text(v) for v in frame[text_column]]
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise DataError(
            f"{path}: {at.many(empty)} {'has an' if len(empty) == 1 else 'have'} empty '{text_column}' "
            "cell; fill in the text or delete the row."
        )
    return texts


def _class_cells(path: Path, frame: pd.DataFrame, label_column: str, at: _Rows) -> list[str]:
    """Each row's class name (multi-class); refuses an empty cell."""
    raw = [_cell_text(v).strip() for v in frame[label_column]]
    blank = [i for i, v in enumerate(raw) if not v]
    if blank:
        raise DataError(
            f"{path}: {at.many(blank)} {'has an' if len(blank) == 1 else 'have'} empty '{label_column}' "
            "cell; give every row a label."
        )
    return raw


def _encode_classes(
    path: Path, raw: list[str], assignment: np.ndarray, use_split: bool
) -> tuple[list[str], np.ndarray]:
    """The class names (those seen in training, sorted) and each row's class index; refuses a class that only
    validation or test has."""
    train_labels = {raw[i] for i in np.flatnonzero(assignment == "train")}
    label_names = sorted(train_labels, key=_class_sort_key)
    for split in ("val", "test"):
        unseen = Counter(raw[i] for i in np.flatnonzero(assignment == split) if raw[i] not in train_labels)
        if unseen:
            label, count = sorted(unseen.items())[0]
            if use_split:
                hint = "move some of those rows to 'train' or remove them."
            else:
                hint = (
                    f"it has {raw.count(label)} row(s) in the file and none reached 'train' in the random split; add "
                    "rows of it, remove them, or give a split column."
                )
            raise DataError(
                f"{path}: label '{label}' appears in the '{split}' split ({count} row(s)) but never in 'train'; {hint}"
            )
    index = {label: k for k, label in enumerate(label_names)}
    return label_names, np.array([index[v] for v in raw], dtype=np.int64)


def _label_matrix(
    path: Path, frame: pd.DataFrame, label_cols: list[str], assignment: np.ndarray, at: _Rows
) -> tuple[list[str], np.ndarray]:
    """The label names and the (N, K) 0/1 matrix (multi-label); refuses another value, or a label training never
    has."""
    matrix = np.zeros((len(frame), len(label_cols)), dtype=np.int64)
    for j, column in enumerate(label_cols):
        for i, value in enumerate(frame[column]):
            v = _to01(value)
            if v is None:
                raise DataError(
                    f"{path}: column '{column}' has {value!r} at {at.one(i)}; multi-label columns hold 0 or 1 only."
                )
            matrix[i, j] = v
    label_names = [str(c) for c in label_cols]
    in_train = matrix[assignment == "train"].sum(axis=0)
    absent = [name for name, n in zip(label_names, in_train, strict=True) if n == 0]
    if absent:
        raise DataError(
            f"{path}: label column(s) {absent} have no 1 among the 'train' rows; a classifier needs positive "
            "examples to learn from, so add some or drop the column from label_columns."
        )
    return label_names, matrix


def _label_counts(splits: dict[str, TextSplit], label_names: list[str], task: str) -> dict[str, dict[str, int]]:
    if task == "multi-class":
        return {s: {n: int((sp.labels == k).sum()) for k, n in enumerate(label_names)} for s, sp in splits.items()}
    return {s: {n: int(c) for n, c in zip(label_names, sp.labels.sum(axis=0), strict=True)} for s, sp in splits.items()}


# ----------------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------------


def _not_utf8(path: Path, raw: bytes, error: UnicodeDecodeError) -> DataError:
    line = raw[: error.start].count(b"\n") + 1
    return DataError(
        f"{path} is not UTF-8 text (byte 0x{raw[error.start]:02x} on line {line}); re-save it as UTF-8 "
        "(e.g. 'CSV UTF-8' in Excel, or 'Save with encoding: UTF-8' in a text editor)."
    )


def _read_csv(path: Path) -> tuple[pd.DataFrame, np.ndarray, str]:
    """All cells as strings ('' when empty), and the spreadsheet row of each record (header = row 1)."""
    raw = path.read_bytes()
    try:
        # Decode first so a bad byte is reported by line; utf-8-sig drops the BOM Excel writes.
        raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise _not_utf8(path, raw, e) from e
    try:
        # No NA parsing, so a report reading "NA" or "None" stays text and an empty cell stays ''.
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError as e:
        raise DataError(f"{path} is empty; it needs a header row and at least a few labelled texts.") from e
    except pd.errors.ParserError as e:
        raise DataError(
            f"{path} is not a well-formed CSV ({e}); check quoting and the number of commas per row."
        ) from e
    return frame, np.arange(len(frame)) + 2, "row"


def _read_jsonl(path: Path) -> tuple[pd.DataFrame, np.ndarray, str]:
    """One record per non-blank line, and the line number of each record."""
    raw = path.read_bytes()
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise _not_utf8(path, raw, e) from e
    records, lines = [], []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {number} is not valid JSON ({e.msg}); fix or delete that line.") from e
        if not isinstance(record, dict):
            raise DataError(
                f"{path}: line {number} is a JSON {type(record).__name__}, not an object; write one "
                '{"text": ..., "label": ...} object per line.'
            )
        records.append(record)
        lines.append(number)
    return pd.DataFrame.from_records(records), np.array(lines, dtype=np.int64), "line"


def _cell_text(value: object) -> str:
    """A cell as text; missing values (None, NaN) become ''."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value if isinstance(value, str) else str(value)


def _to01(value: object) -> int | None:
    """0 or 1 from 0/1, True/False, 0.0/1.0 or their text; None for anything else."""
    if isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, int | float | np.integer | np.floating):
        return int(value) if value in (0, 1) else None
    if isinstance(value, str) and value.strip() in ("0", "1", "0.0", "1.0"):
        return int(float(value))
    return None


def _class_sort_key(label: str) -> tuple[int, float, str]:
    """Numeric labels in numeric order ('2' before '10'), then text labels alphabetically."""
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def _metadata(frame: pd.DataFrame, *, exclude: set[str | None]) -> pd.DataFrame:
    """The remaining columns; empty cells become missing and all-numeric columns become numbers."""
    kept = frame[[c for c in frame.columns if c not in exclude]].copy()
    for column in kept.columns:
        values = kept[column]
        if pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values):
            values = values.replace("", None)
        try:
            kept[column] = pd.to_numeric(values)
        except (ValueError, TypeError):
            kept[column] = values
    return kept.reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------------------
# Splitting
# ----------------------------------------------------------------------------------------------------------------


def _split_from_column(values: pd.Series, *, path: Path, column: str, where: Callable[[int], str]) -> np.ndarray:
    """The split column as an array of 'train'/'val'/'test'; unknown values and empty splits are errors."""
    assignment = np.array([_cell_text(v).strip().lower() for v in values], dtype=object)
    bad = [i for i, v in enumerate(assignment) if v not in SPLITS]
    if bad:
        raise DataError(
            f"{path}: column '{column}' has {values.iloc[bad[0]]!r} at {where(bad[0])}; use train, val or test."
        )
    for split in SPLITS:
        if not (assignment == split).any():
            raise DataError(
                f"{path}: no row has '{split}' in column '{column}'; every split needs rows (or drop the column "
                "for a random split)."
            )
    return assignment


def _random_assignment(
    n: int, labels: list[str] | None, val_fraction: float, test_fraction: float, seed: int, *, path: Path
) -> np.ndarray:
    """A seeded train/val/test assignment, stratified by ``labels`` where every class is large enough."""
    for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 < value < 1:
            raise DataError(f"{key} must be between 0 and 1 (exclusive), got {value!r}.")
    if val_fraction + test_fraction >= 1:
        raise DataError(
            f"val_fraction + test_fraction must stay below 1 to leave rows for training; got {val_fraction}"
            f" + {test_fraction}."
        )
    n_test = max(1, round(test_fraction * n))
    n_val = max(1, round(val_fraction * n))
    if n - n_test - n_val < 1:
        raise DataError(f"{path} has {n} rows, too few for a train/val/test split; add rows or give a split column.")
    index = np.arange(n)
    y = np.asarray(labels, dtype=object) if labels is not None else None
    rest, test = _split_off(index, n_test, y, seed)
    train, val = _split_off(rest, n_val, y[rest] if y is not None else None, seed)
    assignment = np.empty(n, dtype=object)
    assignment[train], assignment[val], assignment[test] = "train", "val", "test"
    return assignment


def _split_off(index: np.ndarray, size: int, y: np.ndarray | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``size`` items off ``index``; stratified by ``y`` when sklearn can (each class needs >= 2 items)."""
    if y is not None:
        try:
            return train_test_split(index, test_size=size, stratify=y, random_state=seed)
        except ValueError:
            pass  # a class too small to stratify: fall back to a plain random split
    return train_test_split(index, test_size=size, random_state=seed)
