"""The ethics report (400-600 words), generated from the fairness run's measurements and nothing else.

Every number in it is a value of the run's metrics.json (numbers quoted from a synthetic-data or deployment run
are copied there first, under ``linked_runs``), so a test can check each one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medassist.fairness.groups import NOT_STATED
from medassist.fairness.mitigate import MITIGATION_NAMES, TARGET_NAMES
from medassist.run import Run
from medassist.utils.format import fmt_int, fmt_metric
from medassist.utils.words import count_words

# What could bias a model trained on data without demographics, and how one would test it.
POSSIBLE_BIASES = [
    (
        "age",
        "a test set with each image's patient age from the source hospital's records, audited by age band",
    ),
    ("sex", "the same, with the patient's recorded sex"),
    (
        "acquisition site and scanner",
        "images of the same task from other hospitals and devices (an external test set), compared site by site",
    ),
    ("disease severity and image quality", "a reader's grading of each test image, audited by grade"),
]


def no_demographics_note(info: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
    """What the audit of a run without demographics says: that there are none, and how one would test."""
    from medassist.data.datasheet import load_datasheet
    from medassist.errors import MedAssistError

    try:
        source_note = str(load_datasheet(info.get("dataset") or "").get("set_note", "")).strip()
    except MedAssistError:
        source_note = ""
    return {
        "statement": (
            f"The {info.get('dataset') or 'audited'} data carry no demographics: no sex, age, site or scanner is "
            "recorded per case, so no subgroup metric can be measured and none is reported"
        ),
        "source_note": source_note,
        "metadata_columns": source.get("metadata_columns", []),
        "possible_biases": [{"attribute": a, "how_to_test": t} for a, t in POSSIBLE_BIASES],
    }


def _m(x: Any) -> str:
    return fmt_metric(x)


def _ci(row: dict[str, Any], m: str) -> str:
    return f"{_m(row[m])} [{_m(row[f'{m}_lo'])}, {_m(row[f'{m}_hi'])}]"


def _linked(path: str, keys: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """The named numbers of another run's metrics.json (searched at any depth), where present."""
    file = Path(path) / "metrics.json"
    if not path or not file.is_file():
        return {}
    data = json.loads(file.read_text())
    found: dict[str, Any] = {}

    def walk(obj: Any) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                for name, aliases in keys.items():
                    if name not in found and k in aliases and isinstance(v, (int, float)) and not isinstance(v, bool):
                        found[name] = v
                walk(v)
        elif isinstance(obj, list):
            for v in obj[:50]:
                walk(v)

    walk(data)
    return found


def _privacy(metrics: dict[str, Any], synth: dict[str, Any]) -> str:
    src = metrics["source"]
    cols = ", ".join(c for c in src["metadata_columns"] if c not in ("report_id", "source_row")) or "no metadata"
    text = (
        f"**Privacy.** The audited {src['kind']} model was tested on {fmt_int(src['n_test'])} cases of "
        f"{src['dataset']}. The predictions an audit reads keep, per case, the labels, the model's probabilities and "
        f"{cols}; report texts, file paths and patient identifiers are never saved, logged or quoted. "
    )
    if synth:
        parts = [f"{k.replace('_', ' ')} {_m(v)}" for k, v in synth.items()]
        text += f"The synthetic-data run reports {', '.join(parts)}; "
        text += "synthetic records are shared only where those numbers show no record is copied. "
    else:
        text += (
            "No synthetic-data run was given, so nothing is claimed here about how close synthetic records come to "
            "real ones; distance to the closest record and a membership-inference attack must be measured first. "
        )
    return text


MIN_POSITIVES = 10  # a group's sensitivity is recommended on only with at least this many positive test cases
METHOD = (
    "Each group's intervals come from resampling its own cases, so a small group has a wide interval, and a gap "
    "is called a disparity only when its test survives the correction for the many labels and pairs compared."
)


