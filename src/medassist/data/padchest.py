"""PadChest: about 108K stemmed Spanish chest X-ray reports with multi-label findings, read offline from the label
table shipped inside the torchxrayvision package; the test split holds physician-labelled reports only and no
patient is in two splits."""

from __future__ import annotations

import ast
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from medassist.data.report_common import (
    MAX_AGE,
    check_fractions,
    label_counts,
    require_train_positives,
    resolve_file,
    top_labels,
)
from medassist.data.text_types import TextData, TextSplit, validate_text_data
from medassist.errors import DataError

PADCHEST_FILE = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"
# PadChest labels about the study rather than the patient: "exclude" and "suboptimal study" are image-quality flags,
# "unchanged" means "no change since the previous study" and needs that study to make sense.
PADCHEST_EXCLUDED = ("exclude", "suboptimal study", "unchanged")
PADCHEST_COLUMNS = (
    "ReportID",
    "PatientID",
    "Report",
    "Labels",
    "MethodLabel",
    "PatientSex_DICOM",
    "PatientBirth",
    "StudyDate_DICOM",
)
PHYSICIAN = "Physician"


def _parse_label_list(value: object, *, report_id: object, source: Path, memo: dict[str, list[str]]) -> list[str]:
    """Parse a Labels cell: "['pleural effusion', ' cardiomegaly', '']" -> ['pleural effusion', 'cardiomegaly'].

    A missing cell gives []; the result is cached per distinct cell text, since most cells repeat.
    """
    if not isinstance(value, str):
        return []
    if value not in memo:
        try:
            # literal_eval only builds literals, so a hostile cell cannot run code.
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
            raise DataError(
                f"{source}: ReportID {report_id} has Labels {value[:80]!r}, which is not a list like "
                "\"['normal']\"; fix or remove that row."
            ) from e
        if isinstance(parsed, str):
            parsed = [parsed]
        if not isinstance(parsed, list | tuple):
            raise DataError(f"{source}: ReportID {report_id} has Labels {value[:80]!r}; expected a list of strings.")
        memo[value] = list(dict.fromkeys(str(x).strip() for x in parsed if str(x).strip()))
    return memo[value]


