"""The deployment study's report: reads the deploy run folder's files and nothing else."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from medassist.deploy.variants import BASELINE, reference_of
from medassist.report.abstention import per_finding_section
from medassist.report.html import write_report
from medassist.utils.format import (
    computed_on,
    fmt_ci,
    fmt_delta,
    fmt_metric,
    fmt_quantity,
    fmt_ratio,
    readable_header,
    readable_table,
)
from medassist.utils.words import fit_sentences

MAX_WORDS = 150  # the brief's 100-150 words
UNDER_TRAINED = "under-trained"


def _pct(x: float) -> str:
    return f"{fmt_metric(100 * x, 1)} points"


def _x(target: float) -> str:
    return f"{target:g}x"


def _missed(r: dict[str, Any], t: dict[str, float]) -> list[str]:
    """The targets that variant ``r`` misses on test, each with its value and the bar."""
    out = []
    if r["size_ratio"] < t["size_ratio"]:
        out.append(f"size ({fmt_ratio(r['size_ratio'])}, target {_x(t['size_ratio'])})")
    if r["speedup_b1"] < t["speedup_b1"]:
        out.append(f"speed ({fmt_ratio(r['speedup_b1'])}, target {_x(t['speedup_b1'])})")
    if r["test_accuracy_drop"] > t["accuracy_drop"] + 1e-12:
        out.append(f"accuracy (drop {_pct(r['test_accuracy_drop'])}, at most {_pct(t['accuracy_drop'])})")
    if r["test_auc_drop"] > t["auc_drop"] + 1e-12:
        out.append(f"AUC (drop {fmt_metric(r['test_auc_drop'])}, at most {fmt_metric(t['auc_drop'])})")
    return out


def under_trained(r: dict[str, Any]) -> bool:
    """Whether a variant's row says a training it rests on (a fine-tune after pruning, a student) was cut by its
    time budget while validation still improved; a row written before the rule reads as not under-trained."""
    return r.get("training") == UNDER_TRAINED


def marked(name: str, r: dict[str, Any]) -> str:
    """A variant's name in a table or legend, marked when it rests on an under-trained training."""
    return f"{name} ({UNDER_TRAINED})" if under_trained(r) else name


def _training_name(t: dict[str, Any]) -> str:
    name = t["training"]
    if t.get("kind") == "student":
        return {"student alone": "the student trained alone", "student distilled": "the distilled student"}.get(
            name, f"the {name} student"
        )
    return f"the {name} fine-tune"


def _cut_sentences(m: dict[str, Any], chosen: dict[str, Any]) -> list[str]:
    """Which fine-tunes or students were under-trained, that the budget was too short to decide what those
    compressions cost, and whether the shipped variant rests on one."""
    cut = [_training_name(t) for t in m.get("trainings") or [] if t.get("under_trained")]
    n_rows = sum(under_trained(r) for r in m["variants"])
    if not cut and not n_rows:
        return []
    one = len(cut) == 1
    if cut:
        who = cut[0] if one else ", ".join(cut[:-1]) + " and " + cut[-1]
        who = f"{who[0].upper()}{who[1:]} {'was' if one else 'were'} under-trained (the time budget ended "
        who += f"{'it' if one else 'them'} while validation was still improving)"
    else:  # a run folder that marks its variants but lists no trainings
        who, one = f"{n_rows} variant(s) rest on an under-trained fine-tune or student", False
    what = "that compression costs" if one else "those compressions cost"
    s = [
        f"{who}, so the budget was too short to decide what {what} in accuracy; no conclusion here rests on the "
        "variants marked under-trained."
    ]
    if under_trained(chosen):
        s.append("The shipped variant is one of them: its accuracy drop measures the budget, not the technique.")
    return s


def _same_model(ref_name: str) -> str:
    """How the explanation names the reference: the fp32 PyTorch model, or e.g. "minilm in fp32 PyTorch"."""
    model = ref_name.removesuffix(BASELINE).strip()
    return f"{model} in fp32 PyTorch" if model else "the fp32 PyTorch model"


