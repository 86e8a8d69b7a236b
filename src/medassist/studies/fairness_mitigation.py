"""Mitigation in the fairness study, reported honestly: each one fitted on validation, evaluated on test with paired
intervals, and marked improved, no change or worse on the disparity it targets.

Only an improved mitigation is offered. For one that is not, the study records what explains it: the disparity
on validation before and after (a rule that closes a gap on validation but not on test met a validation/test
shift or overfitted small groups), the smallest group's validation positives, and how far it moved the
operating point (a disparity measured where every group's rate is near zero is small for that reason alone).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medassist.errors import MedAssistError
from medassist.fairness.audit import Scored, audit_grouping, interval, macro, summary_label
from medassist.fairness.decisions import scored
from medassist.fairness.disparities import disparities
from medassist.fairness.groups import Grouping
from medassist.fairness.mitigate import MITIGATIONS, TARGET_NAMES, post_process
from medassist.fairness.threshold import OperatingPoint, choose, parse_rule
from medassist.run import Run

SMALL_POSITIVES = 50  # a compared group with fewer validation positives has noisy fitted thresholds
MEASURES = ("auc", "accuracy", "positive_rate", "worst_group_auc", "auc_gap", "eod", "dpd", "tpr_gap")
BIASED = ("eod", "dpd", "tpr_gap")  # largest-minus-smallest differences: bias-corrected intervals


def mitigate(
    run: Run,
    cfg: Any,
    run_dir: Path,
    info: dict[str, Any],
    s_val: Scored,
    s_test: Scored,
    g: Grouping,
    before_audit: Any,
    point: OperatingPoint,
    *,
    stage: Callable[[Any, str], None],
) -> dict[str, Any]:
    """Before and after of every mitigation (post-processing, and the balanced retrain where it applies)."""
    from medassist.studies.fairness_retrain import retrain_weighted

    compared = before_audit.compared
    variants: dict[str, Scored] = {"before": s_test}
    on_val: dict[str, Scored] = {"before": s_val}
    targets: dict[str, str] = {}
    notes: dict[str, Any] = {}
    for name in cfg.mitigations:
        what = "ThresholdOptimizer" if MITIGATIONS[name][0] else "per-group thresholds"
        stage(cfg, f"mitigation by {g.name}: {name} ({what}) fitted on validation")
        out, skipped = post_process(
            name,
            s_val,
            g.val,
            compared,
            {"val": (s_val, g.val), "test": (s_test, g.test)},
            objective=cfg.objective,
            seed=cfg.seed,
        )
        variants[name], on_val[name], targets[name] = out["test"], out["val"], MITIGATIONS[name][1]
        notes[name] = {"fitted_on": "validation", "skipped_labels": skipped}
    if cfg.retrain and info["kind"] == "outside":
        notes["balanced_retrain"] = {
            "not_run": "the audited model is outside medassist: its scores are here, not the model or its training "
            "data, so it cannot be retrained; only post-processing applies"
        }
    elif cfg.retrain and info["kind"] == "tabular":
        notes["balanced_retrain"] = {
            "not_run": "the balanced retrain covers the models of the training engine (text and image studies); a "
            "tabular study's scikit-learn model is mitigated by post-processing only"
        }
    elif cfg.retrain:
        stage(cfg, f"mitigation by {g.name}: one retrain with group x label balanced weights")
        try:
            p_val, p_test, facts = retrain_weighted(
                run_dir, info, g.name, age_edges=cfg.age_bands, work=run.dir / "retrain", progress=cfg.progress
            )
            if len(p_test) != len(s_test.y) or len(p_val) != len(s_val.y):
                raise MedAssistError(
                    f"{run_dir}: its data no longer match the saved predictions ({len(p_test)} test cases now, "
                    f"{len(s_test.y)} saved); audit a fresh run of the study"
                )
            frame_val, frame_test = _as_frame(p_val, info, s_val), _as_frame(p_test, info, s_test)
            retrained_info = {**info, "thresholds": _thresholds(frame_val, info)}
            retrained_point = _retrained_point(point, scored(frame_val, retrained_info))
            variants["balanced_retrain"] = scored(frame_test, retrained_info, retrained_point)
            on_val["balanced_retrain"] = scored(frame_val, retrained_info, retrained_point)
            targets["balanced_retrain"] = "eod"
            notes["balanced_retrain"] = facts
        except MedAssistError as exc:
            notes["balanced_retrain"] = {"not_run": str(exc)}

    summary = {}
    for name, sc in variants.items():
        a = audit_grouping(sc, g.test, g.name, counts={}, compared=compared, n_boot=cfg.n_boot, seed=cfg.seed + 1)
        table, boot = disparities(a, sc, g.test)
        summary[name] = _summary(a, table, boot, sc.labels)
    base = summary["before"]
    rows = []
    for name, vals in summary.items():
        for metric, (v, reps) in vals.items():
            lo, hi = _ci(reps, v if metric in BIASED else None)
            row = {"variant": name, "metric": metric, "value": v, "value_lo": lo, "value_hi": hi}
            if name != "before":
                d_lo, d_hi = _ci(reps - base[metric][1])
                row.update({"change": v - base[metric][0], "change_lo": d_lo, "change_hi": d_hi})
            rows.append(row)
    table = pd.DataFrame(rows)
    run.write_table("mitigation", table)
    found = {(r["variant"], r["metric"]): r for r in rows}
    smallest = _smallest(s_val, g, compared)
    verdicts = {}
    for name, target in targets.items():
        r = found[(name, target)]
        verdict = "improved" if r["change_hi"] < 0 else "worse" if r["change_lo"] > 0 else "no change"
        auc, acc = found[(name, "auc")], found[(name, "accuracy")]
        v = {
            "target": target,
            "before": base[target][0],
            "after": r["value"],
            "change": r["change"],
            "change_lo": r["change_lo"],
            "change_hi": r["change_hi"],
            "verdict": verdict,
            "auc_change": auc["change"],
            "auc_change_lo": auc["change_lo"],
            "auc_change_hi": auc["change_hi"],
            "accuracy_change": acc["change"],
            "accuracy_change_lo": acc["change_lo"],
            "accuracy_change_hi": acc["change_hi"],
            "positive_rate_before": base["positive_rate"][0],
            "positive_rate_after": summary[name]["positive_rate"][0],
            "validation_before": _point_disparity(on_val["before"], g.val, compared, target, soft=False),
            "validation_after": _point_disparity(
                on_val[name], g.val, compared, target, soft=MITIGATIONS.get(name, (None,))[0] is not None
            ),
        }
        if verdict != "improved":
            v["why"] = _why(v, smallest)
        verdicts[name] = v
    return {
        "grouping": g.name,
        "objective": cfg.objective,
        "notes": notes,
        "table": table.to_dict("records"),
        "variants": verdicts,
        "offered": [n for n, v in verdicts.items() if v["verdict"] == "improved"],
        "smallest_group_val_positives": smallest,
    }


def _retrained_point(point: OperatingPoint, val: Scored) -> OperatingPoint | None:
    """The retrained model decides as the audited one: at the given thresholds, or by the same rule on its own
    validation scores; otherwise at its own validation-chosen thresholds (multi-label) or the arg-max."""
    if point.source == "given":
        return point
    if point.source == "rule":
        rule = parse_rule(point.rule)
        th = {label: choose(val.y[:, k], val.p[:, k], rule) for k, label in enumerate(val.labels)}
        return OperatingPoint("rule", th, point.rule, point.statement)
    return None


def _smallest(s_val: Scored, g: Grouping, compared: list[str]) -> dict[str, Any]:
    """The compared group with the fewest validation positives (summed over labels)."""
    gv = g.val.to_numpy(dtype=object)
    pos = {c: int(s_val.y[gv == c].sum()) for c in compared}
    group = min(pos, key=pos.get)
    return {"group": group, "positives": pos[group], "cases": int((gv == group).sum())}


def _why(v: dict[str, Any], small: dict[str, Any]) -> list[str]:
    """What the measurements say about a mitigation that did not improve its target (``small``: the compared group
    with the fewest validation positives)."""
    name = TARGET_NAMES[v["target"]]
    out = []
    r0, r1 = v["positive_rate_before"], v["positive_rate_after"]
    if abs(r1 - r0) > 0.05 and not (r0 > 0 and 0.67 <= r1 / r0 <= 1.5):
        out.append(
            f"it moved the operating point: the positive rate went from {r0:.3f} to {r1:.3f}; differences between "
            "groups' rates are small where every rate is near 0 or 1, and larger in between, so the disparity "
            "before and after are measured at different operating points"
        )
    vb, va = v["validation_before"], v["validation_after"]
    if va < vb and v["change"] >= 0:
        out.append(
            f"it narrowed the {name} on the validation rows it was fitted on ({vb:.3f} to {va:.3f}) but not on "
            f"test ({v['before']:.3f} to {v['after']:.3f}): what it learnt did not carry over from validation to "
            "test (a shift between the splits, or thresholds fitted to noise in small groups)"
        )
    elif va >= vb:
        out.append(f"it did not narrow the {name} even on the validation rows it was fitted on ({vb:.3f} to {va:.3f})")
    if small["positives"] < SMALL_POSITIVES:
        out.append(
            f"the smallest group, {small['group']}, has {small['positives']} positive validation case(s) of "
            f"{small['cases']}: its fitted thresholds rest on few patients"
        )
    return out


def _point_disparity(s: Scored, groups: pd.Series, compared: list[str], measure: str, soft: bool) -> float:
    """A disparity's point value over the compared groups, the mean over labels. With ``soft``, a randomised
    rule's expected decisions (its probability of a positive decision) rather than one draw of them."""
    g = groups.to_numpy(dtype=object)
    decision = s.p if soft else s.d
    values = []
    for k in range(len(s.labels)):
        y, d = s.y[:, k], decision[:, k].astype(np.float64)
        rates = {"tpr": [], "fpr": [], "sel": []}
        for c in compared:
            rows = g == c
            for rate, where in (("tpr", rows & (y == 1)), ("fpr", rows & (y == 0)), ("sel", rows)):
                if where.any():
                    rates[rate].append(float(d[where].mean()))
        spread = {r: (max(v) - min(v)) if v else float("nan") for r, v in rates.items()}
        values.append(
            max(spread["tpr"], spread["fpr"]) if measure == "eod" else spread["sel" if measure == "dpd" else "tpr"]
        )
    return float(np.nanmean(values))


