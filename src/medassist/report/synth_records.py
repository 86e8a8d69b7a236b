"""The report of a patient-record run of the synthetic-data study (reads the run folder's files only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from medassist.utils.format import (
    computed_on,
    fmt_int,
    fmt_metric,
    fmt_percent,
    fmt_seconds,
    fmt_value_ci,
    readable_table,
)

TARGET = 0.85


def _v(h: dict[str, Any]) -> str:
    return fmt_value_ci(h["value"], h["ci_low"], h["ci_high"])


def records_reflection(m: dict[str, Any]) -> str:
    """Sentences from the measured numbers only."""
    gens = m["generators"]
    if not gens:
        return "No record generator was trained in this run."
    best = max(gens, key=lambda g: gens[g]["quality_score"])
    b = gens[best]
    s = [
        f"{best} gives the best SDMetrics quality score, {fmt_metric(b['quality_score'])} (target {TARGET:.2f}: "
        + ("met" if b["quality_score"] >= TARGET else f"missed by {fmt_metric(TARGET - b['quality_score'])}")
        + ")."
    ]
    for g, r in gens.items():
        a = r["attack_distance"]
        leak = a["auc_lo"] > 0.5
        s.append(
            f"{g}: {fmt_percent(r['share_below_holdout_p5'])} of synthetic records are closer to a training record "
            f"than the held-out 5th percentile; {fmt_percent(r['exact_copies'])} equal a training record (held-out "
            "real records: "
            f"{fmt_percent(m['holdout'].get('exact_copies'))}); the distance attack's AUC is "
            f"{fmt_value_ci(a['auc'], a['auc_lo'], a['auc_hi'])}, "
            + ("above chance, so membership leaks." if leak else "no leakage the attack can see.")
        )
        if "tstr_minus_trtr_auc" in r:
            d = r["tstr_minus_trtr_auc"]
            differs = d[1] > 0 or d[2] < 0
            s.append(
                f"Predicting {m['data']['target']} from {g}'s records gives test AUC {_v(r['tstr']['auc'])}, "
                + ("a difference" if differs else "no difference")
                + f" from real records (paired {fmt_value_ci(*d, kind='delta')})."
            )
    return " ".join(s)


def records_table(m: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, str]]:
    """Every number of a records run, one row per generator beside the real held-out floor, and the formatting
    kinds of the columns whose names do not say them."""
    rows = []
    trtr = m["trtr"].get("test")
    if trtr:
        rows.append(
            {
                "generator": "real held-out records (TRTR)",
                "tstr_auc": trtr["auc"]["value"],
                "tstr_auc_lo": trtr["auc"]["ci_low"],
                "tstr_auc_hi": trtr["auc"]["ci_high"],
                "dcr_median": m["holdout"]["dcr_median"],
                "exact_copies": m["holdout"].get("exact_copies"),
            }
        )
    for g, r in m["generators"].items():
        row: dict[str, Any] = {
            "generator": g,
            "fit_time_s": r["fit_time"],
            "quality_score": r["quality_score"],
            **{p.lower().replace(" ", "_"): v for p, v in r["properties"].items()},
            "dcr_median": r["dcr_median"],
            "share_below_holdout_p5": r["share_below_holdout_p5"],
            "exact_copies": r["exact_copies"],
            "attack_auc": r["attack_distance"]["auc"],
            "attack_auc_lo": r["attack_distance"]["auc_lo"],
            "attack_auc_hi": r["attack_distance"]["auc_hi"],
        }
        if "tstr" in r:
            t, dd = r["tstr"]["auc"], r["tstr_minus_trtr_auc"]
            row.update(
                tstr_auc=t["value"],
                tstr_auc_lo=t["ci_low"],
                tstr_auc_hi=t["ci_high"],
                auc_minus_trtr=dd[0],
                auc_minus_trtr_lo=dd[1],
                auc_minus_trtr_hi=dd[2],
            )
        rows.append(row)
    kinds = {
        "share_below_holdout_p5": "percent",
        "exact_copies": "percent",
        "dcr_median": "quantity",
        "auc_minus_trtr": "delta",
    }
    return pd.DataFrame(rows), kinds


def build_records_report(run_dir: Path, m: dict[str, Any]) -> str:
    d = m["data"]
    sizes = d["sizes"]
    out = [
        f"# Synthetic patient records: {d['name']}",
        "",
        "> **Every record under `synthetic/` is synthetic** (`synthetic` column true; see `SYNTHETIC.md`).",
        "",
        f"Source: {d['source']}. Records used: train {fmt_int(sizes['train'])} "
        f"(of {fmt_int(d['full_sizes']['train'])}), validation {fmt_int(sizes['val'])}, test {fmt_int(sizes['test'])} "
        f"(held out; of {fmt_int(d['full_sizes']['test'])}). "
        f"Columns: {', '.join(f'{c} ({k})' for c, k in d['columns'].items())}. TSTR target: {d['target']}. "
        f"Wall time {fmt_seconds(m.get('wall_time'))} s. " + computed_on(m),
        "",
        "## Reflection",
        "",
        records_reflection(m),
        "",
        "## Every number",
        "",
    ]
    rows, kinds = records_table(m)
    out += [
        "Quality: SDMetrics' quality report on the training records (column shapes, column-pair trends). DCR: L1 "
        "distance to the closest training record (numbers scaled to [0, 1], categories one-hot at 0.5); the real "
        f"floor is the held-out records' median DCR, and their 5th percentile ({fmt_metric(m['holdout']['p5'])}) the "
        "threshold. Attack: a record closer to the synthetic set is guessed a training member (AUC 0.5: no leakage).",
        "",
        readable_table(rows, kinds=kinds, headers=True),
        "",
        "## Synthetic records beside real ones",
        "",
    ]
    side = run_dir / "tables" / "records_side_by_side.csv"
    if side.is_file():
        out.append(readable_table(pd.read_csv(side), max_columns=None))
    return "\n".join(out) + "\n"
