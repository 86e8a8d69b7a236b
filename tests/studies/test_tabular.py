"""The tabular study on UCI heart disease and on a user's CSV, and its audit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medassist.cli import main
from medassist.errors import MedAssistError
from medassist.studies.tabular import TabularConfig, load_table


def _run(tmp_path: Path, *argv: str) -> Path:
    out = tmp_path / "runs"
    assert main(["tabular", "--profile", "debug", "--out", str(out), "--progress", "false", *argv]) == 0
    return sorted(out.iterdir())[-1]


def test_heart_disease_to_an_audit_by_site_and_sex(real_data_dir: Path, tmp_path: Path) -> None:
    run = _run(tmp_path, "--data-dir", str(real_data_dir))
    m = json.loads((run / "metrics.json").read_text())
    assert sum(m["sizes"].values()) == 920 and m["selected"]["model"] in ("logistic", "gradient_boosting")
    chosen = next(r for r in m["comparison"] if r["model"] == m["selected"]["model"])
    assert 0.75 < chosen["test_auc"] < 1 and chosen["test_auc_lo"] < chosen["test_auc"] < chosen["test_auc_hi"]
    test = pd.read_parquet(run / "predictions" / "test.parquet")
    assert {"site", "sex", "age"} <= set(test.columns) and len(test) == m["sizes"]["test"]
    assert "site" not in m["features"]["numeric"] + m["features"]["categorical"]  # a group, not a predictor
    report = (run / "report.md").read_text()
    assert "## Sites" in report and "Switzerland" in report and "medassist fairness --run" in report

    out = tmp_path / "audit"
    argv = ["fairness", "--run", str(run), "--out", str(out), "--n-boot", "100", "--progress", "false"]
    assert main([*argv, "--min-group-size", "20"]) == 0
    (audit,) = list(out.iterdir())
    f = json.loads((audit / "metrics.json").read_text())
    assert list(f["audits"])[:2] == ["site", "sex"]  # a tabular run is audited by site first
    sites = {r["group"]: r for r in f["audits"]["site"]["table"] if r["label"] == f["summary_label"]}
    assert {"Cleveland", "Hungary", "VA Long Beach"} <= set(sites)
    assert all(np.isfinite(r["auc_lo"]) and r["auc_lo"] <= r["auc"] <= r["auc_hi"] for r in sites.values())
    disparity = f["audits"]["site"]["disparities"][0]
    assert {"auc_gap", "auc_p_holm", "auc_disparity"} <= set(disparity)
    assert "not_run" in f["mitigation"]["notes"]["balanced_retrain"]


def test_a_users_csv_with_a_rule_as_target(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 400
    x = rng.normal(size=n)
    frame = pd.DataFrame(
        {
            "bp": 120 + 15 * x + rng.normal(0, 5, n),
            "smoker": rng.choice(["yes", "no"], n),
            "sex": rng.choice(["F", "M"], n),
            "age": rng.integers(30, 90, n),
            "outcome": np.where(x + rng.normal(0, 0.7, n) > 0.3, "event", "none"),
        }
    )
    csv = tmp_path / "cohort.csv"
    frame.to_csv(csv, index=False)
    run = _run(tmp_path, "--data", str(csv), "--target", "outcome==event", "--categorical", "smoker,sex")
    m = json.loads((run / "metrics.json").read_text())
    assert m["target"] == "outcome==event" and m["features"]["categorical"] == ["smoker", "sex"]
    assert m["groups"] == ["sex", "age"]
    assert next(r for r in m["comparison"] if r["model"] == m["selected"]["model"])["test_auc"] > 0.75


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("risk>0", "target column 'risk' is not in the table; its columns are: bp, group, outcome"),
        ("outcome", "target column 'outcome' holds values other than 0 and 1 (e.g. 'a')"),
        ("group>1", "target 'group>1': 'group' is not numeric"),
        ("bp>1000", "the target 'bp>1000' is 0 for every row"),
    ],
)
def test_a_target_that_cannot_be_read_is_named(tmp_path: Path, target: str, message: str) -> None:
    csv = tmp_path / "t.csv"
    pd.DataFrame({"bp": [120, 130] * 30, "group": ["x", "y"] * 30, "outcome": ["a", "b"] * 30}).to_csv(csv, index=False)
    with pytest.raises(MedAssistError) as err:
        load_table(TabularConfig(data=str(csv), target=target))
    assert message in str(err.value)


def test_heart_disease_records_for_the_synthetic_data_study(real_data_dir: Path) -> None:
    from medassist.studies.synth_config import SynthStudyConfig
    from medassist.studies.synth_records import heart_disease_records

    frames, kinds, target, info = heart_disease_records(
        SynthStudyConfig(data="heart_disease", data_dir=str(real_data_dir), progress=False)
    )
    assert target == "disease" and kinds["site"] == "categorical" and kinds["age"] == "numerical"
    assert sum(len(f) for f in frames.values()) + info["dropped_incomplete"] == 920
    assert all(not f.isna().any().any() for f in frames.values())
    assert set(frames["test"]["disease"]) == {0, 1}


def test_a_run_records_its_kind_and_is_read_by_it(real_data_dir: Path, tmp_path: Path, capsys) -> None:
    """A tabular run's metrics hold 'comparison' and 'selected' like a text and an image run: its recorded kind,
    not its keys, decides how it is rendered, deployed or audited."""
    from medassist.run import run_kind

    run = _run(tmp_path, "--data-dir", str(real_data_dir))
    assert json.loads((run / "status.json").read_text())["kind"] == "tabular" and run_kind(run) == "tabular"
    (run / "report.md").unlink()
    assert main(["report", str(run)]) == 0 and (run / "report.md").read_text().startswith("# Tabular study")
    assert main(["deploy", "--run", str(run), "--out", str(tmp_path / "d")]) == 2
    assert "is a tabular run; deploy takes an image or a text study run" in capsys.readouterr().err
