"""The fairness and ethics study: a finished study run audited across patient subgroups, mitigated, and written up.

It reads the audited run's saved predictions (``predictions/val|test.parquet``: the selected model's probabilities
and the splits' metadata) and never retrains to audit. Mitigation fits on the validation split only; the test
split is only evaluated. A run without demographics (MedMNIST) gets a report that says so, with the biases that
could exist and how one would test them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from medassist.config import DeviceOptions, RunOptions, option, to_dict
from medassist.errors import MedAssistError
from medassist.fairness.audit import Scored, audit_grouping, summary_label
from medassist.fairness.decisions import scored
from medassist.fairness.disparities import chance_summary, disparities
from medassist.fairness.groups import CROSS, NOT_STATED, Grouping, default_groups, make_groupings
from medassist.fairness.mitigate import MITIGATIONS
from medassist.fairness.outside import OutsideSpec, read_outside
from medassist.fairness.ratios import CHOICES, check_choices, ratio_table, reference_for
from medassist.fairness.threshold import DEFAULT_RULE, OperatingPoint, operating_point
from medassist.run import Run
from medassist.studies.fairness_mitigation import mitigate
from medassist.studies.predictions import INFO, read_predictions
from medassist.studies.runs import open_run
from medassist.train.device import on_device
from medassist.utils.steps import step


@dataclass
class FairnessConfig(DeviceOptions, RunOptions):
    """The fairness study: which run, which groups, how to mitigate, where to write."""

    run: str = option("", "the finished study run folder to audit (text or image study)")
    predictions: str = option(
        "", "or: a CSV/Parquet of any model's predictions to audit, one row per case (see the options below)"
    )
    label_column: str = option("label", "predictions file: the label column (binary 0/1, or the class)")
    score_column: str = option("", "predictions file, binary: the column of the positive class's probability")
    score_columns: list[str] = option(
        [],
        "predictions file, multi-class: one probability column per class (named by the class); multi-label: one "
        "per label, in the order of --label-columns",
    )
    label_columns: list[str] = option([], "predictions file, multi-label: one 0/1 column per label")
    split_column: str = option(
        "",
        "predictions file: a column marking rows val (fits the mitigation) or test (audited); without it, a "
        "seeded split",
    )
    group_columns: list[str] = option([], "predictions file: the metadata columns that define groups (sex, race, site)")
    age_column: str = option("", "predictions file: a column of ages in years, cut into --age-bands")
    id_column: str = option(
        "", "predictions file: a patient id; a patient with several rows is resampled whole (never written out)"
    )
    val_fraction: float = option(0.3, "predictions file without a split column: the share of rows for validation")
    groups: list[str] = option(
        [], "groupings to audit: metadata columns, or two joined by * (sex*age); default: sex, age, sex*age"
    )
    age_bands: list[float] = option([40.0, 60.0, 80.0], "ages (years) at which the age bands are cut")
    min_group_size: int = option(30, "groups with fewer test cases are listed with their counts but not compared")
    min_class_cases: int = option(
        5,
        "one-label audits: a group with fewer positive or fewer negative test cases is listed, not compared (its "
        "AUC, sensitivity or specificity would rest on a handful of patients)",
    )
    n_boot: int = option(1000, "bootstrap resamples (within groups) for the 95% intervals")
    missing_as_group: bool = option(
        False, "cases whose group column is empty form the group '(not stated)' instead of being left out"
    )
    threshold: list[float] = option(
        [], "the model's decision threshold: one for every label, or one per label (instead of --threshold-rule)"
    )
    threshold_rule: str = option(
        "",
        "choose the threshold on the validation rows: youden | sensitivity:0.9 | specificity:0.9 | prevalence "
        "(default for a predictions file: prevalence; for a run: its own thresholds, or the most probable class)",
    )
    reference_group: list[str] = option(
        ["majority"],
        "the group each ratio is taken to: majority | best | GROUP | grouping=GROUP (one per grouping)",
    )
    tolerance: float = option(0.8, "ratios within [tolerance, 1/tolerance] are within the band (four-fifths: 0.8)")
    mitigate: bool = option(True, "mitigate: post-processing fitted on validation, and the balanced retrain")
    mitigate_group: str = option("", "the grouping mitigation balances (default: the first audited grouping)")
    mitigations: list[str] = option(
        ["equalized_odds", "demographic_parity", "equal_sensitivity"],
        "post-processing tried: equalized_odds and demographic_parity (fairlearn's ThresholdOptimizer), "
        "equal_sensitivity (per-group thresholds)",
    )
    objective: str = option(
        "balanced_accuracy_score", "ThresholdOptimizer objective: balanced_accuracy_score | accuracy_score"
    )
    retrain: bool = option(True, "retrain the selected model once with group x label balanced sample weights")
    synth_run: str = option("", "a synthetic-data run whose privacy numbers the ethics report quotes")
    deploy_run: str = option("", "a deployment run whose numbers the ethics report quotes")
    seed: int = option(0, "random seed (bootstrap, randomised thresholds)")


def _stage(cfg: FairnessConfig, text: str) -> None:
    step("fairness", text, show=cfg.progress)


def check_source(path: str) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """The audited run folder, its metrics and its predictions' description.

    Raises:
        MedAssistError: no such run, an unfinished run, a run of another study kind, or one without predictions.
    """
    if not path:
        raise MedAssistError("give the run to audit: medassist fairness --run runs/text-padchest-<time>")
    expect = (
        "the fairness audit reads a text, image or tabular study run (medassist text/image/tabular), or a "
        "predictions file (--predictions)"
    )
    run = open_run(path, kinds=("text", "image", "tabular"), expect=expect)
    if not run.has_predictions:
        raise MedAssistError(
            f"{run.dir} has no {INFO}: it was written before studies saved their predictions; run its study again"
        )
    return run.dir, run.metrics, run.prediction_info


def _operating_point(cfg: FairnessConfig, info: dict[str, Any], val: pd.DataFrame) -> OperatingPoint:
    """The thresholds the audit decides at (see :mod:`medassist.fairness.threshold`)."""
    s = scored(val, info)
    outside = info["kind"] == "outside"
    multi_label = info["task"] == "multi-label"
    return operating_point(
        s.labels,
        s.y,
        s.p,
        given=list(cfg.threshold),
        rule=cfg.threshold_rule,
        default_rule=DEFAULT_RULE if outside else "",
        run_thresholds=(info.get("thresholds") or [0.5] * len(s.labels)) if multi_label and not outside else None,
        multiclass=info["task"] == "multi-class" and len(info["label_names"]) > 2,
    )


@on_device
def run_fairness_study(cfg: FairnessConfig) -> Path:
    """Audit ``cfg.run``; write the fairness run folder and its report; return the folder."""
    if cfg.min_group_size < 1 or cfg.n_boot < 1:
        raise MedAssistError(f"min_group_size and n_boot must be at least 1 (got {cfg.min_group_size}, {cfg.n_boot})")
    if cfg.predictions:
        if cfg.run:
            raise MedAssistError("give either --run (a medassist study run) or --predictions (a file), not both")
        val, test, info = read_outside(_outside_spec(cfg))
        run_dir, source_metrics = Path(cfg.predictions), {"dataset": info["dataset"]}
        if cfg.mitigate and val.empty:
            raise MedAssistError(
                f"{cfg.predictions}: no rows are marked val, and the mitigation is fitted on validation rows; mark "
                "some val in the split column, or run with --mitigate false"
            )
    else:
        run_dir, source_metrics, info = check_source(cfg.run)
        val, test = read_predictions(run_dir, "val"), read_predictions(run_dir, "test")
    meta_cols = list(info.get("metadata_columns", []))
    names = cfg.groups or (
        meta_cols
        if info["kind"] == "outside"
        else (["site"] if info["kind"] == "tabular" and "site" in meta_cols else []) + default_groups(meta_cols)
    )
    groupings = (
        make_groupings(
            names, val, test, age_edges=cfg.age_bands, where=str(run_dir), missing_as_group=cfg.missing_as_group
        )
        if names
        else []
    )  # explicit groups that the metadata lacks are refused here, before any folder is made
    unknown = [m for m in cfg.mitigations if m not in MITIGATIONS]
    if unknown:
        raise MedAssistError(f"unknown mitigation '{unknown[0]}'; choose from {', '.join(MITIGATIONS)}")
    point = _operating_point(cfg, info, val)
    s_val, s_test = scored(val, info, point), scored(test, info, point)
    sides = {g.name: _compared(s_test, g, cfg) for g in groupings}
    check_choices(list(cfg.reference_group), {name: c for name, (c, _) in sides.items() if len(c) >= 2})
    dataset = info.get("dataset") or source_metrics.get("dataset", "run")
    run = Run.create(cfg.out, f"fairness-{dataset}", to_dict(cfg), kind="fairness")
    with run:
        _study(run, cfg, run_dir, source_metrics, info, (val, s_val), (test, s_test), groupings, sides, point)
        from medassist.report.fairness import write_fairness_report

        write_fairness_report(run.dir)
    return run.dir


def _outside_spec(cfg: FairnessConfig) -> OutsideSpec:
    return OutsideSpec(
        path=cfg.predictions,
        label_column=cfg.label_column,
        score_column=cfg.score_column,
        score_columns=list(cfg.score_columns),
        label_columns=list(cfg.label_columns),
        split_column=cfg.split_column,
        group_columns=list(cfg.group_columns),
        age_column=cfg.age_column,
        id_column=cfg.id_column,
        val_fraction=cfg.val_fraction,
        seed=cfg.seed,
    )


def _study(
    run: Run,
    cfg: FairnessConfig,
    run_dir: Path,
    source_metrics: dict[str, Any],
    info: dict[str, Any],
    val: tuple[pd.DataFrame, Scored],
    test: tuple[pd.DataFrame, Scored],
    groupings: list[Grouping],
    sides: dict[str, tuple[list[str], dict[str, str]]],
    point: OperatingPoint,
) -> None:
    """The audit, its figures and the mitigation, written into ``run``. ``val`` and ``test``: each split's frame
    and its decisions at ``point``; ``sides``: per grouping, the compared groups and the one-class groups."""
    from medassist.fairness.ethics import no_demographics_note, write_ethics
    from medassist.fairness.plots import plot_disparity, plot_group_metrics, plot_group_reliability, plot_group_roc

    (val, s_val), (test, s_test) = val, test
    source = {
        "run": str(run_dir),
        "kind": info["kind"],
        "task": info["task"],
        "dataset": info.get("dataset"),
        "model": info["model"],
        "labels": s_test.labels,
        "n_val": len(val),
        "n_test": len(test),
        "metadata_columns": info.get("metadata_columns", []),
        "stated": {c: int(test[c].notna().sum()) for c in info.get("metadata_columns", []) if c in ("sex", "age")},
    }
    if info["kind"] == "outside":  # a file, not a run: what is known of it
        source.update(run=info["source_file"], split_rule=info["split_rule"], rows=info["rows"])
        if info.get("cluster_column"):
            source["patients"] = info["patients"]
    data_info = (json.loads((run_dir / "data.json").read_text()) if (run_dir / "data.json").is_file() else {}).get(
        "info", {}
    )
    if "n_with_sex" in data_info:  # Open-i: how many of all its reports state sex and age
        source["dataset_stated"] = {
            "reports": data_info.get("n_kept"),
            "sex": data_info["n_with_sex"],
            "age": data_info.get("n_with_age"),
        }
    metrics: dict[str, Any] = {
        "source": source,
        "summary_label": summary_label(s_test.labels),
        "operating_point": point.to_dict(),
        "min_group_size": cfg.min_group_size,
        "n_boot": cfg.n_boot,
        "interval_level_percent": 95,
        "per_patients": 1000,
        "tolerance": cfg.tolerance,
        "demographics": bool(groupings),
        "audits": {},
        "timing": {},
    }
    if not groupings:
        metrics["no_demographics"] = no_demographics_note(info, source)
        metrics["clinical"] = _clinical(s_test)
        run.write_metrics(metrics)
        write_ethics(run, metrics, source_metrics, cfg)
        return

    _stage(cfg, f"audit of {len(groupings)} groupings x {len(s_test.labels)} labels, {cfg.n_boot} resamples")
    t0 = time.perf_counter()
    cache: dict = {}
    audits = {}
    for g in groupings:
        counts = {str(k): int(v) for k, v in g.counts().items()}
        compared, one_class = sides[g.name]
        small = {k: v for k, v in counts.items() if k not in compared}
        entry: dict[str, Any] = {"hidden_rows": int(sum(small.values()))}
        if CROSS in g.name:  # an intersection: its small cells could single patients out, so they are not listed
            tiny = {k: v for k, v in small.items() if k != NOT_STATED and k not in one_class}
            if tiny:
                entry["suppressed"] = {"groups": len(tiny), "rows": int(sum(tiny.values()))}
                counts = {k: v for k, v in counts.items() if k not in tiny}
                small = {k: v for k, v in small.items() if k not in tiny}
        entry.update({"counts": counts, "compared": compared, "not_compared": small})
        if one_class:
            entry["one_class"] = one_class
        run.write_table(f"groups_{_slug(g.name)}", pd.DataFrame({"group": list(counts), "test_cases": counts.values()}))
        if len(compared) < 2:
            entry["note"] = (
                f"fewer than two groups reach {cfg.min_group_size} test cases; the groups are listed, not compared"
            )
            metrics["audits"][g.name] = entry
            continue
        audit = audit_grouping(
            s_test, g.test, g.name, counts=counts, compared=compared, n_boot=cfg.n_boot, seed=cfg.seed, cache=cache
        )
        table, _ = disparities(audit, s_test, g.test)
        reference = reference_for(g.name, compared, list(cfg.reference_group))
        ratios = ratio_table(audit, s_test.labels, reference, cfg.tolerance)
        audits[g.name] = (g, audit, table, ratios)
        run.write_table(f"audit_{_slug(g.name)}", audit.table)
        run.write_table(f"disparities_{_slug(g.name)}", table)
        run.write_table(f"ratios_{_slug(g.name)}", ratios)
        for label, frame in audit.frames.items():
            if label == s_test.labels[0]:  # fairlearn's own view of the first label, overall and by group
                by = frame.by_group.reset_index().rename(columns={"sensitive_feature_0": "group"})
                run.write_table(f"metricframe_{_slug(g.name)}", by)
        verdicts = ratios[ratios.verdict != "reference"].verdict.value_counts()
        entry.update(
            {
                "table": audit.table.to_dict("records"),
                "disparities": table.to_dict("records"),
                "chance": chance_summary(table),
                "reference": {
                    "choice": reference if reference in CHOICES else "named",
                    "groups": ratios.groupby("metric", sort=False).reference.first().to_dict(),
                },
                "ratios": ratios.to_dict("records"),
                "verdicts": {v: int(verdicts.get(v, 0)) for v in ("within", "below", "above", "undefined")},
            }
        )
        metrics["audits"][g.name] = entry
    metrics["timing"]["audit_s"] = time.perf_counter() - t0
    _stage(cfg, f"audit done in {metrics['timing']['audit_s']:.1f} s; figures")
    for name, (g, audit, _, ratios) in audits.items():
        slug = _slug(name)
        plot_group_metrics(audit.table, run.figure(f"metrics_{slug}"), title=f"by {name}")
        plot_group_reliability(s_test, g.test, audit.compared, run.figure(f"reliability_{slug}"), title=name)
        plot_group_roc(s_test, g.test, audit.compared, run.figure(f"roc_{slug}"), title=name)
        plot_disparity(ratios, run.figure(f"disparity_{slug}"), title=name, tolerance=cfg.tolerance)
    metrics["overall"] = _overall(s_test, next(iter(audits.values()))[1].table) if audits else {}
    metrics["clinical"] = _clinical(s_test)

    if cfg.mitigate and audits:
        name = cfg.mitigate_group or next(iter(audits))
        if name not in audits:
            raise MedAssistError(
                f"mitigate_group '{name}' is not an audited grouping with two compared groups; "
                f"choose one of {', '.join(audits)}"
            )
        t1 = time.perf_counter()
        g, audit = audits[name][:2]
        metrics["mitigation"] = mitigate(run, cfg, run_dir, info, s_val, s_test, g, audit, point, stage=_stage)
        metrics["timing"]["mitigation_s"] = time.perf_counter() - t1
    write_ethics(run, metrics, source_metrics, cfg)


def _compared(s: Scored, g: Grouping, cfg: FairnessConfig) -> tuple[list[str], dict[str, str]]:
    """The groups compared (large enough, and in a one-label audit with enough positive and negative test cases),
    and the large groups left out for too few of one class, with the reason."""
    large = g.compared(cfg.min_group_size)
    one_class = _one_class(s, g, large, cfg.min_class_cases)
    return [c for c in large if c not in one_class], one_class


def _one_class(s: Scored, g: Grouping, groups: list[str], min_cases: int = 1) -> dict[str, str]:
    """The groups of a one-label audit with fewer than ``min_cases`` positive or negative test cases: AUC,
    sensitivity or specificity are undefined there or rest on a handful of patients, so they are listed, not
    compared."""
    if len(s.labels) != 1:
        return {}
    y, gt = s.y[:, 0], g.test.to_numpy(dtype=object)
    out = {}
    for c in groups:
        yc = y[gt == c]
        pos, neg = int(yc.sum()), int(len(yc) - yc.sum())
        if min(pos, neg) < max(1, min_cases):
            which = "positives" if pos <= neg else "negatives"
            count = min(pos, neg)
            out[c] = f"no {which}" if count == 0 else f"{count} {which[:-1] if count == 1 else which}"
    return out


def _slug(name: str) -> str:
    return name.replace("*", "_x_").replace(" ", "_")


def _overall(s: Scored, table: pd.DataFrame) -> dict[str, Any]:
    """Every overall metric (and interval) per label and macro."""
    rows = table[table.group == "overall"].drop(columns=["grouping", "group"])
    return {str(r.pop("label")): r for r in rows.to_dict("records")} | {"n": len(s.y)}


def _clinical(s: Scored) -> list[dict[str, Any]]:
    """Per label, errors at the operating point as cases per 1,000 patients."""
    n = len(s.y)
    out = []
    for k, label in enumerate(s.labels):
        y, d = s.y[:, k], s.d[:, k]
        out.append(
            {
                "label": label,
                "prevalence_per_1000": round(1000 * float(y.mean()), 1),
                "false_negatives_per_1000": round(1000 * float(((y == 1) & (d == 0)).sum()) / n, 1),
                "false_positives_per_1000": round(1000 * float(((y == 0) & (d == 1)).sum()) / n, 1),
            }
        )
    return out