def _summary(a: Any, table: pd.DataFrame, boot: dict, labels: list[str]) -> dict[str, tuple[float, np.ndarray]]:
    """(value, bootstrap replicates) of each measure of one variant: the label's, or the macro over labels."""
    label = summary_label(labels)
    overall = a.table[(a.table.group == "overall") & (a.table.label == label)].iloc[0]
    ob = a.boot["overall"]
    row = table[table.label == label].iloc[0]
    tpr_point, tpr_reps = [], []
    for k, name in enumerate(labels):
        sens = a.table[(a.table.label == name) & (a.table.group != "overall")]["sensitivity"].to_numpy(dtype=float)
        tpr_point.append(np.nanmax(sens) - np.nanmin(sens))
        reps = np.stack([a.boot[c]["sensitivity"][:, k] for c in a.compared], axis=1)
        with np.errstate(invalid="ignore"):
            tpr_reps.append(np.nanmax(reps, axis=1) - np.nanmin(reps, axis=1))
    out = {
        "auc": (overall["auc"], macro(ob["auc"])),
        "accuracy": (overall["accuracy"], macro(ob["accuracy"])),
        "positive_rate": (overall["selection_rate"], macro(ob["selection_rate"])),
        "eod": (row["eod"], boot[label]["eod"]),
        "dpd": (row["dpd"], boot[label]["dpd"]),
        "tpr_gap": (float(np.mean(tpr_point)), np.mean(np.stack(tpr_reps, axis=1), axis=1)),
    }
    if isinstance(row.get("auc_gap_groups"), str):  # two groups with a defined AUC
        best, worst = row["auc_gap_groups"].split(" - ")
        out["worst_group_auc"] = (row["worst_group_auc"], macro(a.boot[row["worst_group"]]["auc"]))
        out["auc_gap"] = (row["auc_gap"], macro(a.boot[best]["auc"]) - macro(a.boot[worst]["auc"]))
    return {m: out[m] for m in MEASURES if m in out}


def _ci(reps: np.ndarray, around: float | None = None) -> tuple[float, float]:
    return interval(np.asarray(reps, dtype=np.float64), around=around)


def _as_frame(p: np.ndarray, info: dict[str, Any], like: Scored) -> pd.DataFrame:
    names = info["label_names"]
    frame = pd.DataFrame({f"p:{n}": p[:, j] for j, n in enumerate(names)})
    if info["task"] == "multi-label":
        for j, n in enumerate(names):
            frame[f"y:{n}"] = like.y[:, j]
    else:
        # the class index back from the audited one-vs-rest truth (binary: the positive class's column)
        frame["y"] = like.y[:, 0] if len(names) == 2 else like.y.argmax(axis=1)
    return frame


def _thresholds(frame_val: pd.DataFrame, info: dict[str, Any]) -> list[float] | None:
    """Multi-label thresholds of a retrained model, chosen on validation as the study chose them."""
    if info["task"] != "multi-label":
        return None
    from medassist.evaluate.thresholds import choose_thresholds

    names = info["label_names"]
    y = frame_val[[f"y:{n}" for n in names]].to_numpy()
    return [float(t) for t in choose_thresholds(y, frame_val[[f"p:{n}" for n in names]].to_numpy())]
