"""Open-i: 3,955 English chest X-ray reports from Indiana University, with multi-label MeSH findings, read offline
from the archive shipped inside the torchxrayvision package."""

from __future__ import annotations

import math
import os
import re
import tarfile
import xml.etree.ElementTree as ET
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

OPENI_FILE = "NLMCXR_reports.tgz"

# MeSH headings that say nothing about the image content. "No Indexing" reports are dropped entirely, because their
# findings are unknown rather than absent; the quality heading is simply not offered as a label.
OPENI_NO_INDEXING = "no indexing"
OPENI_EXCLUDED = ("No Indexing", "Technical Quality of Image Unsatisfactory")

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
            if math.isnan(age) and 0 < value <= MAX_AGE:
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
    check_fractions(val_fraction, test_fraction, what="reports")
    source = resolve_file(path, OPENI_FILE)
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
    label_names = ([normal] if normal else []) + top_labels(counts, top_k, excluded=excluded, min_count=min_label_count)
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
    require_train_positives(
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
        "label_counts": {name: label_counts(s.labels, label_names) for name, s in splits.items()},
        "split_sizes": {name: len(s) for name, s in splits.items()},
        "n_with_sex": int(metadata["sex"].notna().sum()),
        "n_with_age": int(metadata["age"].notna().sum()),
        "seed": seed,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
    }
    data = TextData(name="openi", label_names=label_names, splits=splits, task="multi-label", info=info)
    return validate_text_data(data)
