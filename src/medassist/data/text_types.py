"""The in-memory form every text reader returns, and the checks every text study relies on."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from medassist.errors import DataError

SPLITS = ("train", "val", "test")
TASKS = ("multi-label", "multi-class")
# Metadata columns that identify a row better than its position, in order of preference.
_ID_COLUMNS = ("report_id", "id")


@dataclass
class TextSplit:
    """One split of a text data set.

    Attributes:
        texts: one document (e.g. a radiology report) per sample.
        labels: int64 array of shape (N, K) of 0/1 (multi-label), or (N,) with class indices (multi-class).
        metadata: optional per-sample table (N rows), e.g. report_id, patient_id, sex, age, method_label.
    """

    texts: list[str]
    labels: np.ndarray
    metadata: pd.DataFrame | None = None

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class TextData:
    """A text classification data set with named splits.

    Attributes:
        name: a short name used in run folders and reports.
        label_names: one name per label column (multi-label) or class index (multi-class).
        splits: "train", "val" and "test" (each a :class:`TextSplit`).
        task: "multi-label" or "multi-class" (binary included).
        info: provenance and counts (source, licence, dropped rows, label counts, ...).
    """

    name: str
    label_names: list[str]
    splits: dict[str, TextSplit]
    task: str = "multi-label"
    info: dict = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


def _row_name(split: TextSplit, index: int) -> str:
    """'row 12' or 'row 12 (report_id CXR13)' when the metadata holds an id."""
    if split.metadata is not None:
        for column in _ID_COLUMNS:
            if column in split.metadata.columns:
                return f"row {index} ({column} {split.metadata[column].iloc[index]})"
    return f"row {index}"


def validate_text_data(data: TextData, *, splits: tuple[str, ...] = SPLITS) -> TextData:
    """Check that ``data`` can be trained and evaluated on; raise :class:`DataError` naming the problem."""
    if data.task not in TASKS:
        raise DataError(f"{data.name}: task is {data.task!r}; use one of {', '.join(TASKS)}.")
    k = data.num_labels
    if k == 0:
        raise DataError(f"{data.name}: there are no label names; a classifier needs at least one label.")
    for name in splits:
        if name not in data.splits:
            raise DataError(f"{data.name}: the '{name}' split is missing; a study needs {', '.join(splits)}.")
        split = data.splits[name]
        n = len(split)
        if n == 0:
            raise DataError(f"{data.name}: the '{name}' split has no texts; give it at least a few examples.")
        labels = np.asarray(split.labels)
        if labels.shape[0] != n:
            raise DataError(f"{data.name}: '{name}' has {n} texts but {labels.shape[0]} label rows; they must match.")
        if split.metadata is not None and len(split.metadata) != n:
            raise DataError(
                f"{data.name}: '{name}' has {n} texts but {len(split.metadata)} metadata rows; they must match."
            )
        for i, text in enumerate(split.texts):
            if not isinstance(text, str) or not text.strip():
                raise DataError(
                    f"{data.name}: '{name}' {_row_name(split, i)} has an empty text ({text!r}); "
                    "drop that row or fill in its text."
                )
        if not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{data.name}: '{name}' labels have dtype {labels.dtype}; expected whole numbers.")
        if data.task == "multi-label":
            if labels.ndim != 2 or labels.shape[1] != k:
                raise DataError(
                    f"{data.name}: '{name}' labels have shape {labels.shape}; expected ({n}, {k}), "
                    f"one 0/1 column per label {data.label_names}."
                )
            bad = np.argwhere((labels != 0) & (labels != 1))
            if bad.size:
                i, j = (int(v) for v in bad[0])
                raise DataError(
                    f"{data.name}: '{name}' {_row_name(split, i)} has value {int(labels[i, j])} for label "
                    f"'{data.label_names[j]}'; multi-label values must be 0 or 1."
                )
            if name == "train":
                counts = labels.sum(axis=0)
                for j, count in enumerate(counts):
                    if count == 0:
                        raise DataError(
                            f"{data.name}: label '{data.label_names[j]}' has no positive example in the 'train' "
                            "split; add examples of it or remove the label."
                        )
        else:
            if labels.ndim != 1:
                raise DataError(
                    f"{data.name}: '{name}' labels have shape {labels.shape}; multi-class labels must be ({n},)."
                )
            bad = np.flatnonzero((labels < 0) | (labels >= k))
            if bad.size:
                i = int(bad[0])
                raise DataError(
                    f"{data.name}: '{name}' {_row_name(split, i)} has label {int(labels[i])}, outside the {k} "
                    f"known classes {data.label_names}."
                )
            if name == "train" and np.unique(labels).size < 2:
                only = data.label_names[int(labels[0])]
                raise DataError(
                    f"{data.name}: the 'train' split has only one class ('{only}'); a classifier needs at least two."
                )
    return data
