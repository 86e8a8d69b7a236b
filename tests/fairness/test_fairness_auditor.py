"""An outside model audited as an auditor expects, on a file shaped like a hospital extract (low prevalence, age in
bands such as [70-80), race missing for some rows, repeated patients) and on real UCI heart disease predictions:
columns as they come, the decision threshold, reference groups and ratios, suppressed small intersections, plots,
and mitigation that is never offered when it did not improve its own target."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_curve

from medassist.cli import main
from medassist.errors import MedAssistError
from medassist.fairness.example import AGE_BANDS, readmission_predictions
from medassist.fairness.groups import band_key, group_order
from medassist.fairness.threshold import choose, parse_rule

ROWS = 15_000
BASE = ("--label-column", "y", "--score-column", "p", "--split-column", "split", "--n-boot", "100")


@pytest.fixture(scope="module")
def readmission(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    frame = readmission_predictions(ROWS, seed=1)
    csv = tmp_path_factory.mktemp("extract") / "readmission.csv"
    frame.to_csv(csv, index=False)
    return csv, frame


def _audit(out: Path, csv: Path, *extra: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.iterdir())
    assert main(["fairness", "--predictions", str(csv), "--out", str(out), "--progress", "false", *extra]) == 0
    (run,) = set(out.iterdir()) - before
    return json.loads((run / "metrics.json").read_text()) | {"_dir": run}


@pytest.fixture(scope="module")
def audited(readmission, tmp_path_factory: pytest.TempPathFactory) -> dict:
    csv, _ = readmission
    out = tmp_path_factory.mktemp("runs")
    return _audit(
        out,
        csv,
        *BASE,
        *("--group-columns", "race,gender,age", "--id-column", "patient_nbr", "--groups", "race,gender,age,race*age"),
    )


def test_age_bands_are_groups_in_their_order_and_missing_race_is_counted(audited, readmission) -> None:
    _, frame = readmission
    test = frame[frame.split == "test"]
    age = audited["audits"]["age"]
    assert list(age["counts"]) == [b for b in AGE_BANDS if b in set(test.age)]  # [0-10) before [10-20) ...
    assert sum(age["counts"].values()) == len(test)
    race = audited["audits"]["race"]
    assert race["counts"]["(not stated)"] == int(test.race.isna().sum()) > 0
    assert "(not stated)" not in race["compared"]
    assert audited["source"]["patients"] == frame.patient_nbr.nunique()  # every row of the file


def test_the_threshold_is_chosen_on_validation_and_stated(audited, readmission) -> None:
    _, frame = readmission
    point = audited["operating_point"]
    assert point["source"] == "rule" and point["rule"] == "prevalence"
    t = point["thresholds"]["y"]
    val = frame[frame.split == "val"]
    assert (val.p >= t).mean() == pytest.approx(val.y.mean(), abs=0.01)  # says yes as often as the outcome occurs
    test = frame[frame.split == "test"]
    rows = {r["group"]: r for r in audited["audits"]["race"]["table"]}
    for group in ("Caucasian", "AfricanAmerican"):
        g = test[test.race == group]
        assert rows[group]["sensitivity"] == pytest.approx(((g.p >= t) & (g.y == 1)).sum() / (g.y == 1).sum())
        assert rows[group]["specificity"] == pytest.approx(((g.p < t) & (g.y == 0)).sum() / (g.y == 0).sum())
    report = (audited["_dir"] / "report.md").read_text()
    assert "**Operating point.**" in report and f"{t:.4g}" in report and "prevalence" in report


def test_one_label_has_no_macro_row(audited) -> None:
    for entry in audited["audits"].values():
        if "table" in entry:
            assert {r["label"] for r in entry["table"]} == {"y"}
            assert [r["label"] for r in entry["disparities"]] == ["y"]


def test_ratios_to_the_majority_group_with_four_fifths_verdicts(audited) -> None:
    race = audited["audits"]["race"]
    assert race["reference"]["choice"] == "majority"
    assert set(race["reference"]["groups"].values()) == {"Caucasian"}  # the largest group
    assert {r["metric"] for r in race["ratios"]} == {"sensitivity", "fpr", "ppv", "positive_rate"}
    table = {(r["group"]): r for r in race["table"]}
    for r in race["ratios"]:
        if r["metric"] == "sensitivity":
            assert r["ratio"] == pytest.approx(table[r["group"]]["sensitivity"] / table["Caucasian"]["sensitivity"])
        if r["group"] == "Caucasian":
            assert r["verdict"] == "reference"
        elif np.isfinite(r["ratio"]):
            inside = 0.8 <= r["ratio"] <= 1.25
            assert r["verdict"] == ("within" if inside else "below" if r["ratio"] < 0.8 else "above")
            assert r["ratio_lo"] <= r["ratio"] <= r["ratio_hi"]
    counted = sum(race["verdicts"].values())
    assert counted == sum(1 for r in race["ratios"] if r["verdict"] != "reference")


def test_small_intersections_are_suppressed_and_counted(audited) -> None:
    cross = audited["audits"]["race*age"]
    assert cross["suppressed"]["groups"] > 0 and cross["suppressed"]["rows"] > 0
    assert all(
        n >= 30 for g, n in cross["counts"].items() if g != "(not stated)" and g not in cross.get("one_class", {})
    )
    report = (audited["_dir"] / "report.md").read_text()
    assert f"{cross['suppressed']['groups']} group(s) of this intersection" in report


def test_the_three_plots_are_written_and_shown(audited) -> None:
    run = audited["_dir"]
    report = (run / "report.md").read_text()
    for kind in ("roc", "reliability", "disparity"):
        for grouping in ("race", "gender", "age"):
            assert (run / "figures" / f"{kind}_{grouping}.png").stat().st_size > 5_000
            assert f"figures/{kind}_{grouping}.png" in report


def test_a_mitigation_is_offered_only_when_it_improved_its_own_target(audited) -> None:
    mit = audited["mitigation"]
    assert set(mit["variants"]) == {"equalized_odds", "demographic_parity", "equal_sensitivity"}
    for name, v in mit["variants"].items():
        assert v["verdict"] == ("improved" if v["change_hi"] < 0 else "worse" if v["change_lo"] > 0 else "no change")
        assert (name in mit["offered"]) == (v["verdict"] == "improved")
        if v["verdict"] != "improved":
            assert v["why"]  # the measured reasons are given
    report = (audited["_dir"] / "report.md").read_text()
    offered = report.split("**Offered:**")[1].split("\n")[0]
    for name, v in mit["variants"].items():
        if v["verdict"] == "worse":
            assert name.replace("_", " ") not in offered
    assert "MEDFAIR" in report


def test_a_threshold_where_the_model_seldom_says_yes_is_explained(readmission, tmp_path: Path) -> None:
    csv, _ = readmission
    m = _audit(tmp_path, csv, *BASE, "--group-columns", "race", "--threshold", "0.5", "--mitigations", "equalized_odds")
    assert m["operating_point"]["source"] == "given" and m["operating_point"]["thresholds"] == {"y": 0.5}
    v = m["mitigation"]["variants"]["equalized_odds"]
    assert v["positive_rate_before"] < 0.02 < v["positive_rate_after"]  # at 0.5 this model almost never says yes
    if v["verdict"] != "improved":
        assert "moved the operating point" in v["why"][0]  # the first reason: before and after are not like with like
    assert "almost never says yes" in (m["_dir"] / "report.md").read_text()


def test_reference_choices_missing_as_group_and_other_rules(readmission, tmp_path: Path) -> None:
    csv, _ = readmission
    m = _audit(
        tmp_path / "a",
        csv,
        *BASE,
        *("--group-columns", "race,gender", "--reference-group", "best,race=AfricanAmerican"),
        *("--missing-as-group", "true", "--threshold-rule", "sensitivity:0.6", "--mitigate", "false"),
    )
    assert set(m["audits"]["race"]["reference"]["groups"].values()) == {"AfricanAmerican"}
    gender = m["audits"]["gender"]
    assert gender["reference"]["choice"] == "best"
    rows = {(r["metric"], r["group"]): r for r in gender["ratios"]}
    for metric, higher in (("sensitivity", True), ("fpr", False)):
        ref = gender["reference"]["groups"][metric]
        others = [r["value"] for (mm, _), r in rows.items() if mm == metric]
        assert rows[(metric, ref)]["value"] == (max(others) if higher else min(others))
    assert "(not stated)" in m["audits"]["race"]["compared"]  # kept as a group of its own
    assert m["operating_point"]["rule"] == "sensitivity:0.6"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--threshold", "0.3", "--threshold-rule", "youden"), "give --threshold or --threshold-rule, not both"),
        (("--threshold-rule", "recall:0.9"), "unknown threshold rule 'recall:0.9'"),
        (("--threshold", "1.5"), "--threshold must lie between 0 and 1"),
        (("--reference-group", "race=Martian"), "'Martian' is not a compared group of race"),
        (("--reference-group", "planet=Mars"), "'planet' is not an audited grouping"),
        (("--mitigations", "magic"), "unknown mitigation 'magic'"),
        (("--age-column", "gender"), "the age column 'gender' holds 3 distinct text values such as"),
        (("--group-columns", "encounter_id"), "holds"),
    ],
)
def test_bad_choices_are_named_before_anything_is_written(
    readmission, tmp_path: Path, capsys, extra: tuple[str, ...], message: str
) -> None:
    csv, _ = readmission
    argv = ["fairness", "--predictions", str(csv), *BASE, "--out", str(tmp_path / "runs"), "--progress", "false"]
    groups = () if "--group-columns" in extra else ("--group-columns", "race")
    assert main([*argv, *groups, *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_an_id_like_column_is_refused_as_a_grouping_with_what_it_holds(readmission) -> None:
    from medassist.fairness.groups import make_groupings
    from medassist.fairness.outside import OutsideSpec, read_outside

    csv, _ = readmission
    val, test, _ = read_outside(
        OutsideSpec(str(csv), label_column="y", score_column="p", split_column="split", group_columns=["encounter_id"])
    )
    with pytest.raises(MedAssistError, match=r"holds \d+ distinct numbers such as .*--age-column"):
        make_groupings(["encounter_id"], val, test, age_edges=[40, 60, 80], where="f")


def test_bands_and_rules_against_their_definitions() -> None:
    assert group_order({"80+", "<40", "60-79", "40-59"}) == ["<40", "40-59", "60-79", "80+"]
    assert group_order({"[10-20)", "[0-10)", "[90-100)"}) == ["[0-10)", "[10-20)", "[90-100)"]
    assert group_order({"F", "M", "[0-10)"}) == ["F", "M", "[0-10)"]  # not all bands: alphabetical
    assert band_key("site 3") is None and band_key(">=80") == (80, float("inf"))
    rng = np.random.default_rng(0)
    y = rng.binomial(1, 0.2, 2000)
    p = np.clip(rng.normal(0.3 + 0.3 * y, 0.15), 0, 1)
    fpr, tpr, th = roc_curve(y, p, drop_intermediate=False)
    assert choose(y, p, parse_rule("youden")) == pytest.approx(th[np.argmax(tpr - fpr)])
    t = choose(y, p, parse_rule("sensitivity:0.9"))
    assert (p[y == 1] >= t).mean() >= 0.9 and (p[y == 1] > t).mean() < 0.9  # the highest such threshold
    t = choose(y, p, parse_rule("specificity:0.9"))
    assert (p[y == 0] < t).mean() >= 0.9
    t = choose(y, p, parse_rule("prevalence"))
    assert (p >= t).mean() == pytest.approx(y.mean(), abs=0.002)


def test_real_heart_disease_predictions_with_age_bands(real_data_dir: Path, tmp_path: Path) -> None:
    """A logistic regression on the UCI heart disease patients, its predictions exported as a hospital would (age in
    text bands), audited as an outside model by sex, site and age band."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from medassist.data.heart_disease import heart_disease_present, load_heart_disease

    if not heart_disease_present(real_data_dir):
        pytest.skip("the UCI heart disease files are not in the data directory")
    data = load_heart_disease(real_data_dir, progress=False)
    rng = np.random.default_rng(0)
    split = rng.choice(np.array(["train", "val", "test"]), len(data), p=[0.5, 0.2, 0.3])
    features = ["age", "trestbps", "chol", "thalach", "oldpeak", "cp", "exang", "fbs"]
    y = (data["num"] > 0).astype(int).to_numpy()
    model = make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(data.loc[split == "train", features], y[split == "train"])
    decade = (data["age"] // 10 * 10).astype(int)
    frame = pd.DataFrame(
        {
            "split": split,
            "outcome": y,
            "risk": model.predict_proba(data[features])[:, 1].round(5),
            "sex": data["sex"],
            "site": data["site"],
            "age": [f"[{a}-{a + 10})" for a in decade],
        }
    )
    csv = tmp_path / "heart_predictions.csv"
    frame.to_csv(csv, index=False)
    m = _audit(
        tmp_path / "runs",
        csv,
        *("--label-column", "outcome", "--score-column", "risk", "--split-column", "split", "--n-boot", "100"),
        *("--group-columns", "sex,site,age", "--threshold-rule", "youden", "--min-group-size", "20"),
    )
    age = m["audits"]["age"]
    bands = list(age["counts"])
    assert bands == sorted(bands, key=band_key) and all(b.startswith("[") for b in bands)
    assert m["operating_point"]["rule"] == "youden"
    assert m["overall"]["outcome"]["auc"] > 0.75  # a plain model on real data
    assert {r["verdict"] for r in m["audits"]["sex"]["ratios"]} <= {"reference", "within", "below", "above"}
    assert (m["_dir"] / "figures" / "disparity_site.png").is_file()


@pytest.mark.parametrize("kind", ["sepsis", "readmission"])
def test_the_example_script_writes_a_file_the_audit_reads(tmp_path: Path, monkeypatch, kind: str) -> None:
    import runpy
    import sys

    from medassist.fairness.outside import OutsideSpec, read_outside

    csv = tmp_path / f"{kind}.csv"
    script = Path(__file__).resolve().parents[2] / "scripts" / "example_predictions.py"
    monkeypatch.setattr(sys, "argv", [str(script), str(csv), "--kind", kind, "--rows", "2000"])
    runpy.run_path(str(script), run_name="__main__")
    label, score = ("sepsis", "score") if kind == "sepsis" else ("y", "p")
    val, test, info = read_outside(
        OutsideSpec(str(csv), label_column=label, score_column=score, split_column="split", group_columns=["race"])
    )
    assert len(val) and len(test) and info["rows"]["total"] == 2000


def test_an_age_column_of_bands_is_kept_as_bands_and_a_numeric_one_is_cut(readmission) -> None:
    from medassist.fairness.groups import make_groupings
    from medassist.fairness.outside import OutsideSpec, read_outside

    csv, frame = readmission
    spec = {"label_column": "y", "score_column": "p", "split_column": "split", "age_column": "age"}
    val, test, _ = read_outside(OutsideSpec(str(csv), **spec))
    (age,) = make_groupings(["age"], val, test, age_edges=[40, 60, 80], where="f")
    assert age.order == [b for b in AGE_BANDS if b in set(test.age)]  # kept, in band order
    numeric = frame.assign(age=frame.age.str.slice(1, 3).str.rstrip("-").astype(int) + 5)  # [70-80) -> 75
    path = csv.with_name("numeric_age.csv")
    numeric.to_csv(path, index=False)
    val, test, _ = read_outside(OutsideSpec(str(path), **spec))
    (age,) = make_groupings(["age"], val, test, age_edges=[40, 60, 80], where="f")
    assert age.order == ["<40", "40-59", "60-79", "80+"]  # cut into --age-bands
