"""Open-i and PadChest report readers: tiny synthetic archives for the parsing rules, then the real shipped files."""

from __future__ import annotations

import io
import math
import tarfile
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pandas as pd
import pytest

from medassist.data.reports import (
    OPENI_FILE,
    PADCHEST_FILE,
    load_openi,
    load_padchest,
    parse_sex_age,
    xrv_data_dir,
)
from medassist.data.text_types import TextData
from medassist.errors import DataError

# ----------------------------------------------------------------------------------------------------------------
# Synthetic Open-i
# ----------------------------------------------------------------------------------------------------------------


def _openi_xml(uid: str, *, findings: str | None, impression: str | None, indication: str, majors: list[str]) -> str:
    """A report with the structure of the real ecgen-radiology/*.xml files (trimmed to the parts that are read)."""
    sections = [("COMPARISON", "None."), ("INDICATION", indication), ("FINDINGS", findings), ("IMPRESSION", impression)]
    abstract = "\n".join(
        f'<AbstractText Label="{label}">{escape(text)}</AbstractText>'
        if text is not None
        else f'<AbstractText Label="{label}"/>'
        for label, text in sections
    )
    mesh = "\n".join(f"<major>{escape(m)}</major>" for m in majors)
    return f"""<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <meta type="rr"/>
   <uId id="{uid}"/>
   <licenseURL>http://creativecommons.org/licenses/by-nc-nd/4.0/</licenseURL>
   <MedlineCitation Owner="Indiana University" Status="supplied by publisher">
      <Article PubModel="Electronic">
         <Abstract>
{abstract}
         </Abstract>
      </Article>
   </MedlineCitation>
   <MeSH>
{mesh}
      <automatic>Should/not/be/read</automatic>
   </MeSH>
   <parentImage id="{uid}_1_IM-0001-3001"><caption>Xray Chest PA and Lateral</caption></parentImage>
</eCitation>
"""


