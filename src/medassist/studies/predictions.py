"""The selected model's saved predictions: what an audit reads instead of retraining.

A study writes, for its selected model, ``predictions/val.parquet`` and ``predictions/test.parquet`` (one row per
case: its labels, the model's probabilities and the split's metadata columns such as sex, age or site) and
``predictions/info.json`` (task, label names, model, which columns are what). Free text never goes in: report
texts, indications and file paths are left out, and so are identifiers of patients.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medassist.errors import MedAssistError
from medassist.run import Run
from medassist.utils.io import atomic_path

PRED_DIR = "predictions"
INFO = f"{PRED_DIR}/info.json"
# Columns never saved: free text (an indication can hold a patient's history), file paths and patient identifiers.
_NEVER = {"indication", "text", "report", "path", "file", "patient_id", "patientid", "name", "patient_name"}
# An identifier that names a case, not a patient, is kept so that a row can be traced in its data set.
_ROW_IDS = {"report_id", "id", "source_row"}
_MAX_LEVELS = 200  # a string column with more distinct values than this is free text or an identifier, not a group


def safe_metadata(meta: pd.DataFrame | None) -> pd.DataFrame:
    """The metadata columns that may be saved beside predictions: numbers, and categories with few values."""
    if meta is None:
        return pd.DataFrame()
    keep = {}
    for col in meta.columns:
        name = str(col)
        if name.lower() in _NEVER:
            continue
        s = meta[col]
        if name.lower() in _ROW_IDS or pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            keep[name] = s.to_numpy()
        elif s.astype(object).where(s.notna(), None).dropna().nunique() <= _MAX_LEVELS:
            keep[name] = s.astype(object).where(s.notna(), None).map(lambda v: None if v is None else str(v)).to_numpy()
    return pd.DataFrame(keep)


def write_predictions(
    run: Run,
    *,
    task: str,
    label_names: list[str],
    splits: dict[str, tuple[np.ndarray, np.ndarray, pd.DataFrame | None]],
    model: str,
    kind: str,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write each split's labels, probabilities and safe metadata to ``predictions/<split>.parquet``.

    Args:
        task: "multi-label" (labels (N, K) of 0/1) or "multi-class" (labels (N,) of class indices).
        label_names: one name per probability column.
        splits: split name -> (labels, probabilities (N, K), metadata or None).
        model: the selected model's name (a unit of the run, or "tfidf").
        kind: "text" or "image".
        extra: more facts for ``info.json`` (e.g. the unit's training settings).
    """
    meta_cols: list[str] = []
    for split, (y, p, meta) in splits.items():
        p = np.asarray(p, dtype=np.float64)
        y = np.asarray(y)
        if p.ndim != 2 or p.shape[1] != len(label_names) or len(p) != len(y):
            shape = (len(y), len(label_names))
            raise MedAssistError(f"predictions of '{split}' have shape {p.shape}; expected {shape}")
        cols: dict[str, np.ndarray] = {}
        if task == "multi-label":
            cols.update({f"y:{n}": y[:, j].astype(np.int64) for j, n in enumerate(label_names)})
        else:
            cols["y"] = y.reshape(-1).astype(np.int64)
        cols.update({f"p:{n}": p[:, j] for j, n in enumerate(label_names)})
        frame = pd.DataFrame(cols)
        safe = safe_metadata(meta)
        if len(safe.columns) and len(safe) != len(frame):
            raise MedAssistError(f"'{split}' has {len(frame)} predictions but {len(safe)} metadata rows")
        frame = pd.concat([frame, safe.reset_index(drop=True)], axis=1)
        meta_cols = [str(c) for c in safe.columns]
        with atomic_path(run.path(f"{PRED_DIR}/{split}.parquet")) as tmp:
            frame.to_parquet(tmp, index=False)
    run.write_json(
        INFO,
        {
            "kind": kind,
            "task": task,
            "label_names": list(label_names),
            "model": model,
            "splits": list(splits),
            "metadata_columns": meta_cols,
            **(extra or {}),
        },
    )


def read_predictions(run_dir: str | Path, split: str) -> pd.DataFrame:
    """The saved predictions of ``split`` in the run folder ``run_dir``."""
    path = Path(run_dir) / PRED_DIR / f"{split}.parquet"
    if not path.is_file():
        raise MedAssistError(
            f"{run_dir} has no {PRED_DIR}/{split}.parquet: the run predates saved predictions; run its study again"
        )
    return pd.read_parquet(path)
