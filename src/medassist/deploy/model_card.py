"""The model card every bundle carries (``model_card.md``), in the sections of the Hugging Face model cards.

Written from the bundle's own description (bundle.json), the source run's data.json and the data set's datasheet,
and, where a finished fairness run audited the bundle's source run, its subgroup numbers. Nothing is typed in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MODEL_CARD_FILE = "model_card.md"


def _fmt(x: Any) -> str:
    if isinstance(x, bool) or x is None:
        return str(x)
    if isinstance(x, float):
        return f"{x:.3f}"
    return str(x)


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def find_fairness_run(source_run: str | Path | None) -> Path | None:
    """The latest complete fairness run beside ``source_run`` that audited it, if any."""
    if not source_run:
        return None
    source = Path(source_run).resolve()
    found = []
    for run in source.parent.glob("fairness-*"):
        status, metrics = _read(run / "status.json"), _read(run / "metrics.json")
        audited = metrics.get("source", {}).get("run")
        if status.get("status") == "complete" and audited and Path(audited).resolve() == source:
            found.append(run)
    return max(found, key=lambda p: p.name) if found else None


def _metrics_lines(metrics: dict[str, Any], prefix: str = "") -> list[str]:
    lines = []
    for k, v in metrics.items():
        if isinstance(v, dict):
            if {"value", "ci_low", "ci_high"} <= set(v):
                lines.append(f"- {prefix}{k}: {_fmt(v['value'])} [{_fmt(v['ci_low'])}, {_fmt(v['ci_high'])}]")
            else:
                lines += _metrics_lines(v, f"{prefix}{k} ")
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and not k.endswith(("_lo", "_hi")):
            lo, hi = metrics.get(f"{k}_lo"), metrics.get(f"{k}_hi")
            ci = f" [{_fmt(lo)}, {_fmt(hi)}]" if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) else ""
            lines.append(f"- {prefix}{k}: {_fmt(v)}{ci}")
    return lines[:30]


def _ensemble_line(meta: dict[str, Any]) -> list[str]:
    ens = meta.get("ensemble")
    if not ens:
        return []
    w = float(ens["tfidf_weight"])
    return [
        f"- ensemble: each probability is {w:g} x that of a TF-IDF + logistic regression model "
        f"(`{ens['tfidf_file']}`) plus {1 - w:g} x that of the network (`{meta.get('model_file')}`), the weight chosen "
        "on the validation split"
    ]


def _subgroups(fair: Path | None) -> list[str]:
    if fair is None:
        return [
            "Not audited by subgroup: no finished `medassist fairness` run of this bundle's source run was found. "
            "Run `medassist fairness --run <source run>` and deploy again to add the subgroup numbers here."
        ]
    m = _read(fair / "metrics.json")
    if not m.get("demographics"):
        note = m.get("no_demographics", {}).get("statement", "the data carry no demographics")
        return [f"From `{fair}`: {note}."]
    lines = [f"From the fairness run `{fair}` (95% bootstrap intervals within groups):", ""]
    for name, entry in m.get("audits", {}).items():
        if "table" not in entry:
            lines.append(f"- by {name}: not compared ({entry.get('note', '')})")
            continue
        summary = m.get("summary_label", "macro")
        for r in entry["table"]:
            if r["label"] == summary:
                what = "macro AUC" if summary == "macro" else f"{summary} AUC"
                lines.append(
                    f"- {name} = {r['group']} (n={int(r['n'])}): {what} {_fmt(r['auc'])} "
                    f"[{_fmt(r['auc_lo'])}, {_fmt(r['auc_hi'])}], sensitivity {_fmt(r['sensitivity'])}, "
                    f"specificity {_fmt(r['specificity'])}, ECE {_fmt(r['ece'])}"
                )
        n_disp = entry.get("chance", {}).get("auc", {}).get("disparities_holm")
        if n_disp is not None:
            lines.append(f"- by {name}: {n_disp} labels with an AUC disparity after Holm's correction")
    return lines


def _abstain_lines(rule: dict[str, Any] | None) -> list[str]:
    """The abstention rule in words."""
    if not rule:
        return []
    if "rule" not in rule:
        return [f"- abstention: the whole case is referred below confidence {rule['min_confidence']:.3f}"]
    values = rule.get("bands") or rule.get("min_confidence") or {}
    unit = "finding" if rule["rule"] == "per-label" else "class"
    out = [
        f"- abstention per {unit}, chosen on validation: among answered cases at most "
        f"{rule['target_miss']:.0%} of a {unit}'s positives missed and {rule['target_false']:.0%} of its negatives "
        f"flagged; fewer than {rule['min_positives']} validation positives: not assessed (always referred)"
    ]
    for name, v in values.items():
        if v is None:
            out.append(f"  - {name}: not assessed")
        elif isinstance(v, list):
            out.append(f"  - {name}: answered below {v[0]:.3f} (absent) or from {v[1]:.3f} (present)")
        else:
            out.append(f"  - {name}: answered from a probability of {v:.3f}")
    return out


def model_card(meta: dict[str, Any]) -> str:
    """The Markdown model card of a bundle described by ``meta`` (its bundle.json)."""
    from medassist.data.datasheet import load_datasheet
    from medassist.errors import MedAssistError

    info = meta.get("info", {})
    source = info.get("source_run")
    data = _read(Path(source) / "data.json") if source else {}
    dataset = data.get("name") or info.get("dataset") or "unknown"
    try:
        sheet = load_datasheet(dataset)
    except MedAssistError:
        sheet = {}
    labels = meta.get("labels", [])
    threshold = meta.get("threshold")
    out = [f"# Model card: {meta.get('name', 'medassist model')}", ""]
    out += [
        "## Model details",
        "",
        f"- kind: {meta.get('kind')} ({meta.get('task')}), model: {info.get('model', 'unknown')}, "
        f"variant: {info.get('variant', 'unknown')}",
        f"- outputs: {', '.join(map(str, labels))}",
        *_ensemble_line(meta),
        f"- created: {info.get('created', 'unknown')} with medassist {info.get('medassist_version', 'unknown')}",
        # The run's name only: a card is shown to clients, and a server path is none of their business.
        f"- source run: `{Path(source).name}`" if source else "- source run: not recorded",
        "",
        "## Intended use",
        "",
        "A research and teaching tool that assists a clinician or an engineer studying the task above: it ranks or "
        "flags cases for a person to review. Every output is a probability for a person to weigh, never a decision.",
        "",
        "## Out-of-scope use",
        "",
        "**Not a medical device.** It is not cleared or approved by any regulator and must not be used to diagnose, "
        "treat or triage patients, nor on populations, sites, scanners or report styles unlike its training data "
        "(see Limitations), nor without a clinician reviewing every output.",
        "",
        "## Training data",
        "",
        f"- data set: {dataset}; split sizes: {data.get('sizes', 'unknown')}",
    ]
    if sheet:
        out += [
            f"- source: {str(sheet.get('source', '')).strip()}",
            f"- licence: {str(sheet.get('licence', '')).strip()}",
            f"- demographics: {str(sheet.get('demographics', '')).strip()}",
        ]
    else:
        lic = data.get("info", {}).get("licence") or "as given by the data's owner (a user's own data)"
        out.append(f"- licence: {lic}")
    out += ["", "## Evaluation", "", "Test split, overall (95% bootstrap intervals where computed):", ""]
    out += _metrics_lines(meta.get("metrics", {})) or ["- no test metrics recorded"]
    out += ["", "### By subgroup", ""]
    out += _subgroups(find_fairness_run(source))
    out += ["", "## Calibration", ""]
    cal = [f"- {k}: {json.dumps(meta[k])}" for k in ("temperature",) if k in meta]
    cal += _abstain_lines(meta.get("abstain"))
    out += cal or ["- no calibration fitted (probabilities as the model gives them)"]
    out.append(f"- decision threshold(s), chosen on validation: {json.dumps(threshold)}")
    out += ["", "## Limitations", ""]
    gaps = sheet.get("known_gaps", []) if sheet else []
    out += [f"- {g}" for g in gaps] or ["- trained and tested on one data set only; no external validation"]
    if sheet.get("label_noise"):
        out.append(f"- label noise: {str(sheet['label_noise']).strip()}")
    out += [
        "",
        "## Ethical considerations",
        "",
        "- Errors fall on patients: a missed finding can delay care, a false alarm adds tests and worry; report "
        "false negatives and positives per 1,000 patients at the operating point before any use.",
        "- Performance can differ between patient groups; use it only where the subgroup audit above covers the "
        "population, and re-audit on every new site.",
        "- Inputs are patient data: keep them under the data owner's rules; the bundle stores no patient data.",
        "",
    ]
    return "\n".join(out)


def write_model_card(bundle_dir: Path, meta: dict[str, Any]) -> Path:
    """Write ``model_card.md`` into ``bundle_dir``."""
    path = Path(bundle_dir) / MODEL_CARD_FILE
    path.write_text(model_card(meta), encoding="utf-8")
    return path