def deploy_analysis(m: dict[str, Any]) -> str:
    """A 100-150-word explanation generated from the measured variants: which technique worked best and why, and
    the deployment constraints weighed. When a fine-tune or student was under-trained (its time budget ended while
    validation still improved) it says so, and which conclusions the budget was too short to draw."""
    rows = {r["variant"]: r for r in m["variants"]}
    t = m["targets"]
    chosen = rows[m["chosen"]]
    ref_name = reference_of(m["chosen"], list(rows))
    base = rows[ref_name]
    s = []
    s.append(
        f"The shipped variant, {m['chosen']}, was chosen on validation: it is {fmt_ratio(chosen['size_ratio'])} "
        f"smaller and {fmt_ratio(chosen['speedup_b1'])} faster at batch 1 than {_same_model(ref_name)} "
        f"({fmt_quantity(chosen['latency_b1_median_ms'])} vs {fmt_quantity(base['latency_b1_median_ms'])} ms), "
        f"with a test accuracy drop of {_pct(chosen['test_accuracy_drop'])} and an AUC drop of "
        f"{fmt_metric(chosen['test_auc_drop'])}."
    )
    missed = _missed(chosen, t)
    meeting = [r for r in m["variants"] if r["meets_target"]]
    if not missed:
        s.append("It meets every target.")
    else:
        s.append(f"It misses the target on {', '.join(missed)}.")
        sound = [r for r in meeting if not under_trained(r)]
        if sound:
            s.append(f"On test, {len(meeting)} variant(s) met every target, e.g. {sound[0]['variant']}.")
        elif meeting:  # no conclusion rests on a variant whose fine-tune or student was under-trained
            s.append(
                f"On test, only under-trained variants met every target (e.g. {meeting[0]['variant']}), so the budget "
                "was too short to decide whether a compression meets them."
            )
    s += _cut_sentences(m, chosen)
    optional = []  # dropped (the last first) if the explanation runs over the brief's length
    onnx, int8 = rows.get("fp32 (ONNX Runtime)"), next((r for r in m["variants"] if "int8" in r["variant"]), None)
    if onnx and int8:
        optional.append(len(s))
        s.append(
            (
                f"Exporting to ONNX Runtime alone gave {fmt_ratio(onnx['speedup_b1'])}, by removing Python overhead; "
                if onnx["speedup_b1"] > 1
                else f"Exporting to ONNX Runtime alone ran at {fmt_ratio(onnx['speedup_b1'])} the speed of PyTorch; "
            )
            + f"{int8['variant']} gave {fmt_ratio(int8['speedup_b1'])} at {fmt_ratio(int8['size_ratio'])} smaller, "
            "since int8 weights take a quarter of the bytes."
        )
    mag = next((r for r in m["variants"] if r["variant"].startswith("magnitude")), None)
    if mag:
        optional.append(len(s))
        s.append(
            f"Magnitude pruning shrank the file {fmt_ratio(mag['size_ratio'])} but ran at "
            f"{fmt_ratio(mag['speedup_b1'])}, "
            "because dense kernels still multiply the zeros."
        )
    s.append(
        "Weighed: memory (file size), latency for one patient at batch 1, battery (fewer multiply-adds per "
        "prediction; energy itself was not measured), and accuracy within the stated drops."
    )
    return fit_sentences(s, optional, MAX_WORDS)


# Column titles of the deploy tables; others get readable_header(name).
HEADERS = {
    "size_mb": "size (MB)",
    "size_ratio": "smaller",
    "latency_b1_median_ms": "batch-1 ms (median)",
    "latency_b1_p95_ms": "batch-1 ms (p95)",
    "speedup_b1": "faster (batch 1)",
    "test_accuracy": "test accuracy",
    "test_accuracy_drop": "accuracy drop (points)",
    "test_auc_drop": "AUC drop",
    "parity_with": "made from",
    "max_abs_logit_diff": "max abs logit difference",
    "label_agreement": "label agreement",
}
# Accuracy drops are read in points, as the targets state them.
KINDS = {"test_accuracy_drop": "points", "val_accuracy_drop": "points", "target": "text"}


def _table(df: pd.DataFrame, cols: list[str]) -> str:
    cols = [c for c in cols if c in df.columns]
    headers = {c: HEADERS.get(c) or readable_header(c) for c in cols}
    tb = next((c for c in cols if c.startswith("throughput_b")), None)
    if tb:
        headers[tb] = f"batch-{tb.removeprefix('throughput_b').split('_')[0]} throughput (/s)"
    return readable_table(df[cols], kinds={k: v for k, v in KINDS.items() if k in cols}, headers=headers)


