"""The user's own texts from CSV and JSON Lines: both tasks, both split modes, and every user-fixable mistake."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medassist.data.text_files import read_text_file
from medassist.errors import DataError

_FINDINGS = ["effusion", "normal", "pneumonia"]


def _rows(n: int = 30, *, with_split: bool = True) -> list[dict]:
    rows = []
    for i in range(n):
        row = {
            "report_id": f"R{i}",
            "text": f"report {i} shows {_FINDINGS[i % 3]}",
            "label": _FINDINGS[i % 3],
            "effusion": int(i % 3 == 0),
            "pneumonia": int(i % 3 == 2 or i % 5 == 0),
            "age": 40 + i,
        }
        if with_split:
            row["split"] = "test" if i >= 24 else "val" if i >= 18 else "train"
        rows.append(row)
    return rows


def _write_csv(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_multi_class_with_split_column(tmp_path: Path, suffix: str) -> None:
    write = _write_csv if suffix == ".csv" else _write_jsonl
    path = write(tmp_path / f"reports{suffix}", _rows())
    data = read_text_file(path, id_column="report_id")
    assert data.name == "reports" and data.task == "multi-class"
    assert data.label_names == ["effusion", "normal", "pneumonia"]
    assert {k: len(s) for k, s in data.splits.items()} == {"train": 18, "val": 6, "test": 6}
    train = data.splits["train"]
    assert train.texts[1] == "report 1 shows normal" and train.labels[1] == 1
    assert train.labels.dtype == np.int64 and train.labels.shape == (18,)
    # Other columns are metadata (numbers stay numbers); the label and split columns are not.
    assert {"report_id", "effusion", "pneumonia", "age", "source_row"} <= set(train.metadata.columns)
    assert not {"text", "label", "split"} & set(train.metadata.columns)
    assert train.metadata["age"].tolist()[:2] == [40, 41]
    assert train.metadata["source_row"].tolist()[0] == (2 if suffix == ".csv" else 1)


def test_empty_metadata_cells_are_missing(tmp_path: Path) -> None:
    rows = [dict(r, site="" if i % 2 else "north", age="" if i == 0 else r["age"]) for i, r in enumerate(_rows())]
    meta = read_text_file(_write_csv(tmp_path / "r.csv", rows)).splits["train"].metadata
    assert meta["site"].isna().tolist()[:3] == [False, True, False]
    assert np.isnan(meta["age"].iloc[0]) and meta["age"].iloc[1] == 41


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_multi_label_random_split(tmp_path: Path, suffix: str) -> None:
    write = _write_csv if suffix == ".csv" else _write_jsonl
    path = write(tmp_path / f"reports{suffix}", _rows(40, with_split=False))
    data = read_text_file(path, label_columns=["effusion", "pneumonia"], seed=3, name="mine")
    assert data.name == "mine" and data.task == "multi-label"
    assert data.label_names == ["effusion", "pneumonia"]
    assert {k: len(s) for k, s in data.splits.items()} == {"train": 28, "val": 4, "test": 8}
    assert data.splits["train"].labels.shape == (28, 2)
    assert "label" in data.splits["train"].metadata.columns  # not a label column here, so it is metadata
    ids = [i for s in data.splits.values() for i in s.metadata["report_id"]]
    assert sorted(ids) == sorted(f"R{i}" for i in range(40))
    again = read_text_file(path, label_columns=["effusion", "pneumonia"], seed=3)
    assert again.splits["test"].texts == data.splits["test"].texts


def test_random_split_is_stratified(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "r.csv", _rows(60, with_split=False))
    data = read_text_file(path, val_fraction=0.2, test_fraction=0.2)
    for split in data.splits.values():
        assert np.bincount(split.labels, minlength=3).tolist() == [len(split) // 3] * 3


def test_numeric_class_labels_sort_numerically(tmp_path: Path) -> None:
    rows = [{"text": f"t{i}", "label": [2, 10, 1][i % 3]} for i in range(30)]
    data = read_text_file(_write_csv(tmp_path / "n.csv", rows))
    assert data.label_names == ["1", "2", "10"]


def test_empty_text_names_the_row(tmp_path: Path) -> None:
    rows = _rows()
    rows[3]["text"] = "   "
    with pytest.raises(DataError, match=r"row 5 \(report_id 'R3'\).*empty 'text'"):
        read_text_file(_write_csv(tmp_path / "r.csv", rows), id_column="report_id")
    rows[3]["text"] = None
    with pytest.raises(DataError, match="line 4 has an empty 'text'"):
        read_text_file(_write_jsonl(tmp_path / "r.jsonl", rows))


def test_missing_column_lists_present_columns(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "r.csv", _rows())
    with pytest.raises(DataError, match=r"\['body'\] not found.*'report_id', 'text', 'label'"):
        read_text_file(path, text_column="body")
    with pytest.raises(DataError, match="'fold'"):
        read_text_file(path, split_column="fold")
    no_label = [{k: v for k, v in r.items() if k != "label"} for r in _rows()]
    with pytest.raises(DataError, match="no column named 'label'"):
        read_text_file(_write_csv(tmp_path / "nolabel.csv", no_label))


def test_label_unseen_in_training(tmp_path: Path) -> None:
    rows = _rows()
    rows[27]["label"] = "pneumothorax"
    with pytest.raises(DataError, match="'pneumothorax' appears in the 'test' split"):
        read_text_file(_write_csv(tmp_path / "r.csv", rows))


def test_bad_multi_label_value(tmp_path: Path) -> None:
    rows = _rows()
    rows[4]["pneumonia"] = 2
    with pytest.raises(DataError, match="column 'pneumonia' has '2' at row 6"):
        read_text_file(_write_csv(tmp_path / "r.csv", rows), label_columns=["effusion", "pneumonia"])
    never = [dict(r, pneumonia=0 if r["split"] == "train" else r["pneumonia"]) for r in _rows()]
    with pytest.raises(DataError, match=r"\['pneumonia'\] have no 1 among the 'train' rows"):
        read_text_file(_write_csv(tmp_path / "never.csv", never), label_columns=["effusion", "pneumonia"])


def test_not_utf8_names_the_file(tmp_path: Path) -> None:
    csv = tmp_path / "latin.csv"
    csv.write_bytes("text,label\nneumonía basal,pneumonia\nnormal,normal\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.csv is not UTF-8.*line 2.*re-save it as UTF-8"):
        read_text_file(csv)
    jsonl = tmp_path / "latin.jsonl"
    jsonl.write_bytes('{"text": "neumonía", "label": "a"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.jsonl is not UTF-8"):
        read_text_file(jsonl)


def test_empty_split_and_unknown_split(tmp_path: Path) -> None:
    rows = [dict(r, split="train" if r["split"] == "val" else r["split"]) for r in _rows()]
    with pytest.raises(DataError, match="no row has 'val'"):
        read_text_file(_write_csv(tmp_path / "r.csv", rows))
    rows[0]["split"] = "training"
    with pytest.raises(DataError, match="'training' at row 2"):
        read_text_file(_write_csv(tmp_path / "r2.csv", rows))


def test_wrong_suffix_and_other_file_errors(tmp_path: Path) -> None:
    xlsx = tmp_path / "reports.xlsx"
    xlsx.write_bytes(b"PK")
    with pytest.raises(DataError, match=r"'\.xlsx' are not supported"):
        read_text_file(xlsx)
    with pytest.raises(DataError, match="not found"):
        read_text_file(tmp_path / "absent.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        read_text_file(empty)
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "a", "label": "x"}\n{"text": oops}\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        read_text_file(bad_json)
    with pytest.raises(DataError, match="not both"):
        read_text_file(empty, label_column="label", label_columns=["a"])
