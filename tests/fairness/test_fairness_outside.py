"""The fairness audit of an outside model's predictions file: binary, multi-class and multi-label, and every bad
input named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medassist.cli import main
from medassist.errors import MedAssistError
from medassist.fairness.outside import OutsideSpec, read_outside

N = 800


def _frame(seed: int = 0) -> pd.DataFrame:
    """Cases with sex, race, site and age; the model is worse (noisier) for race D."""
    rng = np.random.default_rng(seed)
    race = rng.choice(["A", "B", "D"], N, p=[0.5, 0.3, 0.2])
    y = rng.binomial(1, 0.3, N)
    logit = (2 * y - 1) * 1.5 + rng.normal(0, np.where(race == "D", 2.5, 0.8))
    return pd.DataFrame(
        {
            "sepsis": y,
            "score": 1 / (1 + np.exp(-logit)),
            "sex": rng.choice(["F", "M"], N),
            "race": race,
            "site": rng.choice(["north", "south"], N),
            "age": rng.integers(20, 90, N),
            "split": rng.choice(["val", "test"], N, p=[0.4, 0.6]),
        }
    )


def _audit(tmp_path: Path, csv: Path, *extra: str) -> dict:
    argv = ["fairness", "--predictions", str(csv), "--out", str(tmp_path / "runs"), "--n-boot", "50"]
    assert main([*argv, "--progress", "false", *extra]) == 0
    (run,) = list((tmp_path / "runs").iterdir())
    return json.loads((run / "metrics.json").read_text()) | {"_dir": str(run)}


def test_a_binary_model_is_audited_by_groups_and_their_intersection(tmp_path: Path) -> None:
    csv = tmp_path / "preds.csv"
    _frame().to_csv(csv, index=False)
    m = _audit(
        tmp_path,
        csv,
        *("--label-column", "sepsis", "--score-column", "score", "--split-column", "split"),
        *("--group-columns", "sex,race,site", "--age-column", "age", "--groups", "race,site,race*sex,age"),
    )
    assert m["source"]["kind"] == "outside" and m["source"]["labels"] == ["sepsis"]
    assert set(m["audits"]) == {"race", "site", "race*sex", "age"}
    race = {r["group"]: r for r in m["audits"]["race"]["table"] if r["label"] == "sepsis"}
    assert race["D"]["auc"] < race["A"]["auc"] - 0.05  # the model's weakness for race D is found
    assert "not_run" in m["mitigation"]["notes"]["balanced_retrain"]  # an outside model cannot be retrained
    assert set(m["mitigation"]["variants"]) == {"equalized_odds", "demographic_parity", "equal_sensitivity"}
    assert not any(r["label"] == "macro" for r in m["audits"]["race"]["table"])  # one label: no macro row
    report = (Path(m["_dir"]) / "report.md").read_text()
    assert "## Model card: an outside model" in report and "What is not known" in report
    assert "task binary" in report and str(tmp_path) not in report  # the file's name, not its path


def test_multiclass_scores_and_a_seeded_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    p = rng.dirichlet([1, 1, 1], N)
    frame = pd.DataFrame({"normal": p[:, 0], "benign": p[:, 1], "malignant": p[:, 2]})
    frame["label"] = np.array(["normal", "benign", "malignant"])[[rng.choice(3, p=r) for r in p]]
    frame["site"] = rng.choice(["a", "b"], N)
    csv = tmp_path / "three.csv"
    frame.to_csv(csv, index=False)
    val, test, info = read_outside(
        OutsideSpec(str(csv), score_columns=["normal", "benign", "malignant"], group_columns=["site"])
    )
    assert info["task"] == "multi-class" and len(val) + len(test) == N and "seeded split" in info["split_rule"]
    assert abs(len(val) / N - 0.3) < 0.02 and set(test["y"]) == {0, 1, 2}
    m = _audit(tmp_path, csv, "--score-columns", "normal,benign,malignant", "--group-columns", "site")
    assert m["source"]["labels"] == ["normal", "benign", "malignant"]  # each class one-vs-rest


def test_multilabel_scores(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({f"y_{k}": rng.binomial(1, 0.3, N) for k in ("a", "b")})
    for k in ("a", "b"):
        frame[f"p_{k}"] = np.clip(frame[f"y_{k}"] * 0.6 + rng.uniform(0, 0.4, N), 0, 1)
    frame["sex"] = rng.choice(["F", "M"], N)
    csv = tmp_path / "ml.parquet"
    frame.to_parquet(csv)
    m = _audit(tmp_path, csv, "--label-columns", "y_a,y_b", "--score-columns", "p_a,p_b", "--group-columns", "sex")
    assert m["source"]["task"] == "multi-label" and m["source"]["labels"] == ["y_a", "y_b"]


@pytest.mark.parametrize(
    ("change", "spec", "message"),
    [
        (
            {},
            {"score_column": "risk"},
            "label or score column 'risk' is not in the file; its columns are: sepsis, score",
        ),
        ({"score": 1.7}, {}, "scores must be probabilities in [0, 1]; column 'score' holds 1.7 in row 1"),
        ({"score": "high"}, {}, "score column 'score' has 1 empty or non-numeric value(s), the first in row 1"),
        ({"sepsis": 2}, {}, "label column 'sepsis' must hold 0 or 1; 1 row(s) hold other values (e.g. 2)"),
        ({"split": "holdout"}, {}, "split column 'split' holds holdout; use val and test"),
        ({}, {"group_columns": ["race"]}, "group column 'race' is not in the file"),
    ],
)
def test_bad_input_is_named(tmp_path: Path, change: dict, spec: dict, message: str) -> None:
    frame = _frame()[["sepsis", "score", "sex", "split"]]
    for col, value in change.items():
        frame[col] = frame[col].astype(object)
        frame.loc[0, col] = value
    csv = tmp_path / "bad.csv"
    frame.to_csv(csv, index=False)
    base = {"label_column": "sepsis", "score_column": "score", "split_column": "split", "group_columns": ["sex"]}
    with pytest.raises(MedAssistError) as err:
        read_outside(OutsideSpec(str(csv), **(base | spec)))
    assert message in str(err.value)


def test_rows_that_do_not_sum_to_one_and_unknown_classes_are_refused(tmp_path: Path) -> None:
    csv = tmp_path / "mc.csv"
    pd.DataFrame({"a": [0.5, 0.2], "b": [0.6, 0.8], "label": ["a", "b"]}).to_csv(csv, index=False)
    with pytest.raises(MedAssistError, match="row 1 sums to 1.1"):
        read_outside(OutsideSpec(str(csv), score_columns=["a", "b"]))
    pd.DataFrame({"a": [0.4, 0.2], "b": [0.6, 0.8], "label": ["a", "c"]}).to_csv(csv, index=False)
    with pytest.raises(MedAssistError, match=r"holds values that are not classes \(c\)"):
        read_outside(OutsideSpec(str(csv), score_columns=["a", "b"]))


def test_a_mostly_empty_group_column_and_missing_splits_are_refused(tmp_path: Path, capsys) -> None:
    frame = _frame()
    frame.loc[: N * 0.6, "race"] = None
    csv = tmp_path / "p.csv"
    frame.to_csv(csv, index=False)
    spec = OutsideSpec(str(csv), label_column="sepsis", score_column="score", split_column="split")
    with pytest.raises(MedAssistError, match="group column 'race' is empty for 60% of the rows"):
        read_outside(OutsideSpec(**{**spec.__dict__, "group_columns": ["race"]}))
    frame["split"] = "val"
    frame.to_csv(csv, index=False)
    with pytest.raises(MedAssistError, match="no rows are marked test"):
        read_outside(spec)
    frame["split"] = "test"
    frame.to_csv(csv, index=False)
    argv = ["fairness", "--predictions", str(csv), "--label-column", "sepsis", "--score-column", "score"]
    assert main([*argv, "--split-column", "split", "--out", str(tmp_path / "runs")]) == 2
    assert "no rows are marked val, and the mitigation is fitted on validation rows" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_patients_with_several_rows_are_resampled_whole_and_one_class_groups_are_listed(tmp_path: Path) -> None:
    frame = _frame()
    sizes = np.random.default_rng(3).integers(1, 7, N)  # one to six rows per patient
    frame["patient"] = np.repeat(np.arange(N), sizes)[:N]
    patients = frame["patient"].nunique()
    frame.loc[frame.site == "south", "sepsis"] = 0  # no positives at one site
    csv = tmp_path / "p.csv"
    frame.to_csv(csv, index=False)
    spec = OutsideSpec(str(csv), label_column="sepsis", score_column="score", id_column="patient")
    val, test, info = read_outside(spec)
    assert info["patients"] == patients and "by patient" in info["split_rule"]
    assert not set(val["cluster:patient"]) & set(test["cluster:patient"])  # a patient's rows stay together
    from medassist.fairness.audit import Scored, replicates

    y = test[["y"]].to_numpy()
    p = test[["p:sepsis"]].to_numpy()
    rows = replicates(Scored(["s"], y, p, (p > 0.5).astype(int)), n_boot=300, rng=np.random.default_rng(0))
    whole = replicates(
        Scored(["s"], y, p, (p > 0.5).astype(int), test["cluster:patient"].to_numpy()),
        n_boot=300,
        rng=np.random.default_rng(0),
    )
    assert np.all(rows["n"] == len(test)) and not np.all(whole["n"] == len(test))  # whole patients drawn
    assert np.nanstd(whole["prevalence"]) != pytest.approx(np.nanstd(rows["prevalence"]), rel=1e-3)
    m = _audit(
        tmp_path,
        csv,
        *("--label-column", "sepsis", "--score-column", "score", "--id-column", "patient"),
        *("--group-columns", "site", "--mitigate", "false"),
    )
    assert m["audits"]["site"]["one_class"] == {"south": "no positives"}
    assert m["source"]["patients"] == patients
    assert "patient" not in json.dumps(m["source"]["metadata_columns"])
