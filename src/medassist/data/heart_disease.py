"""UCI Heart Disease: 920 patients of four hospitals (Cleveland, Hungary, Switzerland, VA Long Beach), one table.

Read from ``<data dir>/heart_disease/processed.<site>.data`` (the UCI repository's processed files, MD5-checked when
downloaded; CC BY 4.0). Each row is a patient: 13 clinical columns, the diagnosis ``num`` (0 = no disease, 1-4 =
disease) and, added here, the ``site`` it came from. ``sex`` is written ``F``/``M``; "?" and a cholesterol of 0
are missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from medassist.data.download import download_file, md5sum
from medassist.data.paths import DATA_DIR_ENV, resolve_data_dir
from medassist.errors import ChecksumError, DataError

SUBDIR = "heart_disease"
URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/heart-disease/"
# site -> (file, MD5 of the UCI file, name in reports)
SITES = {
    "cleveland": ("processed.cleveland.data", "2d91a8ff69cfd9616aa47b59d6f843db", "Cleveland"),
    "hungarian": ("processed.hungarian.data", "22e96bee155b5973568101c93b3705f6", "Hungary"),
    "switzerland": ("processed.switzerland.data", "9a87f7577310b3917730d06ba9349e20", "Switzerland"),
    "va": ("processed.va.data", "4249d03ca7711e84f4444768c9426170", "VA Long Beach"),
}
COLUMNS = [
    "age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalach", "exang", "oldpeak", "slope", "ca", "thal",
    "num",
]  # fmt: skip
CATEGORICAL = ["sex", "cp", "fbs", "restecg", "exang", "slope", "thal"]
"""Coded columns (chest-pain type, resting ECG, ...): one-hot encoded by a model, not read as numbers."""
METADATA = ["site", "sex", "age"]
"""The columns an audit groups by."""


def heart_disease_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    return resolve_data_dir(data_dir) / SUBDIR


def heart_disease_present(data_dir: str | os.PathLike[str] | None = None) -> bool:
    root = heart_disease_dir(data_dir)
    return all((root / f).is_file() for f, _, _ in SITES.values())


def load_heart_disease(
    data_dir: str | os.PathLike[str] | None = None, *, download: bool = False, url: str = URL, progress: bool = True
) -> pd.DataFrame:
    """The 920 patients as one table with a ``site`` column.

    Args:
        data_dir: the data directory (default: ``$MEDASSIST_DATA_DIR``, else the user cache).
        download: fetch missing files from ``url`` (MD5-checked) instead of refusing.

    Raises:
        DataError: a file is missing (named, with where to put it and where to get it) or unreadable.
        ChecksumError: a downloaded file does not match its MD5.
    """
    root = heart_disease_dir(data_dir)
    frames = []
    for name, md5, label in SITES.values():
        path = root / name
        if not path.is_file():
            if not download:
                raise DataError(
                    f"UCI Heart Disease file {name} is not at {path}. Download it from {url}{name} and put it "
                    f"there, or point --data-dir / {DATA_DIR_ENV} at a folder holding {SUBDIR}/{name}, or allow the "
                    "download (medassist data fetch heart_disease)."
                )
            download_file(url + name, path, md5=md5, progress=progress)
        elif download and md5sum(path) != md5:
            raise ChecksumError(f"{path} has another MD5 than the UCI file {name}; delete it and fetch it again")
        try:
            df = pd.read_csv(path, header=None, names=COLUMNS, na_values="?", skipinitialspace=True)
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise DataError(f"{path} is not a readable UCI Heart Disease file ({exc})") from None
        if len(df.columns) != len(COLUMNS) or df.empty:
            raise DataError(f"{path}: expected rows of {len(COLUMNS)} comma-separated values")
        df.insert(0, "site", label)
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out["sex"] = out["sex"].map({1.0: "M", 0.0: "F"})
    out.loc[out["chol"] == 0, "chol"] = float("nan")  # 0 = not measured (every Swiss patient)
    return out