def _write_tgz(path: Path, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        folder = tarfile.TarInfo("ecgen-radiology")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for name, text in files.items():
            data = text.encode("utf-8")
            member = tarfile.TarInfo(f"ecgen-radiology/{name}")
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return path


def _openi_files() -> dict[str, str]:
    """30 indexed reports over normal / Opacity / Cardiomegaly / Thoracic Vertebrae, plus three to be dropped."""
    files = {}
    cycle = [
        ["normal"],
        ["Opacity/lung/base/left", "Cardiomegaly/mild"],
        ["Opacity/lung/apex/right"],
        ["Thoracic Vertebrae/degenerative"],
        ["Thoracic vertebrae/degenerative/mild", "Cardiomegaly"],  # second spelling: same label
        ["Technical Quality of Image Unsatisfactory", "Cardiomegaly/severe"],
    ]
    indications = ["55 year old female with cough", "XXXX-year-old male, chest pain", "M 45", "Chest pain", "66yof"]
    for i in range(30):
        files[f"{i + 1}.xml"] = _openi_xml(
            f"CXR{i + 1}",
            findings=f"Finding number {i}.",
            impression=None if i % 7 == 0 else "Impression text.",
            indication=indications[i % len(indications)],
            majors=cycle[i % len(cycle)],
        )
    files["100.xml"] = _openi_xml("CXR100", findings=None, impression="  ", indication="x", majors=["normal"])
    files["101.xml"] = _openi_xml(
        "CXR101", findings="Some text.", impression=None, indication="", majors=["No Indexing"]
    )
    files["102.xml"] = _openi_xml(
        "CXR102", findings=None, impression="Only impression.", indication="", majors=["Mass"]
    )
    return files


@pytest.fixture
def openi_tgz(tmp_path: Path) -> Path:
    return _write_tgz(tmp_path / OPENI_FILE, _openi_files())


def _all_metadata(data: TextData) -> pd.DataFrame:
    return pd.concat([s.metadata for s in data.splits.values()], ignore_index=True)


def test_openi_labels_text_and_drops(openi_tgz: Path) -> None:
    data = load_openi(path=openi_tgz, top_k=3, min_label_count=1)
    assert data.task == "multi-label"
    # 'normal' first, then by frequency; the quality heading and the 'No Indexing' report never become labels.
    assert data.label_names == ["normal", "Cardiomegaly", "Opacity", "Thoracic Vertebrae"]
    assert data.info["n_reports"] == 33
    assert data.info["dropped_empty"] == 1
    assert data.info["dropped_no_indexing"] == 1
    assert data.info["n_kept"] == 31
    assert sum(len(s) for s in data.splits.values()) == 31

    meta = _all_metadata(data)
    texts = [t for s in data.splits.values() for t in s.texts]
    labels = np.concatenate([s.labels for s in data.splits.values()])
    by_id = dict(zip(meta["report_id"], range(len(meta)), strict=True))
    assert "CXR100" not in by_id and "CXR101" not in by_id
    # FINDINGS + " " + IMPRESSION, and either alone when the other is missing.
    assert texts[by_id["CXR2"]] == "Finding number 1. Impression text."
    assert texts[by_id["CXR1"]] == "Finding number 0."
    assert texts[by_id["CXR102"]] == "Only impression."
    # Term before the first '/', both spellings of Thoracic Vertebrae merged.
    row = dict(zip(data.label_names, labels[by_id["CXR2"]], strict=True))
    assert row == {"normal": 0, "Cardiomegaly": 1, "Opacity": 1, "Thoracic Vertebrae": 0}
    assert labels[by_id["CXR5"]].tolist() == [0, 1, 0, 1]
    assert labels[by_id["CXR102"]].sum() == 0  # 'Mass' is not among the labels
    assert data.info["term_counts"]["Thoracic Vertebrae"] == 10


def test_openi_sex_age_and_split(openi_tgz: Path) -> None:
    data = load_openi(path=openi_tgz, top_k=3, min_label_count=1, val_fraction=0.1, test_fraction=0.2)
    sizes = {k: len(v) for k, v in data.splits.items()}
    assert sizes == {"train": 22, "val": 3, "test": 6}
    meta = _all_metadata(data).set_index("report_id")
    assert (meta.loc["CXR1", "sex"], meta.loc["CXR1", "age"]) == ("F", 55.0)
    assert meta.loc["CXR2", "sex"] == "M" and math.isnan(meta.loc["CXR2", "age"])
    assert (meta.loc["CXR3", "sex"], meta.loc["CXR3", "age"]) == ("M", 45.0)
    assert meta.loc["CXR4", "sex"] is None and math.isnan(meta.loc["CXR4", "age"])
    assert (meta.loc["CXR5", "sex"], meta.loc["CXR5", "age"]) == ("F", 66.0)
    assert data.info["n_with_sex"] == int(meta["sex"].notna().sum())
    # The same seed gives the same split, another seed a different one.
    again = load_openi(path=openi_tgz, top_k=3, min_label_count=1)
    other = load_openi(path=openi_tgz, top_k=3, min_label_count=1, seed=1)
    assert again.splits["test"].texts == data.splits["test"].texts
    assert other.splits["test"].metadata["report_id"].tolist() != data.splits["test"].metadata["report_id"].tolist()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("XXXX-year-old male with chest pain", ("M", None)),
        ("55 year old female", ("F", 55.0)),
        ("M 45", ("M", 45.0)),
        ("Chest pain status post MVA. Male, 53 years.", ("M", 53.0)),
        ("786.59, 54yof with chest pain", ("F", 54.0)),
        ("XXXX-year-old woman, 8-1/2 months pregnant", ("F", None)),
        ("f/u pneumonia x 3 weeks", (None, None)),
        ("male with 3 days of cough", ("M", None)),
        ("", (None, None)),
    ],
)
def test_parse_sex_age(text: str, expected: tuple[str | None, float | None]) -> None:
    sex, age = parse_sex_age(text)
    assert sex == expected[0]
    assert (math.isnan(age) and expected[1] is None) or age == expected[1]


