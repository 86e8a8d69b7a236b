"""The fairness study's pieces on small synthetic predictions: metrics against scikit-learn, planted disparities,
small groups, ThresholdOptimizer on validation only, the ethics report's numbers, and bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss, f1_score, precision_score, recall_score, roc_auc_score

from medassist.errors import MedAssistError
from medassist.evaluate.calibration import expected_calibration_error
from medassist.fairness import (
    Scored,
    audit_grouping,
    balanced_weights,
    disparities,
    holm,
    make_groupings,
    post_process,
    weighted_metrics,
)
from medassist.run import Run
from medassist.studies.fairness import FairnessConfig, run_fairness_study
from medassist.studies.predictions import write_predictions


def _scored(n: int, k: int, *, seed: int, noise: np.ndarray | None = None) -> Scored:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, k)) < 0.3).astype(np.int64)
    scale = np.ones((n, k)) if noise is None else noise
    p = 1 / (1 + np.exp(-((2 * y - 1) * 1.5 + rng.normal(0, 1, (n, k)) * scale)))
    p = np.round(p, 3)  # ties, as real scores have
    return Scored([f"finding{j}" for j in range(k)], y, p, (p >= 0.5).astype(np.int64))


def _audit(s: Scored, g: pd.Series, compared: list[str], n_boot: int = 300):
    return audit_grouping(s, g, "sex", counts={}, compared=compared, n_boot=n_boot, seed=0)


def test_per_group_metrics_equal_sklearn_on_each_groups_rows() -> None:
    s = _scored(300, 3, seed=0)
    g = pd.Series(np.where(np.arange(300) % 3 == 0, "F", "M"), dtype=object)
    a = _audit(s, g, ["F", "M"], n_boot=50)
    for group in ("F", "M"):
        rows = np.flatnonzero(g.to_numpy() == group)
        for k, label in enumerate(s.labels):
            r = a.table[(a.table.group == group) & (a.table.label == label)].iloc[0]
            y, p, d = s.y[rows, k], s.p[rows, k], s.d[rows, k]
            want = {
                "n": len(rows),
                "prevalence": y.mean(),
                "auc": roc_auc_score(y, p),
                "sensitivity": recall_score(y, d),
                "specificity": recall_score(1 - y, 1 - d),
                "ppv": precision_score(y, d),
                "f1": f1_score(y, d),
                "brier": brier_score_loss(y, p),
                "ece": expected_calibration_error(y, np.column_stack([1 - p, p])),
                "accuracy": np.mean(y == d),
            }
            for m, v in want.items():
                assert r[m] == pytest.approx(v, abs=1e-12), (group, label, m)
            # the bootstrap's weighted metrics, at weight 1, are the same numbers
            w = weighted_metrics(s.rows(rows), np.ones((1, len(rows)), dtype=np.float32))
            for m, v in want.items():
                assert w[m][0, k] == pytest.approx(v, abs=1e-6), ("weighted", m)
            assert r["auc_lo"] <= r["auc"] <= r["auc_hi"]
        macro = a.table[(a.table.group == group) & (a.table.label == "macro")].iloc[0]
        sub = a.table[(a.table.group == group) & (a.table.label != "macro")]
        assert macro["auc"] == pytest.approx(sub["auc"].mean())
    # fairlearn's MetricFrame is the source of the per-group values
    frame = a.frames[s.labels[0]]
    assert frame.by_group.loc["F", "auc"] == pytest.approx(roc_auc_score(s.y[g == "F", 0], s.p[g == "F", 0]))


def test_planted_disparity_is_found_and_none_is_flagged_without_one() -> None:
    n = 800
    g = pd.Series(np.where(np.arange(n) < n // 2, "F", "M"), dtype=object)
    noise = np.ones((n, 3))
    noise[n // 2 :, 0] = 3.0  # the model is much worse for M on the first finding only
    planted = _scored(n, 3, seed=1, noise=noise)
    table, _ = disparities(_audit(planted, g, ["F", "M"]), planted, g)
    by = table.set_index("label")
    assert bool(by.loc["finding0", "auc_disparity"]) and by.loc["finding0", "worst_group"] == "M"
    assert by.loc["finding0", "auc_gap_lo"] > 0
    assert not by.loc[["finding1", "finding2"], "auc_disparity"].any()

    fair = _scored(n, 3, seed=2)
    table, _ = disparities(_audit(fair, g, ["F", "M"]), fair, g)
    assert not table["auc_disparity"].any() and not table["eo_disparity"].any() and not table["dp_disparity"].any()


def test_tiny_groups_are_listed_but_not_compared() -> None:
    meta = pd.DataFrame(
        {"sex": ["F"] * 50 + ["M"] * 45 + ["X"] * 5, "age": np.r_[np.full(60, 30.0), np.full(40, 85.0)]}
    )
    (sex, age) = make_groupings(["sex", "age"], meta, meta, age_edges=[40, 60, 80], where="run")
    assert sex.counts().to_dict() == {"F": 50, "M": 45, "X": 5}
    assert sex.compared(30) == ["F", "M"]
    assert age.order == ["<40", "80+"] and age.counts().to_dict() == {"<40": 60, "80+": 40}
    s = _scored(100, 2, seed=3)
    a = audit_grouping(s, sex.test, "sex", counts={}, compared=sex.compared(30), n_boot=20, seed=0)
    assert set(a.table.group) == {"overall", "F", "M"}


def test_threshold_optimizer_is_fitted_on_validation_only(monkeypatch) -> None:
    from fairlearn.postprocessing import ThresholdOptimizer

    val, test = _scored(400, 2, seed=4), _scored(300, 2, seed=5)
    g_val = pd.Series(np.where(np.arange(400) % 2 == 0, "F", "M"), dtype=object)
    g_test = pd.Series(np.where(np.arange(300) % 2 == 0, "F", "M"), dtype=object)
    seen: list[np.ndarray] = []
    real_fit = ThresholdOptimizer.fit

    def spy(self, x, y, **kw):
        seen.append(np.asarray(x)[:, 0].copy())
        return real_fit(self, x, y, **kw)

    monkeypatch.setattr(ThresholdOptimizer, "fit", spy)
    kw = {"objective": "balanced_accuracy_score", "seed": 0}
    out, skipped = post_process("equalized_odds", val, g_val, ["F", "M"], {"test": (test, g_test)}, **kw)
    assert not skipped and len(seen) == 2
    for k, x in enumerate(seen):
        np.testing.assert_array_equal(x, val.p[:, k])
    # test labels play no part: shuffling them leaves every decision as it was
    shuffled = Scored(test.labels, test.y[::-1].copy(), test.p, test.d)
    again, _ = post_process("equalized_odds", val, g_val, ["F", "M"], {"test": (shuffled, g_test)}, **kw)
    np.testing.assert_array_equal(out["test"].d, again["test"].d)


def test_per_group_thresholds_equalise_validation_sensitivity() -> None:
    n = 2000
    g = pd.Series(np.where(np.arange(n) % 2 == 0, "F", "M"), dtype=object)
    noise = np.ones((n, 1))
    noise[g.to_numpy() == "M"] = 2.5  # the model is worse for M: at one threshold its sensitivity differs
    val = _scored(n, 1, seed=6, noise=noise)
    out, skipped = post_process(
        "equal_sensitivity", val, g, ["F", "M"], {"val": (val, g)}, objective="balanced_accuracy_score", seed=0
    )
    tpr = lambda s, c: s.d[(g.to_numpy() == c) & (s.y[:, 0] == 1), 0].mean()  # noqa: E731
    target = val.d[val.y[:, 0] == 1, 0].mean()
    assert abs(tpr(val, "F") - tpr(val, "M")) > 0.05  # before: unequal
    for c in ("F", "M"):
        assert tpr(out["val"], c) == pytest.approx(target, abs=0.01)  # after: each group at the overall sensitivity
    np.testing.assert_array_equal(out["val"].p, val.p)  # the scores are untouched


def test_holm_and_balanced_weights() -> None:
    np.testing.assert_allclose(holm(np.array([0.01, 0.04, 0.03])), [0.03, 0.06, 0.06])
    y = np.array([[1], [0], [0], [0], [1], [0]])
    g = pd.Series(["F", "F", "F", "M", "M", None], dtype=object)
    w = balanced_weights(y, g, multilabel=True)
    cells = pd.DataFrame({"g": g.fillna("?"), "y": y[:, 0], "w": w[:, 0]}).groupby(["g", "y"])["w"].sum()
    np.testing.assert_allclose(cells.to_numpy(), cells.iloc[0])
    assert w.mean() == pytest.approx(1.0)


def _source_run(tmp_path: Path, meta: pd.DataFrame | None, *, status: str = "complete", seed: int = 0) -> Path:
    """A finished text-study run folder with saved predictions (what `medassist text` writes)."""
    n = len(meta) if meta is not None else 600
    run = Run.create(tmp_path / "src", "text-synthetic", {"dataset": "synthetic"})
    labels = ["normal", "effusion", "cardiomegaly"]
    splits = {}
    for i, split in enumerate(("val", "test")):
        s = _scored(n, 3, seed=seed + i)
        splits[split] = (s.y, s.p, meta)
    write_predictions(
        run,
        task="multi-label",
        label_names=labels,
        splits=splits,
        model="tfidf",
        kind="text",
        extra={"dataset": "synthetic", "thresholds": [0.5, 0.5, 0.5]},
    )
    run.write_json("metrics.json", {"dataset": "synthetic", "comparison": [], "best_model": "tfidf"})
    run.set_status(status)
    return run.dir


def _meta(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"report_id": [f"r{i}" for i in range(n)], "sex": rng.choice(["F", "M"], n), "age": rng.uniform(20, 95, n)}
    )


def _numbers(text: str) -> list[str]:
    """The numbers of a text, list markers ("1. ") left out."""
    text = re.sub(r"(?m)^\d+\. ", "", text)
    return re.findall(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?", text)


def _metric_values(obj, out: list[float]) -> list[float]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _metric_values(k, out)
            _metric_values(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _metric_values(v, out)
    elif isinstance(obj, bool) or obj is None:
        pass
    elif isinstance(obj, (int, float)):
        out.append(float(obj))
    elif isinstance(obj, str):
        out.extend(float(x.replace(",", "")) for x in _numbers(obj))
    return out


def test_ethics_report_length_and_every_number_from_the_metrics(tmp_path: Path) -> None:
    src = _source_run(tmp_path, _meta())
    cfg = FairnessConfig(run=str(src), out=str(tmp_path / "out"), n_boot=100, retrain=False, progress=False)
    out = run_fairness_study(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    text = (out / "ethics.md").read_text().split("\n", 1)[1]
    assert 400 <= len(text.split()) <= 600
    values = _metric_values(metrics, [])
    assert values
    for token in _numbers(text):
        v = float(token.replace(",", ""))
        decimals = len(token.split(".")[1]) if "." in token else 0
        assert any(abs(x - v) <= 0.5 * 10**-decimals + 1e-9 for x in values), token
    assert (out / "report.md").is_file() and (out / "figures" / "metrics_sex.png").is_file()
    assert set(metrics["audits"]) == {"sex", "age", "sex*age"}
    variants = metrics["mitigation"]["variants"]
    assert set(variants) == {"equalized_odds", "demographic_parity", "equal_sensitivity"}
    for v in variants.values():  # the verdict follows the paired interval of the change in its own target
        assert v["verdict"] == ("improved" if v["change_hi"] < 0 else "worse" if v["change_lo"] > 0 else "no change")
    assert metrics["mitigation"]["offered"] == [n for n, v in variants.items() if v["verdict"] == "improved"]
    assert (src / "predictions" / "test.parquet").is_file()  # the audited run is only read


def test_run_without_demographics_says_so(tmp_path: Path) -> None:
    src = _source_run(tmp_path, None)
    out = run_fairness_study(FairnessConfig(run=str(src), out=str(tmp_path / "out"), n_boot=20, progress=False))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["demographics"] is False and not metrics["audits"]
    report = (out / "report.md").read_text()
    assert "no demographics" in report.lower() and "how to test" in report


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no_column", "no metadata column 'site'"),
        ("one_value", "only the value 'F'"),
        ("unfinished", "not complete"),
        ("other_kind", "deployment run"),
        ("no_predictions", "no predictions/info.json"),
    ],
)
def test_bad_input_gets_a_clear_error(tmp_path: Path, case: str, message: str) -> None:
    meta = _meta(100)
    groups: list[str] = []
    if case == "no_column":
        groups = ["site"]
    if case == "one_value":
        meta["sex"], groups = "F", ["sex"]
    src = _source_run(tmp_path, meta, status="running" if case == "unfinished" else "complete")
    if case == "other_kind":
        (src / "metrics.json").write_text(json.dumps({"variants": []}))
    if case == "no_predictions":
        (src / "predictions" / "info.json").unlink()
    with pytest.raises(MedAssistError, match=re.escape(message)):
        run_fairness_study(FairnessConfig(run=str(src), groups=groups, out=str(tmp_path / "out"), progress=False))
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_model_card_has_every_section_and_the_subgroup_audit(tmp_path: Path) -> None:
    from medassist.deploy.model_card import model_card

    src = _source_run(tmp_path, _meta())
    (src / "data.json").write_text(json.dumps({"name": "padchest", "sizes": {"train": 1, "val": 600, "test": 600}}))
    meta = {
        "name": "b",
        "kind": "text",
        "task": "multi-label",
        "labels": ["normal"],
        "threshold": [0.5],
        "metrics": {"macro_auc": 0.9},
        "info": {"source_run": str(src), "model": "bilstm"},
    }
    card = model_card(meta)
    for head in (
        "Intended use",
        "Out-of-scope use",
        "Training data",
        "Evaluation",
        "By subgroup",
        "Calibration",
        "Limitations",
        "Ethical considerations",
    ):
        assert f"## {head}" in card or f"### {head}" in card, head
    assert "Not a medical device" in card and "CC BY-SA 4.0" in card and "Not audited by subgroup" in card
    run_fairness_study(FairnessConfig(run=str(src), out=str(src.parent), n_boot=20, mitigate=False, progress=False))
    card = model_card(meta)
    assert "From the fairness run" in card and "sex = F" in card