def _with_verdict(table: pd.DataFrame, m: dict[str, Any]) -> pd.DataFrame:
    """The benchmark with the shipped variant marked and the target verdict on its row only: the targets concern
    the variant that ships; the baseline and the other variants get no verdict."""
    df = table.copy()
    chosen = m["chosen"]
    row = df.set_index("variant").loc[chosen].to_dict()
    missed = [d.split(" (")[0] for d in _missed(row, m["targets"])]
    verdict = "**met**" if not missed else "missed: " + ", ".join(missed)
    df["target"] = [verdict if v == chosen else "" for v in df["variant"]]
    df = _mark(df)
    names = zip(table["variant"], df["variant"], strict=True)
    df["variant"] = [f"{name} **shipped**" if v == chosen else name for v, name in names]
    return df


def _mark(table: pd.DataFrame) -> pd.DataFrame:
    """The table with each variant that rests on an under-trained fine-tune or student marked in its name."""
    if "training" not in table.columns:
        return table
    df = table.copy()
    df["variant"] = [marked(v, {"training": t}) for v, t in zip(df["variant"], df["training"], strict=True)]
    return df


def _intervals(intervals: pd.DataFrame) -> str:
    """Value and 95% interval per (metric, model); the drop rows signed."""
    rows = []
    for r in intervals.to_dict("records"):
        kind = "delta" if str(r["what"]).startswith("drop") else "metric"
        value = fmt_delta(r["value"]) if kind == "delta" else fmt_metric(r["value"])
        rows.append(
            {
                "metric": readable_header(r["metric"]),
                "what": r["what"],
                "value": value,
                "95% CI": fmt_ci(r["ci95_low"], r["ci95_high"], kind=kind),
            }
        )
    return readable_table(pd.DataFrame(rows))


def _calibration_section(c: dict[str, Any]) -> list[str]:
    """Temperature scaling and abstention of the shipped variant, fitted on validation and measured on test."""
    t = c["test"]

    def pct(value: float | None) -> str:
        return "none" if value is None else f"{fmt_metric(100 * value, 1)}%"

    def pct_ci(ci: list[float | None]) -> str:
        return "undefined" if ci[0] is None else f"{pct(ci[0])} to {pct(ci[1])}"

    threshold = "above 1 (every case referred)" if c["min_confidence"] > 1 else fmt_metric(c["min_confidence"], 3)
    return [
        "## Calibration and abstention",
        "",
        f"Temperature scaling fitted on validation: T = {fmt_metric(c['temperature'], 3)}; test ECE "
        f"({c['ece_unit']}, 15 bins) {fmt_metric(c['ece_test_before'], 3)} before and "
        f"{fmt_metric(c['ece_test_after'], 3)} after. The bundle stores T and divides the logits by it.",
        "",
        "![reliability before](figures/reliability_before.png) ![reliability after](figures/reliability_after.png)",
        "",
        f"Case-level abstention, for comparison (the bundle uses the per-finding rule below): the lowest "
        f"confidence at which the accepted validation cases err at most {pct(c['target_error'])} is {threshold} "
        f"(validation coverage {pct(c['val_coverage'])}, accepted error {pct(c['val_accepted_error'])}). On test "
        f"({t['n']:,} cases) it would answer {t['accepted']:,}: coverage {pct(t['coverage'])} (95% CI "
        f"{pct_ci(t['coverage_ci95'])}), error of the answered cases {pct(t['accepted_error'])} (95% CI "
        f"{pct_ci(t['accepted_error_ci95'])}), against {pct(t['error_without_abstention'])} answering every case.",
        "",
        "![risk-coverage](figures/risk_coverage.png)",
        "",
        "Every point of the curve: `tables/risk_coverage.csv`.",
        "",
    ]