def test_openi_errors(tmp_path: Path, openi_tgz: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_openi(path=tmp_path / "missing.tgz")
    bad = tmp_path / "bad.tgz"
    bad.write_bytes(b"not a tar file")
    with pytest.raises(DataError, match="not a readable .tgz"):
        load_openi(path=bad)
    with pytest.raises(DataError, match="leaves nothing for training"):
        load_openi(path=openi_tgz, val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(DataError, match="top_k"):
        load_openi(path=openi_tgz, top_k=0)
    rare = _write_tgz(
        tmp_path / "rare.tgz",
        {
            f"{i}.xml": _openi_xml(f"CXR{i}", findings="x.", impression=None, indication="", majors=["normal"])
            for i in range(9)
        }
        | {"9.xml": _openi_xml("CXR9", findings="y.", impression=None, indication="", majors=["Mass"])},
    )
    # 'Mass' has a single report; wherever it lands outside train, the message names it.
    with pytest.raises(DataError, match="Mass"):
        for seed in range(20):
            load_openi(path=rare, top_k=1, min_label_count=1, seed=seed)


# ----------------------------------------------------------------------------------------------------------------
# Synthetic PadChest
# ----------------------------------------------------------------------------------------------------------------

_PADCHEST_LABELS = [
    "['normal']",
    "['pleural effusion', ' cardiomegaly', '']",
    "['cardiomegaly', 'unchanged']",
    "['normal', 'exclude']",
]


def _padchest_rows() -> list[dict]:
    """40 patients, 3 reports each (1 physician + 2 machine-labelled), 2 image rows per report; plus special cases."""
    rows = []
    report_id = 1000
    for p in range(40):
        for r in range(3):
            report_id += 1
            for image in range(2):
                rows.append(
                    {
                        "ImageID": f"img{report_id}_{image}.png",
                        "StudyDate_DICOM": 20150314,
                        "PatientID": f"P{p}",
                        "PatientBirth": 1950.0 + p,
                        "PatientSex_DICOM": "F" if p % 2 else "M",
                        "ReportID": report_id,
                        "Report": f" informe {report_id} pulmon normal .",
                        "MethodLabel": "Physician" if r == 0 else "RNN_model",
                        "Labels": _PADCHEST_LABELS[(p + r) % len(_PADCHEST_LABELS)],
                    }
                )
    special = dict(rows[0], PatientBirth=np.nan, PatientSex_DICOM=np.nan, MethodLabel="RNN_model")
    rows.append(dict(special, ImageID="empty.png", ReportID=1, PatientID="P0", Report=np.nan))
    rows.append(dict(special, ImageID="dots.png", ReportID=2, PatientID="P0", Report=" . . ."))
    rows.append(dict(special, ImageID="nolabels.png", ReportID=3, PatientID="P99", Labels=np.nan, Report="sin hallazg"))
    # The same report under a second PatientID: P98 and P1 are then one patient for splitting.
    rows.append(dict(rows[6], ImageID="dup.png", PatientID="P98"))
    return rows


@pytest.fixture
def padchest_csv(tmp_path: Path) -> Path:
    path = tmp_path / PADCHEST_FILE
    pd.DataFrame(_padchest_rows()).to_csv(path, index=False, compression="gzip")
    return path


def test_padchest_synthetic(padchest_csv: Path) -> None:
    data = load_padchest(path=padchest_csv, top_k=3, test_fraction=0.5, val_fraction=0.2)
    info = data.info
    # 'unchanged' and 'exclude' are study-level flags, never labels; ' cardiomegaly' and '' are cleaned.
    # cardiomegaly and normal tie on 60 reports: alphabetical order.
    assert data.label_names == ["cardiomegaly", "normal", "pleural effusion"]
    assert info["n_image_rows"] == 40 * 3 * 2 + 4
    assert info["n_reports"] == 40 * 3 + 3
    assert info["n_patient_ids"] == 42
    assert info["n_physician_reports"] == 40
    assert info["dropped_empty"] == 2
    assert info["n_reports_multi_patient"] == 1

    meta = {k: s.metadata for k, s in data.splits.items()}
    all_meta = pd.concat(meta.values(), ignore_index=True)
    assert all_meta["report_id"].is_unique
    # Test: physician reports only, about half of them; the test patients' other reports are dropped.
    assert (meta["test"]["method_label"] == "Physician").all()
    assert 18 <= len(meta["test"]) <= 22
    assert info["dropped_test_patients_other_reports"] == 2 * meta["test"]["patient_id"].nunique()
    assert len(all_meta) == 40 * 3 + 1 - info["dropped_test_patients_other_reports"]
    # No patient (and no merged pair of PatientIDs) in two splits.
    patients = {k: set(m["patient_id"]) | ({"P1"} if "P98" in set(m["patient_id"]) else set()) for k, m in meta.items()}
    assert not patients["train"] & patients["val"]
    assert not patients["train"] & patients["test"]
    assert not patients["val"] & patients["test"]

    row = all_meta.set_index("report_id")
    assert row.loc[1001, "age"] == 2015 - 1950 and row.loc[1001, "sex"] == "M"
    assert math.isnan(row.loc[3, "age"]) and row.loc[3, "sex"] is None
    labels = np.concatenate([s.labels for s in data.splits.values()])
    position = {rid: i for i, rid in enumerate(all_meta["report_id"])}
    assert labels[position[1004]].tolist() == [1, 0, 1]  # "['pleural effusion', ' cardiomegaly', '']"
    assert labels[position[3]].tolist() == [0, 0, 0]  # missing Labels


def test_padchest_max_reports_and_errors(padchest_csv: Path, tmp_path: Path) -> None:
    full = load_padchest(path=padchest_csv, top_k=3)
    small = load_padchest(path=padchest_csv, top_k=3, max_reports=30)
    assert len(small.splits["train"]) + len(small.splits["val"]) == 30
    assert small.splits["test"].texts == full.splits["test"].texts
    assert small.info["subsampled_from"]["train"] == len(full.splits["train"])

    bad = tmp_path / "bad.csv.gz"
    pd.DataFrame({"ReportID": [1], "Report": ["x"]}).to_csv(bad, index=False, compression="gzip")
    with pytest.raises(DataError, match="PatientID"):
        load_padchest(path=bad)
    rows = _padchest_rows()
    rows[0]["Labels"] = "['normal'"
    broken = tmp_path / "broken.csv.gz"
    pd.DataFrame(rows).to_csv(broken, index=False, compression="gzip")
    with pytest.raises(DataError, match="ReportID 1001"):
        load_padchest(path=broken)
    with pytest.raises(DataError, match="max_reports"):
        load_padchest(path=padchest_csv, max_reports=-1)


# ----------------------------------------------------------------------------------------------------------------
# The real files inside the installed torchxrayvision package
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def xrv_dir() -> Path:
    try:
        folder = xrv_data_dir()
    except DataError as e:
        pytest.skip(str(e))
    if not (folder / OPENI_FILE).is_file() or not (folder / PADCHEST_FILE).is_file():
        pytest.skip(f"the report files are missing from {folder}")
    return folder


def test_real_openi(xrv_dir: Path) -> None:
    data = load_openi()
    assert data.info["n_reports"] == 3955
    kept = data.info["n_reports"] - data.info["dropped_empty"] - data.info["dropped_no_indexing"]
    assert sum(len(s) for s in data.splits.values()) == kept > 3700
    assert data.num_labels == 15 and data.label_names[0] == "normal"
    assert {"Opacity", "Cardiomegaly", "Pleural Effusion"} <= set(data.label_names)
    assert "No Indexing" not in data.label_names
    assert all(len(s) > 0 for s in data.splits.values())
    assert data.info["n_with_sex"] > 500


def test_real_padchest(xrv_dir: Path) -> None:
    data = load_padchest(max_reports=2000)
    assert data.info["n_reports"] == 107_783
    assert data.info["n_patient_ids"] == 67_625
    assert len(data.splits["train"]) + len(data.splits["val"]) == 2000
    assert "normal" in data.label_names and "unchanged" not in data.label_names
    patients = {k: set(s.metadata["patient_id"]) for k, s in data.splits.items()}
    assert not patients["train"] & patients["test"]
    assert not patients["val"] & patients["test"]
    assert not patients["train"] & patients["val"]
    assert (data.splits["test"].metadata["method_label"] == "Physician").all()
    assert abs(len(data.splits["test"]) - 0.5 * data.info["n_physician_reports"]) < 50