def _patient_groups(rows: pd.DataFrame) -> pd.Series:
    """PatientID -> group id, merging PatientIDs that share a ReportID.

    About 1,200 PadChest reports appear under two PatientIDs (the same study imported twice, once physician- and once
    machine-labelled), so two IDs can be one person; splitting by the merged group keeps them on one side.
    """
    pairs = rows[["ReportID", "PatientID"]].drop_duplicates()
    parent = {p: p for p in pairs["PatientID"].unique()}

    def find(p: str) -> str:
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    shared = pairs[pairs["ReportID"].duplicated(keep=False)]
    for _, patients in shared.groupby("ReportID")["PatientID"]:
        first, *rest = patients.tolist()
        for other in rest:
            a, b = find(first), find(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return pd.Series({p: find(p) for p in parent}, name="group")


def load_padchest(
    *,
    path: str | os.PathLike[str] | None = None,
    top_k: int = 20,
    val_fraction: float = 0.1,
    test_fraction: float = 0.5,
    seed: int = 0,
    max_reports: int = 0,
) -> TextData:
    """PadChest chest X-ray reports (stemmed Spanish) as a multi-label findings data set.

    One report per ReportID (its first image row); reports without any letter are dropped. The test split holds
    physician-labelled reports only: patients with at least one are drawn at random until the test split holds about
    ``test_fraction`` of all physician-labelled reports, and those patients' machine-labelled (RNN_model) reports are
    dropped. The other patients are split into train and val (a ``val_fraction`` of the patients), so no patient is in
    two splits. PatientIDs that share a ReportID count as one patient.

    Args:
        path: the PadChest labels ``.csv.gz``; default: the copy inside the torchxrayvision package.
        top_k: number of labels, the most frequent ones except the study-quality labels in ``PADCHEST_EXCLUDED``.
        val_fraction: fraction of the non-test patients that go to the validation split.
        test_fraction: fraction of the physician-labelled reports that go to the test split.
        seed: seed of the patient split and of the subsample.
        max_reports: if > 0, keep a seeded random subsample of this many train + val reports (test is kept whole).

    Returns:
        TextData "padchest" with metadata report_id, patient_id, sex (PatientSex_DICOM), age (study year minus birth
        year, NaN if unknown) and method_label ("Physician" or "RNN_model").

    Raises:
        DataError: the file is missing or lacks columns, a Labels cell is malformed, the settings are invalid, or a
            label has no training positive.
    """
    check_fractions(val_fraction, test_fraction, what="patients")
    if isinstance(max_reports, bool) or not isinstance(max_reports, int) or max_reports < 0:
        raise DataError(f"max_reports must be 0 (all) or a positive whole number, got {max_reports!r}.")
    source = resolve_file(path, PADCHEST_FILE)
    rows = _read_rows(source)
    groups = _patient_groups(rows)
    reports, facts = _one_per_report(rows)
    label_names, labels, counts = _label_matrix(reports, source, top_k)
    group_series = reports["PatientID"].map(groups)
    physician = (reports["MethodLabel"] == PHYSICIAN).to_numpy()
    rng = np.random.default_rng(seed)
    parts, dropped_test_other = _patient_split(group_series, physician, rng, val_fraction, test_fraction)
    subsampled_from = _subsample(parts, rng, max_reports)
    require_train_positives(
        labels[parts["train"]],
        label_names,
        dataset="padchest",
        hint="lower top_k, raise max_reports, or try another seed.",
    )
    metadata = _metadata(reports)
    texts = reports["Report"].tolist()
    splits = {
        name: TextSplit(
            texts=[texts[i] for i in idx], labels=labels[idx], metadata=metadata.iloc[idx].reset_index(drop=True)
        )
        for name, idx in parts.items()
    }
    info = {
        "source": "PadChest (BIMCV, Hospital San Juan de Alicante), label table via torchxrayvision",
        "licence": "PadChest Dataset Research Use Agreement (research use only; no redistribution)",
        "url": "https://bimcv.cipf.es/bimcv-projects/padchest/",
        "path": str(source),
        "language": "Spanish, stemmed",
        **{k: facts[k] for k in ("n_image_rows", "n_reports", "n_patient_ids")},
        "n_patients": int(reports["PatientID"].nunique()),
        "n_patient_groups": int(len(set(group_series.to_numpy()))),
        **{k: facts[k] for k in ("n_reports_multi_patient", "n_reports_mixed_method")},
        "n_physician_reports": int(physician.sum()),
        "n_rnn_reports": int((~physician).sum()),
        "dropped_empty": facts["dropped_empty"],
        "dropped_test_patients_other_reports": dropped_test_other,
        "subsampled_from": subsampled_from,
        "excluded_labels": list(PADCHEST_EXCLUDED),
        "n_without_labels": int((labels.sum(axis=1) == 0).sum()),
        "all_label_counts": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        "label_counts": {name: label_counts(s.labels, label_names) for name, s in splits.items()},
        "split_sizes": {name: len(s) for name, s in splits.items()},
        "split_patients": {name: int(s.metadata["patient_id"].nunique()) for name, s in splits.items()},
        "test_fraction_of": "physician-labelled reports",
        "val_fraction_of": "non-test patients",
        "seed": seed,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "max_reports": max_reports,
    }
    data = TextData(name="padchest", label_names=label_names, splits=splits, task="multi-label", info=info)
    return validate_text_data(data)


def _read_rows(source: Path) -> pd.DataFrame:
    """The label table's image rows that name a report and a patient."""
    try:
        rows = pd.read_csv(
            source,
            usecols=list(PADCHEST_COLUMNS),
            dtype={"PatientID": str, "Report": str, "Labels": str, "MethodLabel": str, "PatientSex_DICOM": str},
        )
    except ValueError as e:
        # pandas reports missing usecols as a ValueError; name what we need.
        raise DataError(
            f"{source} cannot be read as the PadChest label table ({e}); it needs the columns "
            f"{', '.join(PADCHEST_COLUMNS)}."
        ) from e
    except (OSError, EOFError, pd.errors.ParserError) as e:
        raise DataError(f"{source} is not a readable CSV ({e}); re-download or reinstall it.") from e
    return rows.dropna(subset=["ReportID", "PatientID"])


def _one_per_report(rows: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per report with some text, and the counts the data card gives."""
    per_report = rows.groupby("ReportID")
    facts = {
        "n_image_rows": len(rows),
        "n_reports": int(rows["ReportID"].nunique()),
        "n_patient_ids": int(rows["PatientID"].nunique()),
        "n_reports_multi_patient": int((per_report["PatientID"].nunique() > 1).sum()),
        "n_reports_mixed_method": int((per_report["MethodLabel"].nunique() > 1).sum()),
    }
    # Where a report's rows disagree (a study imported twice, once physician- and once machine-labelled), the first
    # row in the shipped file is always the physician-labelled one.
    reports = rows.drop_duplicates("ReportID", keep="first")
    text = reports["Report"].fillna("").str.strip()
    has_text = text.str.contains(r"[^\W\d_]", regex=True)
    facts["dropped_empty"] = int((~has_text).sum())
    return reports[has_text].assign(Report=text[has_text]).reset_index(drop=True), facts


def _label_matrix(reports: pd.DataFrame, source: Path, top_k: int) -> tuple[list[str], np.ndarray, Counter[str]]:
    """The ``top_k`` most frequent finding labels, each report's (N, K) 0/1 row of them, and every label's count."""
    memo: dict[str, list[str]] = {}
    label_lists = [
        _parse_label_list(v, report_id=r, source=source, memo=memo)
        for v, r in zip(reports["Labels"], reports["ReportID"], strict=True)
    ]
    counts: Counter[str] = Counter(label for labels in label_lists for label in labels)
    label_names = top_labels(counts, top_k, excluded=set(PADCHEST_EXCLUDED))
    if not label_names:
        raise DataError(f"{source}: no usable labels in the Labels column.")
    index = {name: j for j, name in enumerate(label_names)}
    labels = np.zeros((len(reports), len(label_names)), dtype=np.int64)
    for i, names in enumerate(label_lists):
        for name in names:
            j = index.get(name)
            if j is not None:
                labels[i, j] = 1
    return label_names, labels, counts


def _patient_split(
    group_series: pd.Series, physician: np.ndarray, rng: np.random.Generator, val_fraction: float, test_fraction: float
) -> tuple[dict[str, np.ndarray], int]:
    """Report indices of each split, by whole patient groups, and how many machine-labelled reports of the test
    patients were dropped."""
    group = group_series.to_numpy()
    n_physician = int(physician.sum())
    # Test: whole patient groups, drawn among those with physician-labelled reports, until test_fraction of them.
    phys_per_group = pd.Series(physician).groupby(group).sum()
    candidates = phys_per_group[phys_per_group > 0]
    order = rng.permutation(len(candidates))
    cumulative = candidates.to_numpy()[order].cumsum()
    n_test_groups = int(np.searchsorted(cumulative, test_fraction * n_physician)) + 1 if n_physician else 0
    test_groups = set(candidates.index[order[:n_test_groups]])
    in_test_group = group_series.isin(test_groups).to_numpy()
    # Train/val: the remaining groups, a val_fraction of them (not of reports) to validation.
    rest_groups = np.array(sorted(set(group[~in_test_group])), dtype=object)
    rest_groups = rest_groups[rng.permutation(len(rest_groups))]
    n_val_groups = max(1, round(val_fraction * len(rest_groups))) if len(rest_groups) > 1 else 0
    in_val_group = group_series.isin(set(rest_groups[:n_val_groups])).to_numpy()
    parts = {
        "train": np.flatnonzero(~in_test_group & ~in_val_group),
        "val": np.flatnonzero(in_val_group),
        "test": np.flatnonzero(in_test_group & physician),
    }
    return parts, int((in_test_group & ~physician).sum())


def _subsample(parts: dict[str, np.ndarray], rng: np.random.Generator, max_reports: int) -> dict[str, int] | None:
    """Keep a seeded random ``max_reports`` of train + val (in proportion; test whole); the sizes before, or None."""
    train_idx, val_idx = parts["train"], parts["val"]
    if not max_reports or len(train_idx) + len(val_idx) <= max_reports:
        return None
    total = len(train_idx) + len(val_idx)
    n_val = min(len(val_idx), max(1, round(max_reports * len(val_idx) / total)))
    parts["train"] = np.sort(rng.choice(train_idx, size=max_reports - n_val, replace=False))
    parts["val"] = np.sort(rng.choice(val_idx, size=n_val, replace=False))
    return {"train": len(train_idx), "val": len(val_idx)}


def _metadata(reports: pd.DataFrame) -> pd.DataFrame:
    """Each report's id, patient, sex, age (study year minus birth year; NaN when unknown or implausible) and who
    labelled it."""
    study_year = pd.to_numeric(reports["StudyDate_DICOM"], errors="coerce") // 10000
    birth = pd.to_numeric(reports["PatientBirth"], errors="coerce")
    age = (study_year - birth).astype(np.float64)
    age[(age < 0) | (age > MAX_AGE)] = np.nan
    return pd.DataFrame(
        {
            "report_id": reports["ReportID"].to_numpy(),
            "patient_id": reports["PatientID"].to_numpy(),
            "sex": reports["PatientSex_DICOM"].astype(object).where(reports["PatientSex_DICOM"].notna(), None),
            "age": age.to_numpy(),
            "method_label": reports["MethodLabel"].to_numpy(),
        }
    )