def build_deploy_report(run_dir: str | Path) -> str:
    """The Markdown report of a deploy run folder."""
    run_dir = Path(run_dir)
    m = json.loads((run_dir / "metrics.json").read_text())
    table = pd.read_csv(run_dir / "tables" / "benchmark.csv")
    intervals = pd.read_csv(run_dir / "tables" / "test_intervals.csv")
    t = m["targets"]
    tb = next(c for c in table.columns if c.startswith("throughput_b"))
    marked = _with_verdict(table, m)
    lines = [
        f"# Deployment study: {m['dataset']} ({m['model']})",
        "",
        f"Source run `{m['source_run']}`; every variant measured in one process on "
        f"{m['threads']} CPU threads, with warm-up and interleaved timing rounds (medians and 95th percentiles). "
        f"Targets for the best variant against the fp32 PyTorch model: at least {_x(t['size_ratio'])} smaller, at "
        f"least {_x(t['speedup_b1'])} faster at batch 1, test accuracy drop at most {_pct(t['accuracy_drop'])}, "
        f"AUC drop at most {fmt_metric(t['auc_drop'])}. The shipped variant is chosen on the validation split (the "
        f"fastest ONNX variant whose validation accuracy and AUC drops stay within "
        f"{_pct(m['selection']['max_accuracy_drop'])} and {fmt_metric(m['selection']['max_auc_drop'])}); test "
        "numbers are reported only. The models were fine-tuned and distilled on the run's device; export, int8 and "
        "every timing ran on the CPU, the device they are deployed to. " + computed_on(m),
        "",
        "## Analysis",
        "",
        deploy_analysis(m),
        "",
        "## Benchmark",
        "",
        "Size and speed:",
        "",
        _table(
            marked,
            ["variant", "size_mb", "size_ratio", "latency_b1_median_ms", "latency_b1_p95_ms", "speedup_b1", tb],
        ),
        "Accuracy on the test split, and the target:",
        "",
        _table(marked, ["variant", "test_accuracy", "test_auc", "test_accuracy_drop", "test_auc_drop", "target"]),
        "Drops are the fp32 PyTorch model's value minus the variant's (positive = worse). The target verdict is "
        "given once, for the shipped variant (the one the targets concern, chosen on validation); the analysis "
        "names any other variant that met the targets on test. Every column (validation metrics, techniques and "
        "notes too) at full precision: `tables/benchmark.csv`.",
        "",
        "![size against latency](figures/size_latency.png)",
        "",
        "## Test metrics with 95% bootstrap intervals",
        "",
        _intervals(intervals),
        "",
        "## Parity with the model each variant was made from (whole test split)",
        "",
        _table(
            _mark(table.dropna(subset=["parity_with"])),
            ["variant", "parity_with", "max_abs_logit_diff", "label_agreement"],
        ),
        "",
        "## Techniques",
        "",
        *(
            [
                "The training column says how the fine-tune or student a variant rests on ended: complete, or "
                "under-trained (its time budget ended it while validation was still improving, so its accuracy says "
                "how far the budget got, not what the technique can do); not retrained: export or quantization only.",
                "",
            ]
            if "training" in table.columns
            else []
        ),
        _table(table, ["variant", "technique", "runtime", "training", "note"]),
    ]
    transformer = run_dir / "tables" / "transformer.csv"
    if transformer.is_file():
        tr = pd.read_csv(transformer)
        lines += [
            "## Dynamic int8 of the text study's Transformer",
            "",
            _table(tr, ["variant", "size_mb", "size_ratio", "latency_b1_median_ms", "speedup_b1"]),
            _table(tr, ["variant", "test_accuracy", "test_auc", "test_macro_f1", "test_auc_drop", "label_agreement"]),
            "Every column at full precision: `tables/transformer.csv`.",
            "",
        ]
    if m.get("calibration"):
        lines += _calibration_section(m["calibration"])
        if m["calibration"].get("per_finding"):
            lines += per_finding_section(m["calibration"], m["task"])
    if m.get("teachers"):
        lines += [
            f"Distillation teachers (averaged log-probabilities): {', '.join(m['teachers']['teachers'])}; "
            f"student: {m['teachers']['student']} {m['teachers']['student_kwargs']}.",
            "",
        ]
    lines += [
        "## The bundle",
        "",
        f"`bundle/` holds the shipped model (`model.onnx`), its preprocessing, label names and test metrics "
        f"(`bundle.json`) and `manifest.json` with the sha256 of every file; the loader refuses a tampered, "
        f"truncated or mismatching file. Run it with `medassist predict {run_dir.name}/bundle <input>`, or serve it "
        f"(API and web page) with `medassist serve {run_dir.name}/bundle`.",
        "",
    ]
    return "\n".join(lines)


def write_deploy_report(run_dir: str | Path) -> Path:
    """Write ``report.md`` and a self-contained ``report.html`` into the deploy run folder (a segmentation run's
    deployment has its own report)."""
    run_dir = Path(run_dir)
    if json.loads((run_dir / "metrics.json").read_text()).get("kind") == "detect":
        from medassist.report.deploy_detect import write_detect_deploy_report

        return write_detect_deploy_report(run_dir)
    if json.loads((run_dir / "metrics.json").read_text()).get("kind") == "segment":
        from medassist.report.deploy_segment import write_segment_deploy_report

        return write_segment_deploy_report(run_dir)
    return write_report(run_dir, build_deploy_report(run_dir), title="Deployment study")
