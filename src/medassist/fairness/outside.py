"""An outside model's predictions as the audit reads them: any model's scores in a CSV or Parquet file.

One row per case: its label(s), the model's score(s), optionally its split and any metadata (sex, race, age, site,
insurance). :func:`read_outside` checks every column and value, and returns the validation and test frames in the
layout a study's saved predictions have (``y`` or ``y:<label>``, ``p:<class>``, metadata), so that the audit,
the mitigation and the ethics report treat a vendor's model exactly as a medassist one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medassist.errors import DataError, MedAssistError
from medassist.fairness.groups import band_key, is_numeric

SPLITS = ("val", "test")
SPLIT_NAMES = {"val": "val", "valid": "val", "validation": "val", "test": "test", "train": "train"}
CLUSTER = "cluster:patient"  # the column of patient codes (0, 1, ...) in the frames read here
MOST_MISSING = 0.5  # a group column empty for more than this share of rows is refused


@dataclass
class OutsideSpec:
    """Which columns of a predictions file are what."""

    path: str
    label_column: str = "label"
    score_column: str = ""
    score_columns: list[str] = field(default_factory=list)
    label_columns: list[str] = field(default_factory=list)
    split_column: str = ""
    group_columns: list[str] = field(default_factory=list)
    age_column: str = ""
    id_column: str = ""
    val_fraction: float = 0.3
    seed: int = 0


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise MedAssistError(f"predictions file {path} does not exist")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if path.suffix.lower() in (".csv", ".tsv", ".txt"):
            return pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")
    except Exception as err:  # pandas raises many kinds of parse errors; the file is what is wrong
        raise DataError(f"predictions file {path} cannot be read ({type(err).__name__}: {err})") from None
    raise MedAssistError(f"predictions file {path}: give a .csv, .tsv or .parquet file")


def _need(frame: pd.DataFrame, columns: list[str], path: Path, what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: {what} column '{missing[0]}' is not in the file; its columns are: "
            + ", ".join(map(str, frame.columns))
        )


def _scores(frame: pd.DataFrame, columns: list[str], path: Path) -> np.ndarray:
    p = frame[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(p)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataError(
            f"{path}: score column '{columns[col]}' has {int(bad[:, col].sum())} empty or non-numeric value(s), the "
            f"first in row {row + 1}"
        )
    out = (p < 0) | (p > 1)
    if out.any():
        row, col = np.argwhere(out)[0]
        raise DataError(
            f"{path}: scores must be probabilities in [0, 1]; column '{columns[col]}' holds {p[row, col]:g} in row "
            f"{row + 1} ({int(out.sum())} value(s) outside [0, 1]). Scores on another scale need calibrating first"
        )
    return p


def _binary(values: pd.Series, column: str, path: Path) -> np.ndarray:
    y = pd.to_numeric(values, errors="coerce")
    bad = y.isna() | ~y.isin([0, 1])
    if bad.any():
        shown = sorted({str(v) for v in values[bad].head(50)})[:5]
        raise DataError(
            f"{path}: label column '{column}' must hold 0 or 1; {int(bad.sum())} row(s) hold other values "
            f"(e.g. {', '.join(shown)})"
        )
    return y.to_numpy(dtype=np.int64)


def _classes(values: pd.Series, names: list[str], column: str, path: Path) -> np.ndarray:
    """Class indices from labels given as class names (the score columns' names) or as indices 0..K-1."""
    as_text = values.astype(str).str.strip()
    index = {n: i for i, n in enumerate(names)}
    if as_text.isin(names).all():
        return as_text.map(index).to_numpy(dtype=np.int64)
    y = pd.to_numeric(values, errors="coerce")
    if y.notna().all() and y.isin(range(len(names))).all():
        return y.to_numpy(dtype=np.int64)
    unknown = sorted(set(as_text) - set(names))[:5]
    raise DataError(
        f"{path}: label column '{column}' holds values that are not classes ({', '.join(unknown)}); give each "
        f"case's class as one of the score columns' names ({', '.join(names)}) or as its index 0-{len(names) - 1}"
    )


def _splits(
    frame: pd.DataFrame, spec: OutsideSpec, path: Path, strata: np.ndarray, patients: np.ndarray | None
) -> tuple[np.ndarray, str]:
    """Each row's split ('val', 'test' or 'train', which the audit leaves out) and how it was decided. A seeded
    split keeps each patient's rows together."""
    if spec.split_column:
        raw = frame[spec.split_column].astype(str).str.strip().str.lower()
        unknown = sorted(set(raw) - set(SPLIT_NAMES))
        if unknown:
            raise DataError(
                f"{path}: split column '{spec.split_column}' holds {', '.join(unknown[:5])}; use val and test "
                "(train rows are left out)"
            )
        return raw.map(SPLIT_NAMES).to_numpy(dtype=object), f"as given by the column '{spec.split_column}'"
    if not 0 < spec.val_fraction < 1:
        raise MedAssistError(f"val_fraction must be between 0 and 1, got {spec.val_fraction}")
    rng = np.random.default_rng(spec.seed)
    split = np.full(len(frame), "test", dtype=object)
    if patients is not None:  # whole patients, by the label of their first row
        first = pd.Series(strata).groupby(patients).first()
        for s in np.unique(first.to_numpy()):
            ids = first.index[first.to_numpy() == s].to_numpy()
            chosen = rng.permutation(ids)[: int(round(spec.val_fraction * len(ids)))]
            split[np.isin(patients, chosen)] = "val"
        return split, (
            f"a seeded split by patient (seed {spec.seed}, stratified by label): {spec.val_fraction:.0%} of the "
            "patients for validation (fitting the mitigation), the rest for the audit"
        )
    for s in np.unique(strata):  # stratified by label, so both parts see every class
        rows = np.flatnonzero(strata == s)
        chosen = rng.permutation(rows)[: int(round(spec.val_fraction * len(rows)))]
        split[chosen] = "val"
    how = (
        f"a seeded split (seed {spec.seed}, stratified by label): {spec.val_fraction:.0%} of the rows for "
        "validation (fitting the mitigation), the rest for the audit"
    )
    return split, how


def _check_ages(values: pd.Series, column: str, path: Path) -> None:
    """An age column holds ages in years (cut into bands) or bands such as ``[70-80)`` (kept as they are)."""
    if is_numeric(values):
        return
    text = values.dropna().astype(str).str.strip()
    distinct = sorted(set(text[text != ""]))
    if all(band_key(v) is not None for v in distinct):
        return
    shown = ", ".join(f"'{v}'" for v in [v for v in distinct if band_key(v) is None][:3])
    raise DataError(
        f"{path}: the age column '{column}' holds {len(distinct)} distinct text values such as {shown}, which are "
        f"neither ages in years nor bands such as '[70-80)'; pass it in --group-columns to use them as groups"
    )


def read_outside(spec: OutsideSpec) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The validation and test frames of an outside model's predictions file, and their description.

    The task follows from the columns: ``label_columns`` with as many ``score_columns`` is multi-label;
    ``score_columns`` alone is multi-class (one probability per class, each row summing to 1); ``score_column``
    is binary (the positive class's probability, labels 0/1).

    Raises:
        DataError: a missing column (the columns present are listed), a score outside [0, 1] or rows not summing to
            1, a label that is not 0/1 or a known class, a group column empty for most rows, no test rows, or an
            unknown split name.
    """
    path = Path(spec.path)
    frame = _read(path)
    if frame.empty:
        raise DataError(f"predictions file {path} has no rows")
    groups = list(dict.fromkeys([*spec.group_columns, *([spec.age_column] if spec.age_column else [])]))
    _need(frame, groups, path, "group")
    if spec.split_column:
        _need(frame, [spec.split_column], path, "split")
    if spec.label_columns:
        if len(spec.score_columns) != len(spec.label_columns):
            raise MedAssistError(
                f"multi-label: give one score column per label column ({len(spec.label_columns)} labels, "
                f"{len(spec.score_columns)} score columns)"
            )
        _need(frame, spec.label_columns, path, "label")
        _need(frame, spec.score_columns, path, "score")
        task, names = "multi-label", list(spec.label_columns)
        y = np.stack([_binary(frame[c], c, path) for c in spec.label_columns], axis=1)
        p = _scores(frame, spec.score_columns, path)
        cols = {f"y:{n}": y[:, j] for j, n in enumerate(names)} | {f"p:{n}": p[:, j] for j, n in enumerate(names)}
        strata = y[:, 0]
    elif spec.score_columns:
        _need(frame, [spec.label_column], path, "label")
        _need(frame, spec.score_columns, path, "score")
        task, names = "multi-class", [str(c) for c in spec.score_columns]
        p = _scores(frame, spec.score_columns, path)
        sums = p.sum(axis=1)
        off = np.abs(sums - 1) > 1e-3
        if off.any():
            row = int(np.flatnonzero(off)[0])
            raise DataError(
                f"{path}: the class probabilities of a row must sum to 1; row {row + 1} sums to {sums[row]:.4g} "
                f"({int(off.sum())} row(s) do not). Give one probability per class ({', '.join(names)})"
            )
        y = _classes(frame[spec.label_column], names, spec.label_column, path)
        cols = {"y": y} | {f"p:{n}": p[:, j] for j, n in enumerate(names)}
        strata = y
    elif spec.score_column:
        _need(frame, [spec.label_column, spec.score_column], path, "label or score")
        task, names = "multi-class", [f"not {spec.label_column}", spec.label_column]
        p1 = _scores(frame, [spec.score_column], path)[:, 0]
        y = _binary(frame[spec.label_column], spec.label_column, path)
        cols = {"y": y, f"p:{names[0]}": 1 - p1, f"p:{names[1]}": p1}
        strata = y
    else:
        raise MedAssistError(
            "say which columns hold the model's scores: --score-column (binary), --score-columns (one per class), "
            "or --score-columns with --label-columns (multi-label)"
        )
    meta = pd.DataFrame(index=frame.index)
    for c in groups:
        s = frame[c]
        missing = float((s.isna() | (s.astype(str).str.strip() == "")).mean())
        if missing > MOST_MISSING:
            raise DataError(
                f"{path}: group column '{c}' is empty for {missing:.0%} of the rows; a subgroup audit needs it for "
                "most cases (leave it out, or fill it)"
            )
        if c == spec.age_column:
            _check_ages(s, c, path)
        meta["age" if c == spec.age_column else str(c)] = s.to_numpy()
    clusters: dict[str, Any] = {}
    if spec.id_column:  # kept as codes only: the ids themselves go nowhere
        _need(frame, [spec.id_column], path, "id")
        ids = frame[spec.id_column]
        if ids.isna().any():
            raise DataError(f"{path}: id column '{spec.id_column}' is empty in {int(ids.isna().sum())} row(s)")
        codes, uniques = pd.factorize(ids)
        meta[CLUSTER] = codes
        clusters = {"cluster_column": CLUSTER, "patients": len(uniques)}
    split, how = _splits(frame, spec, path, strata, None if not spec.id_column else meta[CLUSTER].to_numpy())
    out = pd.concat([pd.DataFrame(cols, index=frame.index), meta], axis=1)
    val, test = out[split == "val"].reset_index(drop=True), out[split == "test"].reset_index(drop=True)
    if test.empty:
        raise DataError(f"{path}: no rows are marked test; the audit evaluates the test rows")
    info = {
        "kind": "outside",
        "task": task,
        "label_names": names,
        "model": f"outside model ({path.name})",
        "dataset": path.stem,
        "splits": list(SPLITS),
        "metadata_columns": [c for c in meta.columns if c != CLUSTER],
        "split_rule": how,
        "rows": {"total": len(frame), "val": len(val), "test": len(test), "left_out": int((split == "train").sum())},
        "source_file": path.name,
        **clusters,
    }
    return val, test, info