def _fairness(metrics: dict[str, Any], *, brief: bool = False, method: bool = False) -> tuple[str, list[str]]:
    out, recs = ["**Fairness.**"], []
    summary = metrics["summary_label"]
    for i, (name, entry) in enumerate(metrics["audits"].items()):
        small = entry.get("not_compared", {})
        if "table" not in entry:
            out.append(f"By {name}, fewer than two groups reach {metrics['min_group_size']} test cases; not compared.")
            continue
        macro = next(d for d in entry["disparities"] if d["label"] == summary)
        overall = next(r for r in entry["table"] if r["group"] == "overall" and r["label"] == summary)
        ch = entry["chance"]["auc"]
        if brief and i > 0:
            out.append(
                f"By {name}, the worst group is {macro['worst_group']} at {_ci(macro, 'worst_group_auc')}; "
                f"{ch['disparities_holm']} AUC disparities remain after correction."
            )
            continue
        out.append(
            f"By {name}, the worst group for {'macro ' if summary == 'macro' else ''}AUC is {macro['worst_group']} at "
            f"{_ci(macro, 'worst_group_auc')} against {_m(overall['auc'])} overall; of {ch['tests']} pairwise "
            f"AUC comparisons about {ch['expected_by_chance']:.1f} would fall below {metrics['alpha']} by chance, "
            f"{ch['uncorrected_below_alpha']} did, and {ch['disparities_holm']} remain disparities after Holm's "
            "correction."
        )
        if small:
            unstated = small.get(NOT_STATED)
            listed = ", ".join(f"{g} ({fmt_int(n)})" for g, n in small.items() if g != NOT_STATED)
            if listed:
                out.append(f"Too small to compare: {listed}.")
            if unstated:
                out.append(f"{fmt_int(unstated)} test cases do not state {name} and are left out.")
    mit = metrics.get("mitigation")
    if mit and brief:
        verdicts = "; ".join(
            f"{MITIGATION_NAMES.get(n, n)}: {TARGET_NAMES[v['target']]} {_m(v['before'])} to {_m(v['after'])} "
            f"({v['verdict']})"
            for n, v in mit["variants"].items()
        )
        out.append(f"Mitigations tried: {verdicts}.")
    elif mit:
        for name, v in mit["variants"].items():
            out.append(
                f"{MITIGATION_NAMES.get(name, name)[0].upper() + MITIGATION_NAMES.get(name, name)[1:]} moved the "
                f"{TARGET_NAMES[v['target']]} from {_m(v['before'])} to {_m(v['after'])} ({v['verdict']}), "
                f"changing AUC by {_m(v['auc_change'])} [{_m(v['auc_change_lo'])}, {_m(v['auc_change_hi'])}]."
            )
    if method:
        out.insert(1, METHOD)
    return " ".join(out), recs


def _recommendations(metrics: dict[str, Any]) -> list[str]:
    recs: list[str] = []
    best: tuple[float, str] | None = None
    for name, entry in metrics["audits"].items():
        if "table" not in entry:
            continue
        table = entry["table"]
        overall = {r["label"]: r for r in table if r["group"] == "overall"}
        for r in table:
            if r["group"] == "overall" or r["label"] == "macro" or r["sensitivity"] is None:
                continue
            o = overall[r["label"]]
            if o["sensitivity"] is None or r["sensitivity_hi"] is None or r["n"] * r["prevalence"] < MIN_POSITIVES:
                continue  # a sensitivity on a handful of positives says little
            gap = o["sensitivity"] - r["sensitivity"]
            if best is None or gap > best[0]:
                shown = r["sensitivity_lo"] <= o["sensitivity"] <= r["sensitivity_hi"]
                best = (
                    gap,
                    f"Collect more cases of the group {r['group']} ({name}): its sensitivity for {r['label']} is "
                    f"{_ci(r, 'sensitivity')} against {_m(o['sensitivity'])} overall, on {fmt_int(r['n'])} test "
                    "cases"
                    + (
                        "; the interval includes the overall value, so no difference is shown yet and more cases "
                        "would settle it."
                        if shown
                        else "; the interval excludes the overall value."
                    ),
                )
    if best:
        recs.append(best[1])
    worst_ece = None
    summary = metrics["summary_label"]
    for name, entry in metrics["audits"].items():
        for r in entry.get("table", []):
            if r["label"] == summary and r["group"] != "overall" and (worst_ece is None or r["ece"] > worst_ece[0]):
                overall = next(o for o in entry["table"] if o["group"] == "overall" and o["label"] == summary)
                worst_ece = (
                    r["ece"],
                    f"Check calibration per group before any use: the calibration error of {r['group']} "
                    f"({name}) is {_ci(r, 'ece')} against {_m(overall['ece'])} overall.",
                )
    if worst_ece:
        recs.append(worst_ece[1])
    mit = metrics.get("mitigation")
    if mit and mit.get("variants"):
        offered = mit["offered"]
        if offered:
            v = mit["variants"][offered[0]]
            recs.append(
                f"Mitigation: {MITIGATION_NAMES.get(offered[0], offered[0])} narrowed the {TARGET_NAMES[v['target']]} "
                f"from {_m(v['before'])} to {_m(v['after'])} at an AUC change of {_m(v['auc_change'])}; weigh that "
                "cost before adopting it."
            )
        else:
            recs.append(
                "Mitigation: adopt none of those tried; none narrowed the disparity it targets with an interval "
                "that excludes zero."
            )
    return recs


def _clinical(metrics: dict[str, Any]) -> str:
    rows = [r for r in metrics.get("clinical", []) if r["label"] != "normal"]
    if not rows:
        return ""
    r = max(rows, key=lambda r: r["prevalence_per_1000"])
    return (
        f"**Clinical validation.** At the operating point, for {r['label']} (about {r['prevalence_per_1000']:g} "
        f"in {fmt_int(metrics['per_patients'])} patients) the model misses {r['false_negatives_per_1000']:g} and "
        f"falsely flags {r['false_positives_per_1000']:g} cases per {fmt_int(metrics['per_patients'])} patients. A "
        "miss can delay treatment; a false alarm costs a second reading, further imaging and the patient's worry. "
        "Before any clinical use the model needs prospective validation on consecutive patients, external sites "
        "with other scanners, writing styles and populations, and regulatory review as a medical device. "
    )


TRANSPARENCY = (
    "**Transparency and explainability.** Every label's probability is shown beside the threshold it is compared "
    "with, and calibration is measured per group, so a probability can be read as a frequency where the "
    "calibration error is small. {extra} To a clinician a prediction would be explained by the finding's "
    "probability, the threshold chosen on validation and the evidence the model used; to a patient by what the "
    "finding means, that the tool only assists the clinician, and that a person makes the decision. "
)

DUAL_USE = (
    "**Dual-use risks.** The generators and the text models could fabricate records, reports or images, to "
    "deceive insurers, pad a data set or hide a finding. medassist verifies every deployed file against its "
    "manifest's checksums before it runs, writes a model card into every bundle that states the tool is not a "
    "medical device, and its synthetic-data study measures how close synthetic data come to real patients "
    "(distance to the closest record, membership inference) before anyone shares them. "
)


def ethics_text(metrics: dict[str, Any]) -> str:
    """The ethics report's Markdown, from ``metrics`` (the fairness run's metrics.json): 400-600 words, the
    fairness paragraph shortened or explained further to stay within them."""
    text = _ethics_text(metrics)
    if count_words(text) > 600:
        text = _ethics_text(metrics, brief=True)
    if count_words(text) < 400:
        text = _ethics_text(metrics, method=True)
    return text


def _ethics_text(metrics: dict[str, Any], *, brief: bool = False, method: bool = False) -> str:
    linked = metrics.get("linked_runs", {})
    src = metrics["source"]
    extra = {
        "image": "The image study draws Grad-CAM maps of test images, which show where a model looked.",
        "tabular": "The tabular study saves every setting it tried and the coefficients or trees of its chosen "
        "model, so the features that drive a prediction can be read.",
        "outside": "The audited model is outside medassist: only its scores were given, so how it reaches them "
        "cannot be inspected here; its maker's documentation has to answer that.",
    }.get(src["kind"], "The text study lists the reports its model got most wrong, so a reader sees how it fails.")
    parts = [_privacy(metrics, linked.get("synth", {}))]
    if metrics.get("demographics"):
        text, _ = _fairness(metrics, brief=brief, method=method)
        parts.append(text)
    else:
        note = metrics["no_demographics"]
        biases = "; ".join(f"{b['attribute']}: {b['how_to_test']}" for b in note["possible_biases"])
        known = f" What the source says about who is in it: {note['source_note']}" if note.get("source_note") else ""
        parts.append(
            f"**Fairness.** {note['statement']}.{known} Biases that could exist and how one would test them: {biases}."
        )
    overall = metrics.get("overall", {}).get(metrics.get("summary_label", "macro"))
    if overall:
        extra += f" The calibration error on test is {_m(overall['ece'])}."
    parts.append(TRANSPARENCY.format(extra=extra))
    parts.append(_clinical(metrics))
    deploy = linked.get("deploy", {})
    dual = DUAL_USE
    if deploy:
        dual += " The deployment run's " + ", ".join(f"{k.replace('_', ' ')} is {_m(v)}" for k, v in deploy.items())
        dual += "."
    parts.append(dual)
    recs = _recommendations(metrics) if metrics.get("demographics") else []
    if not recs:
        recs = [
            "Obtain per-case sex, age and site for a test set of this task before deployment, and run this audit on "
            "it; without them no claim about subgroups can be made."
        ]
    body = "\n\n".join(p.strip() for p in parts if p)
    body += "\n\n**Recommendations.**\n\n" + "\n".join(f"{i}. {r}" for i, r in enumerate(recs, 1))
    return body + "\n"


def write_ethics(run: Run, metrics: dict[str, Any], source_metrics: dict[str, Any], cfg: Any) -> None:
    """Copy the quoted numbers of linked runs into metrics.json, then write ``ethics.md``."""
    linked = {
        "synth": _linked(
            cfg.synth_run,
            {
                "median_distance_to_closest_record": ("dcr_median", "median_dcr", "dcr"),
                "membership_inference_auc": ("mia_auc", "membership_auc", "membership_inference_auc"),
            },
        ),
        "deploy": _linked(
            cfg.deploy_run, {"shipped_test_accuracy": ("test_accuracy",), "shipped_test_auc": ("test_auc",)}
        ),
    }
    metrics["linked_runs"] = {k: v for k, v in linked.items() if v}
    metrics["alpha"] = 0.05
    run.write_metrics(metrics)
    from medassist.utils.io import atomic_write_text

    atomic_write_text(run.dir / "ethics.md", "## Ethics report\n\n" + ethics_text(metrics))
